"""Where a file's version records live, and how this node calls one of those replicas.

A file's records live on the r XOR-closest storage peers to ``document_key(file_id)`` (the
peers that also hold its document record), r = m+1 by default (join flag
``--versions-replicas``). This node is often one of them; it then answers itself through its
own handlers rather than a channel call, so a sync and a Revise treat every replica alike. Kept
apart from the sync (storage/versions/sync.py) and the record pushes
(storage/versions/replica_push.py) because both address the same replicas the same way.
"""

from __future__ import annotations

from mesh.context import MeshContext
from proto import mesh_pb2
from storage.versions.peer import VersionHandlers
from storage.versions.records import file_id_text

CALL_TIMEOUT = 10.0


def replica_key(file_id: bytes) -> bytes:
    """Where a file's version replicas sit: the key of its document record."""
    from storage.documents import document_key
    return document_key(file_id_text(file_id))


class ReplicaPeers:
    """A file's replica peers, and Digest/Pull/Push calls to one of them."""

    def __init__(self, ctx: MeshContext, handlers: VersionHandlers) -> None:
        self.ctx = ctx
        self.handlers = handlers

    @property
    def me(self) -> bytes:
        """This node's ID: a replica answered by its own handlers."""
        return self.ctx.identity.node_id

    async def closest(self, fid: bytes, n: int) -> list[mesh_pb2.PeerRecord]:
        """The ``n`` closest peers to ``fid``'s replica key that keep records (or this node)."""
        records = await self.ctx.membership.closest_peers(replica_key(fid), n)
        me = self.me
        return [r for r in records
                if r.node_id == me or "storage" in r.roles or not r.roles]

    async def call(self, peer: mesh_pb2.PeerRecord, method: str, body: bytes) -> bytes:
        """``method`` at ``peer``: this node's handlers for itself, else a channel call."""
        if peer.node_id == self.me:
            fn = {"versions.Digest": self.handlers.digest, "versions.Pull": self.handlers.pull,
                  "versions.Push": self.handlers.push}[method]
            return await fn(body)
        self.handlers.check_caller(peer.node_id)
        return await self.ctx.peer(peer).unary(method, body, timeout=CALL_TIMEOUT)

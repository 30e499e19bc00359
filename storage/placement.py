"""Placement: which peers hold which fragments, and how a node reaches them.

Fragment i of every stripe goes to the i-th XOR-closest live peer to the file's placement key.
The key is derived from the CID when the CID is known before the first stripe is sent (unary
Push: the whole file is in memory) and from the upload's file_id otherwise (PushStream: the CID
exists only after the last byte, and spooling a 2 GiB stream to disk to hash it first would
double its I/O). Either way the key and the holder of every fragment are recorded in the signed
manifest, which readers (and repair) use: nobody needs to re-derive placement to find data.

With fewer live peers than n = k+m, the fragments wrap around onto the peers there are (so the
data stays readable from what is up), and the file is recorded as under-replicated. A holder
that refuses or is down at store time is replaced by the next-closest spare peer. A peer that
left a store or a read unanswered (storage/tail.py: a stuck disk on a node that still answers
pings, so the mesh keeps it live) is ranked last for SUSPECT_S, so the next Pushes do not wait on
it too; reads still ask it but do not wait for it once the others have answered.
A peer whose signed record shows its usable space (free minus its reserve) under
storage/capacity.py's FULL_MARGIN is ranked last too: it would refuse the store.
"""

from __future__ import annotations

import hashlib
import time
from typing import Protocol

from mesh.context import MeshContext
from mesh.errors import UnavailableError
from storage.capacity import looks_full
from storage.peer import StorageClient, StorageHandlers

SUSPECT_S = 60.0


def placement_key(label: str, value: str) -> bytes:
    """20-byte key for ``("cid", CID)`` or ``("upload", file_id)``."""
    return hashlib.blake2b(f"{label}\x00{value}".encode(), digest_size=20,
                           person=b"tw-mesh-place").digest()


def assign(peers: list[bytes], n: int) -> list[bytes]:
    """Holder of fragment i for i < n: peers[i], wrapping around when there are fewer peers."""
    if not peers:
        raise UnavailableError("no live storage peer to place fragments on")
    return [peers[i % len(peers)] for i in range(n)]


class Network(Protocol):
    """What the file logic needs from the mesh (a fake in unit tests, MeshNetwork in nodes)."""

    self_id: bytes

    async def closest(self, key: bytes, n: int) -> list[bytes]:
        """Node ids of the n XOR-closest live storage peers to key (this node included)."""
        ...

    async def client(self, node_id: bytes) -> StorageClient:
        """A typed client for a peer; UnavailableError if it is unknown or down."""
        ...

    def address(self, node_id: bytes) -> str:
        """The peer's address as far as this node knows ('' if unknown)."""
        ...

    def suspect(self, node_id: bytes) -> None:
        """The peer left a store or read unanswered: rank it last for a while."""
        ...

    def suspects(self) -> list[bytes]:
        """The peers suspected now (reads do not wait for them: storage/tail.py)."""
        ...

    def acquit(self, node_id: bytes) -> None:
        """The peer answered a read in time: no longer suspected."""
        ...


class MeshNetwork:
    """Network over a node's Membership and sealed channels; calls to itself stay local."""

    def __init__(self, ctx: MeshContext, handlers: StorageHandlers) -> None:
        self.ctx = ctx
        self.self_id = ctx.identity.node_id
        self._local = StorageClient.local(self.self_id, handlers)
        self._addresses: dict[bytes, str] = {}
        self._suspects: dict[bytes, float] = {}      # node id -> until (monotonic)
        self._full: set[bytes] = set()     # peers whose records showed no usable space

    def suspect(self, node_id: bytes) -> None:
        if node_id != self.self_id:
            self._suspects[node_id] = time.monotonic() + SUSPECT_S

    def suspects(self) -> list[bytes]:
        now = time.monotonic()
        for node_id in [p for p, until in self._suspects.items() if until <= now]:
            del self._suspects[node_id]
        return list(self._suspects)

    def acquit(self, node_id: bytes) -> None:
        self._suspects.pop(node_id, None)

    async def closest(self, key: bytes, n: int) -> list[bytes]:
        suspects = self.suspects()
        records = await self.ctx.membership.closest_peers(
            key, n + len(suspects) + len(self._full))
        out = []
        full = set()
        for r in records:
            if r.node_id == self.self_id or "storage" in r.roles or not r.roles:
                self._addresses[r.node_id] = r.address
                out.append(r.node_id)
                if looks_full(r.capacity_bytes, r.free_bytes, r.reserved_bytes):
                    full.add(r.node_id)
        self._full = full        # how many more to ask for next time, to rank them last
        if suspects or full:     # stable: XOR order otherwise; a full peer would refuse anyway
            out.sort(key=lambda p: (p in self._suspects, p in full))
        return out[:n]

    async def client(self, node_id: bytes) -> StorageClient:
        if node_id == self.self_id:
            return self._local
        record = await self.ctx.membership.fetch_peer(node_id)
        if record is None or not record.address:
            raise UnavailableError(f"peer {node_id.hex()[:16]} is not in the mesh")
        self._addresses[node_id] = record.address
        # not cached: the pool closes a dead peer's channel, ctx.peer() hands out the live one
        return StorageClient.remote(self.ctx.peer(record))

    def address(self, node_id: bytes) -> str:
        if node_id == self.self_id:
            return self.ctx.address
        return self._addresses.get(node_id, "")

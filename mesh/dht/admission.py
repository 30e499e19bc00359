"""Admission: a contact becomes a live peer only after it proved its node ID.

It must answer IDENTIFY with its signed peer record and an Ed25519 signature over our fresh
nonce, the key must hash to the kademlia node ID it uses (Maymounkov & Mazières 2002, section 2:
IDs are 160-bit; here they are derived from keys), its record must name this node's mesh, and
the optional ``verify_peer`` callback must agree. One attempt per node runs at a time
(concurrent callers share it); a node that answered but proved nothing is not asked again for
REFUSE_RETRY_S. The address it proved its ID at, not the one its record names, is kept.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

from kademlia.node import Node

from mesh.dht.peers import DEFAULT_MESH, PeerView, check_identify, short
from mesh.dht.server import MeshServer
from mesh.records import decode_peer
from proto import mesh_pb2

# Membership's logger, as before this module was split off: simulations/swarm_worker.py counts
# "identity not proven" with a filter on it (a logger's filters see only its own records).
log = logging.getLogger("mesh.dht.membership")

REFUSE_RETRY_S = 30.0


class Admission:
    """Mixin for ``Membership``: the IDENTIFY check every contact passes before it is live."""

    server: MeshServer
    mesh: str
    foreign: dict[tuple[str, int], str]
    node_id: bytes
    rpc_timeout: float
    _verify_peer: Callable[[mesh_pb2.PeerRecord], Awaitable[bool]] | None
    _nodes: dict[bytes, Node]
    _peers: dict[bytes, PeerView]
    _admitting: dict[bytes, asyncio.Task[bool]]
    _refused: dict[tuple[bytes, str, int], float]

    def _up(self, node: Node, peer: mesh_pb2.PeerRecord) -> None:
        raise NotImplementedError

    # --- admission -------------------------------------------------------------------------

    def _admitted(self, node: Node) -> bool:
        known = self._nodes.get(node.id)
        return known is not None and known.same_home_as(node)

    def _gate(self, node: Node) -> bool:
        known = self._nodes.get(node.id)
        if known is not None and known.same_home_as(node):
            self._peers[node.id].last_seen = time.time()
            return True
        self._admit_soon(node)
        return False

    def _admit_soon(self, node: Node) -> asyncio.Task[bool] | None:
        task = self._admitting.get(node.id)
        if task is not None:
            return task
        refused_at = self._refused.get((node.id, node.ip, node.port))
        if refused_at is not None and time.monotonic() - refused_at < REFUSE_RETRY_S:
            return None
        task = self.server.protocol.spawn(self._admit(node))
        if task is not None:
            self._admitting[node.id] = task
            task.add_done_callback(lambda _t: self._admitting.pop(node.id, None))
        return task

    async def admit(self, node: Node) -> bool:
        """Verify ``node`` (once; concurrent callers share the attempt). True when live."""
        known = self._nodes.get(node.id)
        if known is not None and known.same_home_as(node):
            return True
        task = self._admit_soon(node)
        return await asyncio.shield(task) if task is not None else False

    async def _admit(self, node: Node) -> bool:
        nonce = os.urandom(16)
        ok, answer = await self.server.protocol.call_identify(node, nonce)
        signed = check_identify(node.id, nonce, self.node_id, answer) if ok else None
        peer = decode_peer(signed) if signed is not None else None
        if peer is not None and (peer.mesh or DEFAULT_MESH) != self.mesh:
            # Another mesh's node (a recycled port, a mistyped --bootstrap): proven, but never
            # admitted, so the two meshes cannot merge.
            if len(self.foreign) < 1024:
                self.foreign[(node.ip, node.port)] = peer.mesh or DEFAULT_MESH
            log.warning("refused %s at %s:%s: it belongs to mesh %r, this node to %r",
                        short(node.id), node.ip, node.port, peer.mesh or DEFAULT_MESH, self.mesh)
            self._refuse(node)
            return False
        if peer is not None and self._verify_peer is not None:
            try:
                async with asyncio.timeout(5 * self.rpc_timeout):
                    accepted = await self._verify_peer(peer)
            except Exception as exc:  # a failed handshake of any kind refuses the peer
                log.info("verify_peer failed for %s: %r", short(node.id), exc)
                accepted = False
            peer = peer if accepted else None
        if signed is None or peer is None:
            if ok:  # it answered but proved nothing: do not ask again for a while
                self._refuse(node)
                log.warning("refused %s at %s:%s: identity not proven",
                            short(node.id), node.ip, node.port)
            return False
        where = f"{node.ip}:{node.port}"
        if peer.address != where:
            # The record's address is the node's own word; where it answered our nonce is
            # proven. Peers connect to what the view says: never to an address it only named.
            log.info("peer %s names address %r but proved its ID at %s: using %s",
                     short(node.id), peer.address[:64], where, where)
            peer.address = where
        self._up(node, peer)
        self.server.protocol.accept_contact(node)
        return True

    def _refuse(self, node: Node) -> None:
        now = time.monotonic()
        if len(self._refused) > 1024:
            self._refused = {k: t for k, t in self._refused.items() if now - t < REFUSE_RETRY_S}
        self._refused[(node.id, node.ip, node.port)] = now

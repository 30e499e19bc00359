"""``Membership``: who is in the mesh, built on ``MeshServer`` (kademlia 2.2.3, fixed).

A peer counts as live only after it proved its node ID (admission.py): it answered IDENTIFY
with its signed peer record and an Ed25519 signature over our fresh nonce, the key hashes to the
kademlia node ID it uses (Maymounkov & Mazières 2002, section 2: IDs are 160-bit; here they are
derived from keys), and the optional ``verify_peer`` callback agreed. Contacts are added to the
k-buckets (section 2.2) only after that, so an impostor never enters the routing table or the
live set. A periodic sweep pings quiet peers; three unanswered pings make a peer dead ("leave").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, NamedTuple

from kademlia.node import Node

from mesh.dht.admission import Admission
from mesh.dht.liveness import Liveness
from mesh.dht.peers import DEFAULT_MESH, PeerView, identify_message, short
from mesh.dht.rejoin import Rejoin
from mesh.dht.server import MeshServer
from mesh.dht.storage import encode_set
from mesh.identity import Identity, node_id_for
from mesh.records import decode_peer, record_key, sign_record, verify_record
from proto import mesh_pb2

log = logging.getLogger(__name__)


class MembershipEvent(NamedTuple):
    kind: Literal["join", "leave"]
    record: mesh_pb2.PeerRecord


class Membership(Admission, Liveness, Rejoin):
    """Membership of one node: live peer set, events, signed records, closest peers."""

    def __init__(self, identity: Identity, *, host: str, port: int, ksize: int = 20,
                 alpha: int = 3, rpc_timeout: float = 1.0, sweep_interval: float = 2.0,
                 peer_record_factory: Callable[[], mesh_pb2.PeerRecord],
                 verify_peer: Callable[[mesh_pb2.PeerRecord], Awaitable[bool]] | None = None,
                 record_ttl: float = 900.0, sweep_batch: int | None = None,
                 rejoin_interval: float = 10.0, mesh: str = DEFAULT_MESH) -> None:
        self.identity = identity
        self.mesh = mesh or DEFAULT_MESH
        self.foreign: dict[tuple[str, int], str] = {}  # address -> mesh of a peer refused for it
        self.node_id = identity.node_id
        self.host = host
        self.ksize = ksize
        self.rpc_timeout = rpc_timeout
        self.sweep_interval = sweep_interval
        self.sweep_batch = sweep_batch or ksize
        self.record_ttl = record_ttl
        self._requested_port = port
        self._factory = peer_record_factory
        self._verify_peer = verify_peer
        self.server = MeshServer(ksize, alpha, self.node_id, rpc_timeout=rpc_timeout)
        self._peers: dict[bytes, PeerView] = {}
        self._nodes: dict[bytes, Node] = {}
        self._admitting: dict[bytes, asyncio.Task[bool]] = {}
        self._probing: set[bytes] = set()
        self._refused: dict[tuple[bytes, str, int], float] = {}
        self._queues: list[asyncio.Queue[MembershipEvent]] = []
        self._own: mesh_pb2.SignedRecord | None = None
        self._own_peer = mesh_pb2.PeerRecord()
        self._large = False
        self._starved_until = 0.0
        self.rejoin_interval = rejoin_interval
        self._departed: dict[bytes, tuple[Node, float]] = {}
        self._seeds: list[tuple[str, int]] = []

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.server.port if self.server.transport is not None else self._requested_port

    async def start(self) -> None:
        await self.server.listen(self._requested_port, self.host)
        proto = self.server.protocol
        proto.gate = self._gate
        proto.on_failure = self._on_failure
        proto.identify_answer = self._identify_answer
        proto.admitted, proto.admit = self._admitted, self.admit   # STOREs, large answers
        self.server.storage.is_peer = self._peers.__contains__     # quotas (quota.py)
        self._refresh_own()
        proto.spawn(self._sweep_loop())
        proto.spawn(self._rejoin_loop())
        proto.spawn(self._republish_loop())
        log.info("dht listening on %s:%d as %s", self.host, self.port, short(self.node_id))

    async def bootstrap(self, addrs: list[tuple[str, int]]) -> int:
        """Join through ``addrs`` (host names allowed); returns the number of live peers."""
        self._seeds = list(addrs)             # probed again if this node ever ends up alone
        found = await self.server.bootstrap(addrs)  # a lookup of our own ID (section 2.3)
        await asyncio.gather(*(self.admit(n) for n in found))
        if self._own is not None and found:  # our record lives at our ID: store it on the
            await self.server.store_at(found, self.node_id, encode_set([self._own]))  # k found
        log.info("joined: %d live peers", len(self._peers))
        return len(self._peers)

    async def stop(self) -> None:
        await self.server.aclose()
        self._admitting.clear()

    # --- queries ---------------------------------------------------------------------------

    def live_peers(self) -> list[PeerView]:
        return list(self._peers.values())

    def subscribe(self) -> asyncio.Queue[MembershipEvent]:
        queue: asyncio.Queue[MembershipEvent] = asyncio.Queue()
        self._queues.append(queue)
        return queue

    async def closest_peers(self, key: bytes, n: int) -> list[mesh_pb2.PeerRecord]:
        """The n XOR-closest live peers to ``key``, this node included."""
        target = Node(key)
        known = sorted(self._nodes.values(), key=target.distance_to)
        self._large = self._large or len(self._peers) + 1 > self.ksize
        if self._large:  # once the mesh outgrew k, the live set may be partial: ask the network
            # Seed with every live peer: after a crash the top k we know may be partly dead,
            # and a live peer ranked below them must still be reachable by the lookup.
            found = await self.server.find_closest_nodes(key, max(n, self.ksize), seeds=known)
            await asyncio.gather(*(self.admit(node) for node in found))
            known = [self._nodes[x.id] for x in found if x.id in self._peers]
        ranked = sorted([*known, self.server.node], key=target.distance_to)[:n]
        return [self._own_peer if x.id == self.node_id else self._peers[x.id].record
                for x in ranked if x.id == self.node_id or x.id in self._peers]

    async def publish(self, record: mesh_pb2.SignedRecord) -> int:
        """Store a signed record at its key on the closest peers; returns the number of acks."""
        verify_record(record)
        key = record_key(record.kind, record.owner_key, record.name)
        return await self.server.set_digest(key, encode_set([record]))

    async def fetch(self, key: bytes) -> list[mesh_pb2.SignedRecord]:
        return await self.server.get_digest(key)

    async def fetch_peer(self, node_id: bytes) -> mesh_pb2.PeerRecord | None:
        if node_id == self.node_id:
            return self._own_peer
        if node_id in self._peers:
            return self._peers[node_id].record
        records = [r for r in await self.fetch(node_id)
                   if r.kind == "peer" and node_id_for(r.owner_key) == node_id]
        return decode_peer(max(records, key=lambda r: r.seq)) if records else None

    def mark_dead(self, node_id: bytes) -> None:
        self._down(node_id, "reported dead")

    # --- own record ------------------------------------------------------------------------

    def _refresh_own(self) -> None:
        peer = self._factory()
        peer.node_id = self.node_id
        peer.identity_key = self.identity.public_key
        peer.mesh = self.mesh
        if not peer.address or peer.address.endswith(":0"):
            peer.address = f"{self.host}:{self.port}"
        self._own = sign_record(self.identity, "peer", peer.SerializeToString(),
                                ttl_s=self.record_ttl)
        self._own_peer = peer
        self.server.storage.put(self.node_id, self._own)

    async def _republish_loop(self) -> None:
        while True:
            await asyncio.sleep(self.record_ttl / 3)
            self._refresh_own()
            if self._own is not None:
                await self.publish(self._own)

    def _identify_answer(self, nonce: bytes, requester: bytes) -> list[bytes] | None:
        if self._own is None:
            return None
        signature = self.identity.sign(identify_message(nonce, self.node_id, requester))
        return [self._own.SerializeToString(), signature]

    def _up(self, node: Node, peer: mesh_pb2.PeerRecord) -> None:
        old = self._nodes.get(node.id)
        self._nodes[node.id] = node
        self._peers[node.id] = PeerView(node.id, peer.address, time.time(),
                                        tuple(peer.roles), peer)
        if old is None:
            log.info("peer up %s at %s", short(node.id), peer.address)
            self._emit(MembershipEvent("join", peer))
        elif not old.same_home_as(node):
            log.info("peer moved %s to %s", short(node.id), peer.address)

    def _down(self, node_id: bytes, reason: str) -> None:
        node = self._nodes.pop(node_id, None)
        view = self._peers.pop(node_id, None)
        if node is not None:
            self.server.protocol.router.bury(node)
            self._remember_departed(node)
        if view is not None:
            log.info("peer down %s at %s (%s)", short(node_id), view.address, reason)
            self._emit(MembershipEvent("leave", view.record))

    def _emit(self, event: MembershipEvent) -> None:
        for queue in self._queues:
            queue.put_nowait(event)

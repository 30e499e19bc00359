"""``MeshServer``: kademlia 2.2.3's ``Server`` wrapped for signed records.

Fixes (section numbers from Maymounkov & Mazières 2002):

* Defect 2: ``set`` returned True whenever a node was found, even when every STORE failed or
  was refused. ``set_digest`` here returns the number of acknowledgements (section 2.3 STORE).
* Defect 3: ``set_digest`` raised ``ValueError`` (``max()`` of nothing) when every contacted
  node was dead. Here it returns 0.
* Defect 7: ``get(k)`` hashed ``k`` again, so values written with ``set_digest(k)`` could not be
  read. ``get_digest`` reads a DHT key as it is.
* Bootstrap accepts host names; lookups use ``Lookup`` (crawl.py); the hourly refresh
  (section 2.3) is a tracked task and does not republish other owners' values (records expire).
"""

from __future__ import annotations

import asyncio
import logging
import socket

from kademlia.network import Server
from kademlia.node import Node
from kademlia.utils import digest

from mesh.dht.crawl import Lookup
from mesh.dht.protocol import DEFAULT_RPC_TIMEOUT_S, MeshProtocol, valid_id
from mesh.dht.storage import RecordStorage, decode_set, merge_verified
from mesh.errors import RecordError
from proto import mesh_pb2

log = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 3600.0


async def resolve(addrs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Resolve host names to IPv4 addresses (kademlia 2.2.3 accepted IPs only)."""
    loop = asyncio.get_running_loop()
    out: list[tuple[str, int]] = []
    for host, port in addrs:
        try:
            infos = await loop.getaddrinfo(host, port, family=socket.AF_INET,
                                           type=socket.SOCK_DGRAM)
        except OSError as exc:
            log.warning("cannot resolve bootstrap host %s: %s", host, exc)
            continue
        if infos:
            ip, real_port = infos[0][4][:2]
            out.append((str(ip), int(real_port)))
    return out


class MeshServer(Server):  # type: ignore[misc]
    """One kademlia node that stores only signed records."""

    protocol_class = MeshProtocol
    protocol: MeshProtocol
    storage: RecordStorage

    def __init__(self, ksize: int = 20, alpha: int = 3, node_id: bytes | None = None,
                 storage: RecordStorage | None = None, *,
                 rpc_timeout: float = DEFAULT_RPC_TIMEOUT_S) -> None:
        super().__init__(ksize, alpha, node_id)
        self.storage = storage if storage is not None else RecordStorage()  # empty is falsy
        self.rpc_timeout = rpc_timeout

    def _create_protocol(self) -> MeshProtocol:
        return MeshProtocol(self.node, self.storage, self.ksize, rpc_timeout=self.rpc_timeout)

    async def listen(self, port: int, interface: str = "0.0.0.0") -> None:
        loop = asyncio.get_running_loop()
        self.transport, self.protocol = await loop.create_datagram_endpoint(
            self._create_protocol, local_addr=(interface, port))
        self.protocol.spawn(self._refresh_loop())

    @property
    def port(self) -> int:
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def stop(self) -> None:
        """Close the socket at once (what a crash looks like to peers)."""
        if self.transport is not None:
            self.transport.close()
        if self.protocol is not None:
            self.protocol.closed = True

    async def aclose(self) -> None:
        """Close the socket and cancel every task this node started."""
        self.stop()
        if self.protocol is not None:
            await self.protocol.aclose()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL_S)
            await self.refresh_buckets()

    async def refresh_buckets(self) -> None:
        """Look up a random ID in every bucket not used for an hour (section 2.3)."""
        for node_id in self.protocol.get_refresh_ids():
            await self.find_closest_nodes(node_id)

    async def bootstrap(self, addrs: list[tuple[str, int]]) -> list[Node]:
        """Ping the given addresses (host names allowed), then look up our own ID."""
        resolved = await resolve(addrs)
        found = await asyncio.gather(*(self.bootstrap_node(a) for a in resolved))
        seeds = [n for n in found if n is not None]
        if not seeds:
            return []
        lookup = Lookup(self.protocol, self.node.id, seeds, ksize=self.ksize, alpha=self.alpha)
        return await lookup.run()

    async def bootstrap_node(self, addr: tuple[str, int]) -> Node | None:
        ok, answer = await self.protocol._call("ping", Node(self.node.id, addr[0], addr[1]))
        if not ok or not valid_id(answer) or answer == self.node.id:
            return None
        return Node(answer, addr[0], addr[1])

    async def find_closest_nodes(self, key: bytes, k: int | None = None,
                                 seeds: list[Node] | None = None) -> list[Node]:
        """The k closest responding nodes to ``key`` (excluding this one)."""
        k = k or self.ksize
        if seeds is None:
            seeds = self.protocol.router.find_neighbors(Node(key), k=k)
        lookup = Lookup(self.protocol, key, seeds, ksize=k, alpha=self.alpha)
        return await lookup.run()

    async def set_digest(self, dkey: bytes, value: bytes) -> int:
        """Store an encoded RecordSet on the k closest nodes; returns the number of acks
        (a local store counts as one). Defects 2 and 3."""
        return await self.store_at(await self.find_closest_nodes(dkey), dkey, value)

    async def store_at(self, nodes: list[Node], dkey: bytes, value: bytes) -> int:
        """STORE on ``nodes`` (the k closest, already looked up), and here if this node is
        among them; returns the number of acknowledgements."""
        target = Node(dkey)
        acks = 0
        if len(nodes) < self.ksize or self.node.distance_to(target) < max(
                n.distance_to(target) for n in nodes):
            try:
                acks += int(self.storage.put_set(dkey, value))
            except RecordError as exc:
                log.debug("not storing %s locally: %s", dkey.hex()[:8], exc)
        results = await asyncio.gather(*(self.protocol.call_store(n, dkey, value)
                                         for n in nodes))
        acks += sum(1 for ok, answer in results if ok and answer is True)
        return acks

    async def set(self, key: bytes | str, value: bytes) -> int:
        return await self.set_digest(digest(key), value)

    async def get_digest(self, dkey: bytes) -> list[mesh_pb2.SignedRecord]:
        """Verified records at DHT key ``dkey``, newest per owner, merged from every
        responder and the local store (defect 7)."""
        lookup = Lookup(self.protocol, dkey, self.protocol.router.find_neighbors(Node(dkey)),
                        ksize=self.ksize, alpha=self.alpha, find_value=True)
        await lookup.run()
        records = self.storage.records(dkey)
        for value in lookup.values:
            try:
                records.extend(decode_set(value))
            except RecordError:
                continue
        return merge_verified(dkey, records)

    async def get(self, key: bytes | str) -> list[mesh_pb2.SignedRecord]:
        return await self.get_digest(digest(key))

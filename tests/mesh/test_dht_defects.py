"""Regression tests for the seven kademlia 2.2.3 defects (design notes, "Kademlia 2.2.3").

Each test runs twice: against stock kademlia 2.2.3, where it must fail (strict xfail, so the
test proves the defect exists), and against mesh.dht, where it must pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from kademlia.crawling import NodeSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable
from kademlia.storage import ForgetfulStorage

from mesh.dht.protocol import MeshProtocol
from mesh.dht.routing import MeshRoutingTable
from mesh.dht.server import MeshServer
from mesh.dht.storage import RecordStorage, decode_set, encode_set
from mesh.identity import Identity
from mesh.records import record_key, sign_record
from proto import mesh_pb2

TIMEOUT = 0.3
IMPLS = [pytest.param("stock", marks=pytest.mark.xfail(strict=True, reason="kademlia 2.2.3")),
         "mesh"]

Make = Callable[..., Awaitable[Any]]


def xor(a: bytes, b: int) -> bytes:
    return (int.from_bytes(a, "big") ^ b).to_bytes(20, "big")


def provider_record(ident: Identity, seq: int | None = None
                    ) -> tuple[bytes, mesh_pb2.SignedRecord]:
    rec = sign_record(ident, "provider", b"payload", name=b"svc", seq=seq)
    return record_key("provider", ident.public_key, b"svc"), rec


def port_of(server: Any) -> int:
    port: int = server.transport.get_extra_info("sockname")[1]
    return port


def node_of(server: Any) -> Node:
    return Node(server.node.id, "127.0.0.1", port_of(server))


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    servers: list[Any] = []

    async def _make(impl: str, node_id: bytes | None = None, alpha: int = 3) -> Any:
        if impl == "stock":
            server: Any = Server(20, alpha, node_id)
        else:
            server = MeshServer(20, alpha, node_id, rpc_timeout=TIMEOUT)
        await server.listen(0, "127.0.0.1")
        server.protocol._wait_timeout = TIMEOUT
        servers.append(server)
        return server

    yield _make
    for server in servers:
        if isinstance(server, MeshServer):
            await server.aclose()
        else:
            server.stop()
    await asyncio.sleep(0)


class CountingPings:
    def __init__(self) -> None:
        self.pings = 0

    async def __call__(self, node: Node) -> tuple[bool, bytes]:
        self.pings += 1
        return (True, node.id)


@pytest.mark.parametrize("impl", IMPLS)
async def test_defect1_find_neighbors_returns_true_k_closest(impl: str) -> None:
    rng = random.Random(1)
    me = Node(rng.randbytes(20))
    proto = MeshProtocol(me, RecordStorage(), 20)
    proto.call_ping = CountingPings()
    table = (RoutingTable if impl == "stock" else MeshRoutingTable)(proto, 20, me)
    for _ in range(600):
        table.add_contact(Node(rng.randbytes(20), "127.0.0.1", 1))
    contacts = [n for bucket in table.buckets for n in bucket.nodes.values()]
    wrong = 0
    for _ in range(200):
        key = Node(rng.randbytes(20))
        got = [n.id for n in table.find_neighbors(key)]
        wrong += got != [n.id for n in sorted(contacts, key=key.distance_to)[:20]]
    await proto.aclose()
    assert wrong == 0


@pytest.mark.parametrize("impl", IMPLS)
async def test_defect2_set_counts_acks_not_nodes(impl: str, make: Make) -> None:
    ident = Identity.generate()
    key, new = provider_record(ident, seq=2)
    _, old = provider_record(ident, seq=1)
    peers = [await make("mesh"), await make("mesh")]
    writer = await make(impl)
    for server in (*peers, writer):
        server.storage[key] = encode_set([new])
    await writer.bootstrap([("127.0.0.1", port_of(p)) for p in peers])
    # Every peer refuses the stale record; 2.2.3 still reports success.
    assert await writer.set_digest(key, encode_set([old])) == 0


async def test_set_counts_each_ack(make: Make) -> None:
    key, rec = provider_record(Identity.generate())
    peers = [await make("mesh"), await make("mesh")]
    writer = await make("mesh")
    await writer.bootstrap([("127.0.0.1", port_of(p)) for p in peers])
    assert await writer.set_digest(key, encode_set([rec])) == 3  # two peers + local copy


@pytest.mark.parametrize("impl", IMPLS)
async def test_defect3_set_digest_with_all_nodes_dead(impl: str, make: Make) -> None:
    key, rec = provider_record(Identity.generate())
    peer = await make(impl)
    writer = await make(impl)
    await writer.bootstrap([("127.0.0.1", port_of(peer))])
    peer.stop()
    acks = await writer.set_digest(key, encode_set([rec]))  # 2.2.3: ValueError from max([])
    assert acks <= 1  # at most the local copy


@pytest.mark.parametrize("impl", IMPLS)
async def test_defect4_welcome_sends_keys_unhashed(impl: str, make: Make) -> None:
    key, rec = provider_record(Identity.generate())
    holder = await make(impl, node_id=xor(key, 1 << 8))      # close to the key
    holder.storage[key] = encode_set([rec])
    decoy = xor(hashlib.sha1(key).digest(), 1)                 # closest to sha1(key)
    holder.protocol.router.add_contact(Node(decoy, "127.0.0.1", 9))
    newcomer = await make(impl, node_id=xor(key, 1))           # the closest node to the key
    assert await newcomer.bootstrap_node(("127.0.0.1", port_of(holder))) is not None
    for _ in range(40):
        if newcomer.storage.get(key) is not None:
            break
        await asyncio.sleep(0.025)
    assert newcomer.storage.get(key) is not None


@pytest.mark.parametrize("impl", IMPLS)
async def test_defect5_dead_node_not_revived_by_mentions(impl: str, make: Make) -> None:
    searcher = await make(impl, alpha=1)
    b, c, dead = await make(impl), await make(impl), await make(impl)
    dead_node = node_of(dead)
    dead.stop()
    for server in (b, c):
        server.protocol.router.add_contact(dead_node)
    b.protocol.router.add_contact(node_of(c))
    target = xor(dead_node.id, 1)
    if impl == "stock":
        crawl = NodeSpiderCrawl(searcher.protocol, Node(target), [node_of(b)], 20, 1)
        found = await crawl.find()
    else:
        found = await searcher.find_closest_nodes(target, seeds=[node_of(b)])
    assert dead_node.id not in [n.id for n in found]
    assert {n.id for n in found} == {b.node.id, c.node.id}


@pytest.mark.parametrize("impl", IMPLS)
async def test_defect6_replacement_nodes_cause_no_ping_storm(impl: str) -> None:
    me = Node(bytes(20))
    proto: Any = (KademliaProtocol(me, ForgetfulStorage(), 2) if impl == "stock"
                  else MeshProtocol(me, RecordStorage(), 2))
    counter = CountingPings()
    proto.call_ping = counter
    for first in (0xF8, 0xFC):  # two nodes sharing 5 leading bits fill an unsplittable bucket
        proto.welcome_if_new(Node(bytes([first]) + bytes(19), "127.0.0.1", first))
    replacement = Node(bytes([0xF9]) + bytes(19), "127.0.0.1", 0xF9)
    for _ in range(10):  # ten messages from a node that sits on the replacement list
        proto.welcome_if_new(replacement)
        await asyncio.sleep(0)
    if isinstance(proto, MeshProtocol):
        await proto.aclose()
    assert counter.pings <= 1


@pytest.mark.parametrize("impl", IMPLS)
async def test_defect7_get_reads_digest_keyed_values(impl: str, make: Make) -> None:
    key, rec = provider_record(Identity.generate())
    a, b = await make(impl), await make(impl)
    await a.bootstrap([("127.0.0.1", port_of(b))])
    await a.set_digest(key, encode_set([rec]))
    reader = getattr(b, "get_digest", b.get)
    got = await reader(key)
    records = got if isinstance(got, list) else (decode_set(got) if got else [])
    assert rec in records

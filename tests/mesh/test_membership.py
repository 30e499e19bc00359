"""Membership on real UDP sockets (127.0.0.1, port 0), many nodes in one process."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from kademlia.node import Node

from mesh.dht import Membership, MembershipEvent
from mesh.dht.peers import identify_message
from mesh.dht.server import MeshServer
from mesh.dht.storage import encode_set
from mesh.identity import Identity
from mesh.records import record_key, sign_record
from proto import mesh_pb2

MakeNode = Callable[..., Awaitable[Membership]]


def factory(roles: tuple[str, ...] = ("storage",)) -> Callable[[], mesh_pb2.PeerRecord]:
    return lambda: mesh_pb2.PeerRecord(roles=list(roles), capacity_bytes=1 << 30)


@pytest.fixture
async def make_node() -> AsyncIterator[MakeNode]:
    nodes: list[Membership] = []

    async def _make(identity: Identity | None = None, **kw: object) -> Membership:
        node = Membership(identity or Identity.generate(), host="127.0.0.1", port=0,
                          peer_record_factory=factory(), **kw)  # type: ignore[arg-type]
        await node.start()
        nodes.append(node)
        return node

    yield _make
    for node in nodes:
        await node.stop()


async def mesh(make_node: MakeNode, n: int, **kw: object) -> list[Membership]:
    first = await make_node(**kw)
    nodes = [first]
    for _ in range(n - 1):
        node = await make_node(**kw)
        await node.bootstrap([("127.0.0.1", first.port)])
        nodes.append(node)
    return nodes


async def wait_for(cond: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def ids(nodes: list[Membership]) -> set[bytes]:
    return {n.node_id for n in nodes}


def full(nodes: list[Membership]) -> bool:
    everyone = ids(nodes)
    return all({p.node_id for p in n.live_peers()} == everyone - {n.node_id} for n in nodes)


async def test_twelve_nodes_converge_with_events(make_node: MakeNode) -> None:
    first = await make_node()
    events = first.subscribe()
    nodes = [first, *await mesh(make_node, 11)]
    await nodes[1].bootstrap([("localhost", first.port)])  # host names are resolved
    for node in nodes[2:]:
        await node.bootstrap([("127.0.0.1", nodes[1].port)])
    await wait_for(lambda: full(nodes), 5)
    joined = set()
    while not events.empty():
        event = events.get_nowait()
        assert event.kind == "join"
        joined.add(event.record.node_id)
    assert joined == ids(nodes) - {first.node_id}
    view = nodes[3].live_peers()[0]
    assert view.roles == ("storage",) and view.address.startswith("127.0.0.1:")
    assert view.record.identity_key and view.last_seen <= time.time()


async def test_closest_peers_equals_brute_force(make_node: MakeNode) -> None:
    nodes = await mesh(make_node, 10)
    await wait_for(lambda: full(nodes), 5)
    rng = random.Random(7)
    for i in range(1000):
        key = rng.randbytes(20)
        asker = nodes[i % len(nodes)]
        live = [asker.node_id] + [p.node_id for p in asker.live_peers()]
        want = sorted(live, key=lambda x: int.from_bytes(x, "big") ^ int.from_bytes(key, "big"))
        got = await asker.closest_peers(key, 5)
        assert [r.node_id for r in got] == want[:5]


async def test_closest_peers_by_iterative_lookup(make_node: MakeNode) -> None:
    nodes = await mesh(make_node, 16, ksize=4)  # live sets exceed k: lookups go to the network
    everyone = sorted(ids(nodes))
    rng = random.Random(3)
    for i in range(60):
        key = rng.randbytes(20)
        want = sorted(everyone, key=lambda x: int.from_bytes(x, "big") ^ int.from_bytes(key, "big"))
        got = await nodes[i % len(nodes)].closest_peers(key, 3)
        assert [r.node_id for r in got] == want[:3]


async def test_killed_nodes_leave_every_live_set(make_node: MakeNode) -> None:
    nodes = await mesh(make_node, 10)
    await wait_for(lambda: full(nodes), 5)
    queue = nodes[0].subscribe()
    victims, survivors = nodes[-3:], nodes[:-3]
    for victim in victims:
        await victim.stop()  # no goodbye: the socket just closes
    # ~5.6 s on an idle machine (sweep every 2 s); 10 nodes share one event loop here, so a
    # loaded CI box gets more time (the 10 s claim is checked on real processes)
    await wait_for(lambda: full(survivors), 20)
    left = [queue.get_nowait() for _ in range(3)]
    assert {e.record.node_id for e in left} == ids(victims)
    assert all(isinstance(e, MembershipEvent) and e.kind == "leave" for e in left)
    key = random.randbytes(20)
    got = {r.node_id for r in await survivors[0].closest_peers(key, 10)}
    assert got == ids(survivors)


async def test_restart_with_same_identity_rejoins(make_node: MakeNode) -> None:
    nodes = await mesh(make_node, 6)
    await wait_for(lambda: full(nodes), 5)
    old = nodes[-1]
    old_port = old.port
    await old.stop()
    await wait_for(lambda: full(nodes[:-1]), 10)
    again = await make_node(old.identity)
    assert again.node_id == old.node_id and again.port != old_port
    assert await again.bootstrap([("127.0.0.1", nodes[0].port)]) == 5
    restarted = [*nodes[:-1], again]
    await wait_for(lambda: full(restarted), 5)
    record = await nodes[0].fetch_peer(again.node_id)
    assert record is not None and record.address == f"127.0.0.1:{again.port}"


async def test_impostor_is_refused(make_node: MakeNode) -> None:
    nodes = await mesh(make_node, 4)
    victim = nodes[1]
    impostor = MeshServer(node_id=victim.node_id, rpc_timeout=0.3)  # has the ID, not the key
    await impostor.listen(0, "127.0.0.1")
    # It even answers IDENTIFY with the victim's genuine (public) record, but cannot sign.
    genuine = await nodes[0].fetch_peer(victim.node_id)
    assert genuine is not None
    own = victim._own
    assert own is not None
    fake_key = Identity.generate()
    impostor.protocol.identify_answer = lambda nonce, req: [
        own.SerializeToString(), fake_key.sign(identify_message(nonce, victim.node_id, req))]
    try:
        for node in (nodes[0], *nodes[2:]):
            assert await impostor.bootstrap_node(("127.0.0.1", node.port)) is not None
        await asyncio.sleep(0.5)
        await impostor.bootstrap([("127.0.0.1", nodes[0].port)])
        for node in (nodes[0], *nodes[2:]):
            views = {p.node_id: p for p in node.live_peers()}
            assert views[victim.node_id].address == f"127.0.0.1:{victim.port}"
            router = node.server.protocol.router
            entry = [n for n in router.all_nodes() if n.id == victim.node_id]
            assert [n.port for n in entry] == [victim.port]
        lonely = await make_node()
        assert await impostor.bootstrap_node(("127.0.0.1", lonely.port)) is not None
        await asyncio.sleep(0.5)
        assert lonely.live_peers() == []
    finally:
        await impostor.aclose()


async def test_verify_peer_callback_gates_membership(make_node: MakeNode) -> None:
    banned = Identity.generate()

    async def verify(record: mesh_pb2.PeerRecord) -> bool:
        return record.node_id != banned.node_id

    judge = await make_node(verify_peer=verify)
    ok = await make_node()
    bad = await make_node(banned)
    assert await ok.bootstrap([("127.0.0.1", judge.port)]) == 1
    await bad.bootstrap([("127.0.0.1", judge.port)])
    await asyncio.sleep(0.3)
    assert {p.node_id for p in judge.live_peers()} == {ok.node_id}


async def test_bad_records_get_a_false_answer_not_a_timeout(make_node: MakeNode) -> None:
    target = await make_node()
    client = await make_node()
    assert await client.bootstrap([("127.0.0.1", target.port)]) == 1
    node = Node(target.node_id, "127.0.0.1", target.port)
    owner = client.identity
    key = record_key("provider", owner.public_key, b"f")
    good = sign_record(owner, "provider", b"v2", name=b"f", seq=10)
    stale = sign_record(owner, "provider", b"v1", name=b"f", seq=5)
    unsigned = sign_record(owner, "provider", b"v", name=b"f", seq=11)
    unsigned.signature = b""
    forged = sign_record(owner, "provider", b"v", name=b"f", seq=12)
    forged.payload = b"tampered"
    call = client.server.protocol._with_token     # with the address token the target gives
    assert await call("store", node, key, encode_set([good])) == (True, True)
    for bad_key, value in [(key, encode_set([stale])), (key, encode_set([unsigned])),
                           (key, encode_set([forged])), (bytes(20), encode_set([good])),
                           (key, b"\xff not a record set"), (key, 42)]:
        # (True, False): an answer arrived and it is a refusal (a timeout is (False, None))
        assert await call("store", node, bad_key, value) == (True, False)
    assert await target.fetch(key) == [good]


async def test_publish_fetch_merges_owners(make_node: MakeNode) -> None:
    nodes = await mesh(make_node, 6)
    await wait_for(lambda: full(nodes), 5)
    owners = [node.identity for node in nodes[:3]]     # provider records: live peers' own
    key = record_key("provider", owners[0].public_key, b"fn")
    for i, owner in enumerate(owners):
        assert await nodes[i].publish(sign_record(owner, "provider", b"v1", name=b"fn", seq=1)) >= 5
    newer = sign_record(owners[0], "provider", b"v2", name=b"fn", seq=2)
    assert await nodes[4].publish(newer) >= 5
    stale = sign_record(owners[0], "provider", b"v0", name=b"fn", seq=0)
    assert await nodes[4].publish(stale) == 0
    got = await nodes[5].fetch(key)
    assert {r.owner_key for r in got} == {o.public_key for o in owners}
    assert [r.payload for r in got if r.owner_key == owners[0].public_key] == [b"v2"]


async def test_fetch_peer_and_mark_dead(make_node: MakeNode) -> None:
    nodes = await mesh(make_node, 3)
    await wait_for(lambda: full(nodes), 5)
    queue = nodes[0].subscribe()
    assert (await nodes[0].fetch_peer(nodes[0].node_id)) is not None
    nodes[0].mark_dead(nodes[1].node_id)
    event = queue.get_nowait()
    assert event.kind == "leave" and event.record.node_id == nodes[1].node_id
    assert nodes[1].node_id not in {p.node_id for p in nodes[0].live_peers()}
    record = await nodes[2].fetch_peer(nodes[1].node_id)
    assert record is not None and record.address == f"127.0.0.1:{nodes[1].port}"
    assert await nodes[2].fetch_peer(bytes(20)) is None


async def test_own_record_is_republished_before_expiry(make_node: MakeNode) -> None:
    a = await make_node(record_ttl=0.9)  # republished every 0.3 s
    b = await make_node()
    await b.bootstrap([("127.0.0.1", a.port)])
    first = await b.fetch(a.node_id)
    assert [r.owner_key for r in first] == [a.identity.public_key]
    await asyncio.sleep(1.2)  # longer than the TTL: only republishing keeps it alive
    later = await b.fetch(a.node_id)
    assert len(later) == 1 and later[0].seq > first[0].seq


async def test_a_node_of_another_mesh_is_refused(make_node: MakeNode) -> None:
    """Two meshes on one host: each node proves its ID, yet nodes of another mesh are never
    admitted (nor through a third node's routing table), so the meshes cannot merge."""
    a1 = await make_node(mesh="alpha")
    a2 = await make_node(mesh="alpha")
    b1 = await make_node(mesh="beta")
    plain = await make_node()  # no name given: the mesh called "default"
    assert await a2.bootstrap([("127.0.0.1", a1.port)]) == 1
    assert await b1.bootstrap([("127.0.0.1", a1.port)]) == 0
    assert b1.foreign[("127.0.0.1", a1.port)] == "alpha"  # and a2, learnt from a1's answer
    assert set(b1.foreign.values()) == {"alpha"}
    assert await plain.bootstrap([("127.0.0.1", b1.port)]) == 0
    assert plain.foreign == {("127.0.0.1", b1.port): "beta"}
    await asyncio.sleep(0.5)  # b1 contacted a1 and plain contacted b1: still nobody admitted
    assert {p.node_id for p in a1.live_peers()} == {a2.node_id}
    assert b1.live_peers() == [] and plain.live_peers() == []
    assert b1.node_id not in {p.node_id for p in await a1.closest_peers(b1.node_id, 5)}

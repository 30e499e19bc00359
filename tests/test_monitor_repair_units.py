"""Self-healing pieces without nodes: the token bucket, target choice, leader progress."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from storage.healing.locate import Locations, pick_target
from storage.healing.ratelimit import TokenBucket
from storage.manifest import Manifest


async def test_token_bucket_accounts_for_waiting_and_unlimited_never_waits() -> None:
    free = TokenBucket(0)
    await free.take(10**9)
    assert free.waited_s == 0
    bucket = TokenBucket(4000, burst=1000)
    await bucket.take(1000)            # the burst passes at once
    assert bucket.waited_s == 0
    await bucket.take(1000)            # then the next 1000 bytes wait ~0.25 s at 4 kB/s
    assert bucket.waited_s > 0
    await bucket.take(2000)            # bigger than the burst: passes once full, leaves debt
    assert bucket._tokens < 0


def fake_locations(ranked: list[bytes], held: dict[tuple[int, int], list[bytes]],
                   unreachable: set[bytes] = frozenset()) -> Locations:  # type: ignore[assignment]
    body = SimpleNamespace(k=4, m=2, stripes=[SimpleNamespace(fragments=[None] * 6)])
    manifest = cast(Manifest, SimpleNamespace(body=body, holder_of=lambda s, i: None))
    return Locations(manifest, ranked, held=held, unreachable=set(unreachable))


def test_pick_target_prefers_closest_peer_without_a_fragment_of_the_stripe() -> None:
    peers = [bytes([i]) * 20 for i in range(9)]
    held = {(0, i): [peers[i]] for i in range(6)}
    del held[(0, 2)]                                   # fragment 2 lost with peers[2]
    loc = fake_locations(peers, held, unreachable={peers[2]})
    assert pick_target(loc, 0, 2, set()) == peers[6]   # peers[2] is down, 0..5 hold some
    assert pick_target(loc, 0, 2, {peers[6]}) == peers[7]
    assert pick_target(loc, 0, 2, set(), avoid=[peers[6], peers[7]]) == peers[8]


def test_pick_target_wraps_when_there_are_fewer_peers_than_fragments() -> None:
    peers = [bytes([i]) * 20 for i in range(4)]
    held: dict[tuple[int, int], list[Any]] = {(0, i): [peers[i % 4]] for i in range(6) if i != 5}
    loc = fake_locations(peers, held)
    target = pick_target(loc, 0, 5, set())
    assert target in peers and target not in held.get((0, 5), [])
    assert pick_target(fake_locations([], {}), 0, 0, set()) is None


class FakeClient:
    def __init__(self, held: set[bytes]) -> None:
        self.held = held

    async def has_fragments(self, digests: list[bytes]) -> list[bool]:
        return [d in self.held for d in digests]


class FakeNetwork:
    def __init__(self, stores: dict[bytes, set[bytes]]) -> None:
        self.stores = stores
        self.self_id = b"\0" * 20

    async def closest(self, key: bytes, n: int) -> list[bytes]:
        return list(self.stores)[:n]

    async def client(self, node_id: bytes) -> FakeClient:
        return FakeClient(self.stores[node_id])


async def test_find_elsewhere_and_locate_find_relocated_fragments() -> None:
    from proto import storage_pb2
    from storage.healing.locate import find_elsewhere, locate

    peers = [bytes([i + 1]) * 20 for i in range(8)]
    hashes = [bytes([0xA0 + i]) * 32 for i in range(6)]
    body = storage_pb2.ManifestBody(k=4, m=2, placement_key=b"k" * 20, holders=peers[:6],
                                    stripes=[storage_pb2.Stripe(fragments=[
                                        storage_pb2.Fragment(hash=h, holder=i)
                                        for i, h in enumerate(hashes)])])
    manifest = Manifest(body, storage_pb2.SignedManifest())
    stores = {p: {hashes[i]} for i, p in enumerate(peers[:6])}
    stores[peers[6]] = {hashes[2]}            # fragment 2 was rebuilt on peers[6] ...
    stores[peers[7]] = set()
    stores[peers[2]] = set()                  # ... after its recorded holder lost it
    net = cast(Any, FakeNetwork(stores))
    assert await find_elsewhere(net, manifest, 0, [2]) == {2: [peers[6]]}
    loc = await locate(net, manifest)
    assert loc.held[(0, 2)] == [peers[6]] and loc.min_healthy() == 6
    assert peers[2] in loc.answered and not loc.unreachable

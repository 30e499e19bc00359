"""The audit's sampling and budget without nodes: what is fetched, what a failure changes."""

from __future__ import annotations

import random
from typing import Any, cast

from mesh.errors import NotFoundError, UnavailableError
from proto import storage_pb2
from storage.fraghash import fragment_digest
from storage.healing.audit import Auditor
from storage.healing.locate import Locations, pick_target
from storage.healing.ratelimit import TokenBucket
from storage.manifest import Manifest

ME = b"\0" * 20
PEERS = [bytes([i + 1]) * 20 for i in range(8)]
SIZE = 1000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Holder:
    """A peer's store as a fetch sees it: "gone" raises NOT_FOUND, "junk" sends other bytes,
    "down" is unreachable."""

    def __init__(self, blobs: dict[bytes, bytes], mode: str = "honest") -> None:
        self.blobs = blobs
        self.mode = mode
        self.fetched: list[bytes] = []

    async def fetch_fragment(self, digest: bytes) -> bytes:
        self.fetched.append(digest)
        if self.mode == "gone":
            raise NotFoundError("not held here")
        if self.mode == "down":
            raise UnavailableError("peer down")
        return b"junk" if self.mode == "junk" else self.blobs[digest]


class Net:
    def __init__(self, holders: dict[bytes, Holder]) -> None:
        self.holders = holders
        self.self_id = ME

    async def client(self, node_id: bytes) -> Holder:
        return self.holders[node_id]


def setup(stripes: int, modes: dict[int, str] | None = None,
          pad: bool = False) -> tuple[Manifest, Locations, Net]:
    """A k=4, m=2 file; fragment i of every stripe on PEERS[i] (``pad``: fragments 4 and 5
    of stripe 0 are one blob, as the zero padding of a short stripe is)."""
    rng = random.Random(7)
    data = [[rng.randbytes(16) for _ in range(6)] for _ in range(stripes)]
    if pad:
        data[0][5] = data[0][4]
    body = storage_pb2.ManifestBody(k=4, m=2, holders=PEERS[:6], stripes=[
        storage_pb2.Stripe(fragments=[storage_pb2.Fragment(hash=fragment_digest(d), holder=i)
                                      for i, d in enumerate(row)]) for row in data])
    manifest = Manifest(body, storage_pb2.SignedManifest())
    blobs = {fragment_digest(d): d for row in data for d in row}
    held = {(s, i): [PEERS[i]] for s in range(stripes) for i in range(6)}
    loc = Locations(manifest, PEERS, held=held)
    modes = modes or {}
    return manifest, loc, Net({p: Holder(blobs, modes.get(n, "honest"))
                               for n, p in enumerate(PEERS)})


def auditor(net: Net, rate: float, clock: Clock, seed: int = 1) -> Auditor:
    return Auditor(cast(Any, net), TokenBucket(0), rate=rate, interval=1.0,
                   rng=random.Random(seed), size_of=lambda m, s: SIZE, clock=clock)


async def test_a_copy_that_is_not_served_is_missing_and_its_holder_gets_no_repairs() -> None:
    m, loc, net = setup(2, {2: "gone", 3: "junk", 4: "down"})
    a = auditor(net, 1e9, Clock())
    a.begin_pass()
    assert await a.audit(m, loc) == 4                    # stripes 0 and 1 of peers 2 and 3
    assert a.audits == 11 and a.failures == 4 and a.timeouts == 1
    assert loc.missing(0) == loc.missing(1) == [2, 3]
    assert loc.held[(0, 4)] == [PEERS[4]]                # no answer is not a failure
    assert len(net.holders[PEERS[4]].fetched) == 1      # one timeout per holder and file
    assert loc.avoid == {PEERS[2], PEERS[3]} and a.avoid() == {PEERS[2], PEERS[3]}
    assert a.status()["audit_failed_holders"] == {PEERS[2].hex()[:16]: 2,
                                                  PEERS[3].hex()[:16]: 2}
    # repair's target for the lost copy is neither liar, though neither holds the stripe now
    assert pick_target(loc, 0, 2, set()) == PEERS[6]
    # ... unless no other peer is free of the stripe: then a liar (it may have been bit rot)
    # rather than a second fragment of the stripe on one peer
    small = Locations(m, PEERS[:6], held=loc.held, avoid=loc.avoid)
    assert pick_target(small, 0, 2, set()) == PEERS[2]
    # a holder ranked after the leader audits nothing but avoids the liars too
    _, other, _ = setup(1)
    assert await a.check(m, other, lead=False) == 0 and a.audits == 11
    assert other.avoid == {PEERS[2], PEERS[3]}


async def test_a_failed_blob_is_missing_in_every_slot_it_serves() -> None:
    m, loc, net = setup(1, {4: "gone"}, pad=True)
    loc.held[(0, 5)] = [PEERS[4], PEERS[5]]              # the padding blob on two peers
    a = auditor(net, 1e9, Clock())
    a.begin_pass()
    await a.audit(m, loc)
    assert loc.held[(0, 4)] == [] and loc.held[(0, 5)] == [PEERS[5]]


async def test_own_copies_are_not_fetched_and_rate_zero_audits_nothing() -> None:
    m, loc, net = setup(1)
    loc.held[(0, 0)] = [ME]
    a = auditor(net, 1e9, Clock())
    a.begin_pass()
    await a.audit(m, loc)
    assert a.audits == 5
    off = auditor(net, 0, Clock())
    off.begin_pass()
    assert await off.audit(m, loc) == 0 and off.audits == 0


async def test_the_budget_caps_each_pass_and_the_sample_covers_every_copy() -> None:
    m, loc, net = setup(20)                              # 120 copies of 1000 bytes
    clock = Clock()
    a = auditor(net, 500, clock)                         # cap: 60 s of 500 B/s = 30 audits
    a.begin_pass()
    await a.audit(m, loc)
    assert a.audits == 30                                # first pass: budget-bound
    for h in net.holders.values():
        h.fetched.clear()
    for _ in range(40):
        clock.now += 10.0                                # 5000 B more (unused bytes stay)
        a.begin_pass()
        budget = a.tokens
        assert 5000 <= budget <= 30_000
        assert a.probability == budget / 120_000         # budget / bytes of all copies
        before = a.audits
        await a.audit(m, loc)
        assert a.audits - before <= budget / SIZE
    audited = {(d, p) for p, h in net.holders.items() for d in h.fetched}
    assert a.failures == 0 and 60 < len(audited) <= 120  # spread over the copies


async def test_the_seed_fixes_the_sample() -> None:
    m, loc, net = setup(10)

    def picks(seed: int) -> list[tuple[int, bytes, bytes]]:
        a = auditor(net, 1e9, Clock(), seed)
        a.begin_pass()
        a.probability = 0.2
        return a.sample(m, loc)

    assert picks(3) == picks(3) and picks(3) != picks(4)


async def test_a_responsive_holder_that_never_serves_a_copy_fails_on_the_third_pass() -> None:
    m, loc, net = setup(1, {2: "down", 3: "down"})
    loc.answered = {PEERS[2]}                # answered HasFragments; PEERS[3] did not
    a = auditor(net, 1e9, Clock())
    for _ in range(2):
        a.begin_pass()
        assert await a.audit(m, loc) == 0                # unserved twice: still only slow
    assert loc.held[(0, 2)] == [PEERS[2]] and a.timeouts == 4
    a.begin_pass()
    assert await a.audit(m, loc) == 1                    # the third pass in a row: withheld
    assert loc.held[(0, 2)] == [] and loc.held[(0, 3)] == [PEERS[3]]
    assert a.status()["audit_withheld"] == 1 and PEERS[2] in a.avoid()
    # a served copy starts the count over
    _, loc2, net2 = setup(1, {2: "down"})
    loc2.answered = {PEERS[2]}
    b = auditor(net2, 1e9, Clock())
    for mode in ("down", "down", "honest", "down", "down"):
        net2.holders[PEERS[2]].mode = mode
        b.begin_pass()
        assert await b.audit(m, loc2) == 0
    assert loc2.held[(0, 2)] == [PEERS[2]]

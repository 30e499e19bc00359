"""storage/late_copies.py: copies that land after a Push gave their store up are deleted.

The collector's retry and give-up rules run against a fake peer and a fake clock (no real
waiting); a Push on in-process nodes, one of them frozen the way a SIGSTOPped peer is (calls
wait, then run to the end), shows which stores become jobs and that the late copy goes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import nacl.signing
import pytest

from mesh.errors import InvalidArgumentError, PermissionDeniedError, UnavailableError
from proto import storage_pb2
from storage import push as push_mod
from storage import tail as tail_mod
from storage.cid import cid_for
from storage.files import FileStore, PushOptions
from storage.late_copies import LateCopies, Timings
from storage.late_stores import LateStores
from storage.manifest import NO_HOLDER, Manifest, sign_manifest
from storage.peer import StorageClient
from storage.placement import placement_key
from tests.storage.test_files import FakeNetwork

P, Q, R, S = (bytes([i]) * 20 for i in range(1, 5))
H1, H2, H3 = (bytes([i]) * 32 for i in range(1, 4))
T = Timings(first=10.0, retry=10.0, max_retry=40.0, max_age=300.0, misses=3)
OWNER = nacl.signing.SigningKey.generate()
Reply = TypeVar("Reply")


def _manifest(holders: list[bytes], slots: list[int], hashes: list[bytes],
              file_id: str = "f") -> Manifest:
    body = storage_pb2.ManifestBody(file_id=file_id, owner_key=bytes(OWNER.verify_key),
                                    holders=holders, stripes=[
        storage_pb2.Stripe(fragments=[storage_pb2.Fragment(hash=h, holder=s)
                                      for h, s in zip(hashes, slots, strict=True)])])
    return Manifest(body, sign_manifest(body, OWNER))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Refuse:
    """The copy is there and DeleteFragment refuses with ``error``."""

    error: Exception


class FakeHolder:
    """A peer answering each attempt from a script: True (the copy is there and the delete
    removes it), False (no copy here), an exception (HasFragments raises it: frozen, down) or
    Refuse."""

    def __init__(self, *script: bool | Exception | Refuse) -> None:
        self.script = list(script)
        self.connected: list[bytes] = []
        self.deletes: list[tuple[bytes, str]] = []
        self.deleted = asyncio.Event()

    async def connect(self, peer: bytes) -> FakeHolder:
        self.connected.append(peer)
        return self

    async def has_fragments(self, digests: list[bytes], deep: bool = False) -> list[bool]:
        answer = self.script[0]
        if isinstance(answer, Exception):
            self.script.pop(0)
            raise answer
        if answer is False:
            self.script.pop(0)
        return [answer is not False]

    async def delete_fragment(self, digest: bytes, file: str,
                              manifest: storage_pb2.SignedManifest) -> bool:
        self.deletes.append((digest, file))
        self.deleted.set()          # the job ends in the same step: no await after this
        answer = self.script.pop(0)
        if isinstance(answer, Refuse):
            raise answer.error
        return answer is True


def _one_job(holder: FakeHolder, clock: Clock, **kw: int) -> LateCopies:
    late = LateStores()
    late.stores.append((P, "f", [H1]))
    copies = LateCopies(holder.connect, T, clock=clock, **kw)
    assert copies.submit(late, _manifest([Q, R], [0, 1], [H1, H2])) == 1
    return copies


async def _run_at(copies: LateCopies, clock: Clock, t: float) -> int:
    clock.now = 1000.0 + t
    return await copies.run_due()


async def _tried_at(copies: LateCopies, clock: Clock, until: int) -> list[int]:
    """Run the collector at every whole second up to ``until``: when it tried the job."""
    return [t for t in range(until) if await _run_at(copies, clock, t)]


async def test_the_first_delete_waits_then_a_removed_copy_is_collected() -> None:
    holder, clock = FakeHolder(True), Clock()
    copies = _one_job(holder, clock)
    assert copies.status()["late_copies_pending"] == 1
    assert await _run_at(copies, clock, 9.9) == 0 and holder.connected == []
    assert await _run_at(copies, clock, 10) == 1
    assert holder.connected == [P] and holder.deletes == [(H1, "f")]
    assert copies.status() == {"late_copies_pending": 0, "late_copies_collected": 1,
                               "late_copies_abandoned": 0, "late_copies_kept": 0,
                               "late_copies_dropped": 0}


async def test_unanswered_attempts_back_off_and_do_not_count_as_misses() -> None:
    holder = FakeHolder(TimeoutError(), UnavailableError("frozen"), False, False, True)
    clock = Clock()
    copies = _one_job(holder, clock)
    # first at 10, then +10, +20, +40 (doubling), +40 (capped): two misses, then removed
    assert await _tried_at(copies, clock, 200) == [10, 20, 40, 80, 120]
    assert copies.counters["collected"] == 1 and copies.counters["abandoned"] == 0
    assert holder.deletes == [(H1, "f")]          # asked first: no delete sent blind


async def test_a_copy_that_never_lands_is_abandoned_after_spaced_misses() -> None:
    holder, clock = FakeHolder(False, False, False), Clock()
    copies = _one_job(holder, clock)
    assert await _tried_at(copies, clock, 200) == [10, 20, 40]
    assert copies.counters["abandoned"] == 1 and copies.status()["late_copies_pending"] == 0
    assert holder.deletes == []


async def test_a_peer_that_never_answers_is_given_up_at_the_max_age() -> None:
    holder, clock = FakeHolder(*[UnavailableError("down")] * 20), Clock()
    copies = _one_job(holder, clock)
    tried = await _tried_at(copies, clock, 400)
    assert len(tried) > T.misses and tried[-1] <= T.max_age
    assert copies.counters["abandoned"] == 1 and copies.status()["late_copies_pending"] == 0


async def test_permission_denied_keeps_the_copy_and_other_refusals_end_the_job() -> None:
    for refusal, ended in ((PermissionDeniedError("recorded here"), "kept"),
                           (InvalidArgumentError("no such fragment"), "abandoned")):
        clock = Clock()
        copies = _one_job(FakeHolder(Refuse(refusal)), clock)
        assert await _run_at(copies, clock, 10) == 1
        assert copies.status()["late_copies_pending"] == 0
        assert copies.counters[ended] == 1 and sum(copies.counters.values()) == 1


async def test_the_queue_is_bounded_and_counts_what_it_drops() -> None:
    late = LateStores()
    late.stores.append((P, "f", [H1, H2, H3]))
    copies = LateCopies(FakeHolder().connect, T, clock=Clock(), max_pending=2)
    assert copies.submit(late, _manifest([Q, R, S], [0, 1, 2], [H1, H2, H3])) == 2
    assert copies.status()["late_copies_pending"] == 2
    assert copies.counters["dropped"] == 1


def test_only_fragments_recorded_alone_at_another_holder_are_extra_copies() -> None:
    late = LateStores()
    late.stores += [(P, "f", [H1, H2, H3]), (Q, "f", [H1]), (P, "other", [H1])]
    # H1 went to R (alone there), H2 is recorded at P itself, H3 went nowhere
    m = _manifest([R, P], [0, 1, NO_HOLDER], [H1, H2, H3])
    assert late.extra_copies(m) == [(P, H1), (Q, H1)]
    # H1 doubled up on R (no spare was left): P's late copy adds spread, it stays
    assert late.extra_copies(_manifest([R], [0, 0, NO_HOLDER], [H1, H2, H3])) == []


async def test_watch_remembers_only_stores_cancelled_after_they_started() -> None:
    late = LateStores()
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    async def fail() -> None:
        raise UnavailableError("refused")

    async def ok() -> int:
        return 1

    task = asyncio.ensure_future(late.watch(P, "f", [H1], hang)())
    await started.wait()
    task.cancel()
    never = asyncio.ensure_future(late.watch(Q, "f", [H2], hang)())
    never.cancel()                                    # before it ran: nothing was sent
    await asyncio.gather(task, never, return_exceptions=True)
    with pytest.raises(UnavailableError):
        await late.watch(R, "f", [H3], fail)()
    assert await late.watch(S, "f", [H3], ok)() == 1
    assert late.stores == [(P, "f", [H1])]


async def test_the_running_collector_is_woken_by_a_submit_and_stops_cleanly() -> None:
    holder = FakeHolder(True)
    copies = LateCopies(holder.connect, Timings(first=0.0))
    copies.start()
    late = LateStores()
    late.stores.append((P, "f", [H1]))
    copies.submit(late, _manifest([Q], [0], [H1]))
    await asyncio.wait_for(holder.deleted.wait(), 60)
    assert copies.status()["late_copies_pending"] == 0
    assert copies.counters["collected"] == 1
    await copies.stop()
    assert not copies._task.running         # cancelled and awaited


class FrozenNetwork(FakeNetwork):
    """One peer frozen like a SIGSTOPped process: a call waits for ``thaw`` and then runs to
    the end even if the caller gave it up (the channel server runs the handler through).

    Only the frozen peer may be given up (``freeze``): the tests here follow its fragment to
    the spare. A process stall used to break that: a full-suite run left all six holders
    unanswered past the tail delay, all were given up, the frozen one's fragment doubled up on
    another holder and, rightly, no late copy was queued. So the other peers answer only once
    a call to the frozen one was given up (``given_up``), as late as a stall makes them, in
    every run, and the Push's tail waits for them as it does for a store with no spare."""

    def __init__(self, root: Path, n: int) -> None:
        super().__init__(root, n)
        self.frozen = b""
        self.thawed = asyncio.Event()
        self.given_up = asyncio.Event()
        self.served: list[asyncio.Task[bytes]] = []   # owned here: awaited by the test

    def freeze(self, node_id: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
        """Freeze ``node_id``: a short tail delay, and Pushes give up no other peer."""
        monkeypatch.setattr(tail_mod, "STORE_SPARE_S", 0.2)
        monkeypatch.setattr(tail_mod, "_RECHECK_S", 0.01)
        self.frozen = node_id

        class FrozenOnly(tail_mod.Tail):
            async def call(self, peer: bytes, store: Callable[[], Awaitable[Reply]],
                           give_up: bool = True) -> Reply:
                return await super().call(peer, store, give_up and peer == node_id)

        monkeypatch.setattr(push_mod, "Tail", FrozenOnly)

    async def client(self, node_id: bytes) -> StorageClient:
        if node_id not in self.handlers or node_id in self.down:
            return await super().client(node_id)
        handlers = self.handlers[node_id]
        if node_id != self.frozen:
            async def late(method: str, body: bytes) -> bytes:
                await self.given_up.wait()
                return await handlers.dispatch(method, body)
            return StorageClient(node_id, late)

        async def serve(method: str, body: bytes) -> bytes:
            await self.thawed.wait()
            return await handlers.dispatch(method, body)

        async def call(method: str, body: bytes) -> bytes:
            self.served.append(asyncio.ensure_future(serve(method, body)))
            try:
                return await asyncio.shield(self.served[-1])
            except asyncio.CancelledError:
                self.given_up.set()
                raise

        return StorageClient(node_id, call)


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_push_queues_the_late_copy_of_a_frozen_holder_and_it_is_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool) -> None:
    """7 nodes, (4,2): a frozen holder's store is given up, its fragment goes to the spare;
    once the holder resumes the store lands, and the collector deletes that copy (one-stripe
    StoreBatch path, and the streamed per-fragment path of three stripes)."""
    net = FrozenNetwork(tmp_path, 7)
    clock = Clock()
    copies = LateCopies(net.client, T, clock=clock)
    files = FileStore(net, late_copies=copies)
    alice = nacl.signing.SigningKey.generate()
    data = os.urandom(180_000)
    net.freeze((await net.closest(placement_key("cid", cid_for(data)), 6))[1], monkeypatch)
    try:
        if streamed:
            async def source() -> AsyncIterator[bytes]:
                yield data
            r = await files.push(source(), alice, PushOptions(stripe_size=65536),
                                 cid=cid_for(data))
        else:
            r = await files.push_bytes(data, alice, PushOptions())
    finally:
        net.thawed.set()
        await asyncio.gather(*net.served, return_exceptions=True)   # the late stores land
    assert r.manifest is not None
    m = r.manifest
    assert net.frozen not in {m.holder_of(s, i) for s in range(len(m.body.stripes))
                              for i in range(6)}
    assert files.counters["store_spares"] == 1 and net.suspected == [net.frozen]
    frozen = net.handlers[net.frozen].fragments
    late = frozen.list(r.file_id)
    assert late, "the given-up store should have landed once the holder resumed"
    assert copies.status()["late_copies_pending"] >= len(late)
    assert await _run_at(copies, clock, T.first) >= len(late)
    assert frozen.list(r.file_id) == []
    assert copies.counters["collected"] >= len(late)
    assert await (await files.open(r.file_id, alice)).read_all() == data


def test_one_join_flag_scales_every_delay() -> None:
    """``--late-copy-delay`` (storage.late_copy_delay): the first delete, and the backoff and
    max age in proportion (real-node tests wait seconds, not an hour)."""
    t = Timings.scaled(2.0)
    assert (t.first, t.retry, t.max_retry, t.max_age) == pytest.approx((2, 2, 20, 120))
    assert t.misses == Timings().misses and Timings().first == 60.0

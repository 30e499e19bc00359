"""storage/tail.py: a store unanswered past the tail delay is given up and goes to a spare."""

from __future__ import annotations

import asyncio
import time

import pytest

from mesh.errors import InvalidArgumentError, UnavailableError
from storage import tail as tail_mod
from storage.tail import SKIPPED, Tail, on_spare, read_tail

A, B, C = b"a" * 20, b"b" * 20, b"c" * 20


@pytest.fixture(autouse=True)
def _short_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail_mod, "STORE_SPARE_S", 0.05)
    monkeypatch.setattr(tail_mod, "_RECHECK_S", 0.01)


def test_delay_is_twice_the_floor_before_any_answer_then_four_times_the_fastest() -> None:
    t = Tail()
    assert t.delay() == pytest.approx(0.10)
    t.fastest = 0.001
    assert t.delay() == pytest.approx(0.05)
    t.fastest = 0.5
    assert t.delay() == pytest.approx(2.0)


async def test_an_answer_is_returned_and_timed() -> None:
    t = Tail()

    async def store() -> str:
        return "ok"

    assert await t.call(A, store) == "ok"
    assert t.fastest is not None           # timed: the delay now follows it
    assert t.delay() == pytest.approx(max(tail_mod.STORE_SPARE_S, 4 * t.fastest))
    assert not t.stuck and not t.warning()


async def test_a_hung_store_is_cancelled_and_its_peer_skipped_after() -> None:
    counters = {"store_spares": 0}
    t = Tail(counters)
    cancelled = asyncio.Event()
    calls = 0

    async def hang() -> None:
        nonlocal calls
        calls += 1
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    with pytest.raises(UnavailableError, match="unanswered"):
        await t.call(A, hang)
    assert cancelled.is_set() and t.stuck == {A} and counters["store_spares"] == 1
    with pytest.raises(UnavailableError):          # given up for the rest of the Push
        await t.call(A, hang)
    assert calls == 1
    assert "1 peer(s)" in t.warning()[0] and A.hex()[:16] in t.warning()[0]


async def test_a_failing_store_raises_its_own_error_and_is_not_marked_stuck() -> None:
    t = Tail()

    async def refuse() -> None:
        raise InvalidArgumentError("bad bytes")

    with pytest.raises(InvalidArgumentError):
        await t.call(A, refuse)
    assert not t.stuck


async def test_the_delay_is_reread_while_waiting() -> None:
    """A store started before any answer is given up at the shorter delay once another store
    answers, not at the delay it started with (here: an hour, then nothing)."""
    class Shrinking(Tail):
        def delay(self) -> float:
            return 3600.0 if self.fastest is None else 0.0

    t = Shrinking()

    async def hang() -> None:
        await asyncio.Event().wait()

    async def quick() -> int:
        return 1

    hung = asyncio.create_task(asyncio.wait_for(t.call(A, hang), 30))
    await asyncio.sleep(0.05)
    assert not hung.done()
    assert await t.call(B, quick) == 1
    with pytest.raises(UnavailableError):
        await hung
    assert t.stuck == {A}


async def test_on_spare_skips_stuck_and_failing_peers() -> None:
    t = Tail()
    t.stuck.add(A)
    tried: list[bytes] = []

    async def store(peer: bytes) -> None:
        tried.append(peer)
        if peer == B:
            raise UnavailableError("down")

    spares = [A, B, C]
    assert await on_spare(spares, t, store, "x") == C
    assert tried == [B, C] and spares == []
    assert await on_spare(spares, t, store, "x") is None


async def test_a_patient_tail_never_gives_up_on_every_peer_at_once() -> None:
    """Reads: with nobody answered yet the call waits (its own deadline applies); once another
    peer answers, the straggler is left out after the floor."""
    t = Tail(floor=0.01, patient=True)
    assert t.delay() == float("inf")

    async def hang() -> None:
        await asyncio.Event().wait()

    async def quick() -> int:
        return 1

    hung = asyncio.create_task(asyncio.wait_for(t.call(A, hang), 30))
    await asyncio.sleep(0.2)                  # 20x the floor: an impatient tail gave up
    assert not hung.done()
    assert await t.call(B, quick) == 1
    with pytest.raises(UnavailableError):
        await hung


async def test_without_a_spare_a_store_is_not_given_up() -> None:
    """give_up=False (no distinct spare: the share would only double up on a holder): the
    store waits for its own deadline, past any tail delay, and the peer is not marked stuck."""
    t = Tail()
    t.fastest = 0.001                          # delay = the 0.05 s floor

    async def slow() -> str:
        await asyncio.sleep(0.3)
        return "stored"

    assert await t.call(A, slow, give_up=False) == "stored"
    assert not t.stuck


async def test_the_last_spare_is_waited_for() -> None:
    """on_spare gives up on a hung spare only while another spare is left."""
    t = Tail()
    t.fastest = 0.001
    tried: list[bytes] = []

    async def store(peer: bytes) -> None:
        tried.append(peer)
        if peer == B:
            await asyncio.Event().wait()          # hung: given up, C is left
        await asyncio.sleep(0.3)                  # slow past the delay, but the last spare

    assert await on_spare([B, C], t, store, "x") == C
    assert tried == [B, C] and t.stuck == {B}


async def test_a_peer_given_up_on_is_reported_once() -> None:
    suspected: list[bytes] = []
    t = Tail(on_stuck=suspected.append)

    async def hang() -> None:
        await asyncio.Event().wait()

    for _ in range(2):
        with pytest.raises(UnavailableError):
            await t.call(A, hang)
    assert suspected == [A]


async def test_mesh_network_ranks_a_suspect_last_until_it_expires(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """storage/placement.py: a suspected peer is drawn from one rank further and placed after
    the others (XOR order kept among them), then forgotten after SUSPECT_S."""
    from types import SimpleNamespace

    from storage import placement
    from storage.placement import MeshNetwork

    peers = [bytes([i]) * 20 for i in range(1, 6)]           # already in XOR order

    async def closest_peers(key: bytes, n: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(node_id=p, roles=["storage"], address="x", capacity_bytes=0,
                                free_bytes=0, reserved_bytes=0) for p in peers[:n]]

    ctx = SimpleNamespace(identity=SimpleNamespace(node_id=b"\0" * 20),
                          membership=SimpleNamespace(closest_peers=closest_peers))
    net = MeshNetwork(ctx, SimpleNamespace(dispatch=None))  # type: ignore[arg-type]
    assert await net.closest(b"k", 3) == peers[:3]
    net.suspect(peers[0])
    net.suspect(b"\0" * 20)                                    # never itself
    assert await net.closest(b"k", 3) == [peers[1], peers[2], peers[3]]
    assert await net.closest(b"k", 5) == [*peers[1:], peers[0]]
    assert net.suspects() == [peers[0]]
    now = placement.time.monotonic()
    monkeypatch.setattr(placement.time, "monotonic", lambda: now + placement.SUSPECT_S + 1)
    assert await net.closest(b"k", 3) == peers[:3] and net.suspects() == []


async def test_calls_in_flight_to_a_peer_given_up_on_stop_waiting_too() -> None:
    """Stripes in flight to one hung holder: once one call gives the peer up, the others stop
    at their next recheck instead of each waiting out its own delay (counted once)."""
    counters = {"store_spares": 0}

    class Staggered(Tail):
        def delay(self) -> float:
            return 3600.0

    t = Staggered(counters)

    async def hang() -> None:
        await asyncio.Event().wait()

    waiting = asyncio.create_task(asyncio.wait_for(t.call(A, hang), 30))
    await asyncio.sleep(0.05)
    t.stuck.add(A)                       # as another call of the Push would
    with pytest.raises(UnavailableError):
        await waiting
    assert counters["store_spares"] == 0   # counted by the call that gave it up, not again


class FakeSuspects:
    """MeshNetwork's suspects (storage/placement.py), without a mesh."""

    def __init__(self, *peers: bytes) -> None:
        self.suspected = list(peers)

    def suspect(self, node_id: bytes) -> None:
        self.suspected.append(node_id)

    def suspects(self) -> list[bytes]:
        return list(self.suspected)

    def acquit(self, node_id: bytes) -> None:
        while node_id in self.suspected:
            self.suspected.remove(node_id)


async def test_a_read_cuts_a_replica_then_the_next_reads_skip_it() -> None:
    """Read tails feed the suspects (like stores) and consult them: the first read waits the
    floor for a frozen replica and suspects it, the next one leaves it out as soon as the
    other replica has answered (no floor: an hour here) — it is still asked."""
    net, counters = FakeSuspects(), {"replicas_cut": 0, SKIPPED: 0}
    asked = 0

    async def frozen() -> None:
        nonlocal asked
        asked += 1
        await asyncio.Event().wait()

    async def quick() -> int:
        return 1

    first = read_tail(net, counters, floor=0.01)
    hung = asyncio.create_task(first.call(A, frozen))
    assert await first.call(B, quick) == 1
    with pytest.raises(UnavailableError, match="unanswered"):
        await asyncio.wait_for(hung, 30)
    assert net.suspected == [A] and counters == {"replicas_cut": 1, SKIPPED: 0}

    second = read_tail(net, counters, floor=3600.0)
    hung = asyncio.create_task(second.call(A, frozen))
    assert await second.call(B, quick) == 1
    with pytest.raises(UnavailableError, match="suspect"):
        await asyncio.wait_for(hung, 30)
    assert asked == 2 and second.stuck == {A}
    assert net.suspected == [A] and counters == {"replicas_cut": 1, SKIPPED: 1}


async def test_a_suspect_that_answers_a_read_is_acquitted() -> None:
    """A resumed replica answers again: the read that gets its answer lifts the suspicion, so
    the next reads wait for it like any replica (not SUSPECT_S later)."""
    net = FakeSuspects(A)

    async def quick() -> int:
        return 1

    t = read_tail(net, floor=3600.0)
    assert await t.call(A, quick) == 1
    assert net.suspected == [] and not t.stuck


async def test_a_suspect_is_skipped_without_waiting_for_a_recheck(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The last other call ending wakes the suspect's wait: it is not left to the periodic
    re-read of the delay (an hour here, like the floor)."""
    monkeypatch.setattr(tail_mod, "_RECHECK_S", 3600.0)
    t = read_tail(FakeSuspects(A), floor=3600.0)
    started = asyncio.Event()

    async def frozen() -> None:
        started.set()
        await asyncio.Event().wait()

    async def quick() -> int:
        return 1

    hung = asyncio.create_task(t.call(A, frozen))
    await started.wait()
    assert await t.call(B, quick) == 1
    with pytest.raises(UnavailableError, match="suspect"):
        await asyncio.wait_for(hung, 30)


async def test_a_suspect_is_waited_for_while_another_replica_is_still_asked() -> None:
    """Its answer is used when it comes before the others have all finished."""
    t = read_tail(FakeSuspects(A), floor=3600.0)
    a_go, c_go = asyncio.Event(), asyncio.Event()

    async def answer(go: asyncio.Event, value: str) -> str:
        await go.wait()
        return value

    async def quick() -> str:
        return "b"

    a = asyncio.create_task(t.call(A, lambda: answer(a_go, "a")))
    c = asyncio.create_task(t.call(C, lambda: answer(c_go, "c")))
    assert await t.call(B, quick) == "b"
    await asyncio.sleep(0.05)                 # rechecks run; C is still being asked
    assert not a.done()
    a_go.set()
    assert await asyncio.wait_for(a, 30) == "a"
    c_go.set()
    assert await asyncio.wait_for(c, 30) == "c"
    assert not t.stuck


async def test_a_suspect_is_waited_for_when_no_other_replica_answered() -> None:
    """Patient as before when every replica asked is a suspect, or the others failed: a read
    never gives up on every replica."""
    net = FakeSuspects(A, B)
    t = read_tail(net, floor=3600.0)
    go = asyncio.Event()

    async def late() -> str:
        await go.wait()
        return "a"

    async def refuse() -> None:
        raise InvalidArgumentError("bad bytes")

    a = asyncio.create_task(t.call(A, late))
    with pytest.raises(InvalidArgumentError):
        await t.call(C, refuse)               # not a suspect, but no answer either
    with pytest.raises(InvalidArgumentError):
        await t.call(B, refuse)               # a suspect failing is not acquitted
    await asyncio.sleep(0.05)                 # 5x the recheck: a skip would have happened
    assert not a.done()
    go.set()
    assert await asyncio.wait_for(a, 30) == "a"
    assert not t.stuck and net.suspected == [B]



async def test_a_stall_of_this_process_is_not_charged_to_the_peer() -> None:
    """The pushing process itself stalls (here: a blocking sleep on its loop) past the delay
    while the peer's answer is due: the answer is taken and nobody is given up. Before, one
    such stall gave every holder of a Push up at once (a full-suite flake of
    tests/storage/test_late_copies.py)."""
    t = Tail(floor=0.05)                      # 0.1 s before any answer
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    loop.call_later(0.02, answer.set_result, "ok")

    async def store() -> str:
        return await answer

    async def stall() -> None:
        await asyncio.sleep(0.005)
        time.sleep(0.5)                       # noqa: ASYNC251 - the stall under test

    async with asyncio.TaskGroup() as tg:
        tg.create_task(stall())
        result = await t.call(A, store)
    assert result == "ok" and not t.stuck and not t.warning()

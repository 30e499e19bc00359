"""mesh.channel.hedge on its own: who wins, what is raised, what is cancelled or kept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from mesh.channel.hedge import hedged


def script(*steps: tuple[float, object]) -> tuple[Callable[[], Coroutine[Any, Any, str]],
                                                   list[str]]:
    """attempt() whose n-th call sleeps steps[n][0] then returns or raises steps[n][1];
    the log says which calls started, finished or were cancelled."""
    log: list[str] = []
    calls = iter(range(len(steps)))

    async def attempt() -> str:
        n = next(calls)
        delay, outcome = steps[n]
        log.append(f"start {n}")
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            log.append(f"cancelled {n}")
            raise
        log.append(f"end {n}")
        if isinstance(outcome, BaseException):
            raise outcome
        return str(outcome)

    return attempt, log


async def test_a_quick_first_attempt_is_never_hedged() -> None:
    attempt, log = script((0.0, "a"), (0.0, "b"))
    hedges: list[int] = []
    assert await hedged(attempt, 5.0, on_hedge=lambda: hedges.append(1)) == "a"
    assert log == ["start 0", "end 0"] and not hedges


async def test_a_stuck_first_attempt_loses_to_the_hedge_and_is_cancelled() -> None:
    attempt, log = script((60.0, "a"), (0.0, "b"))
    hedges: list[int] = []
    assert await hedged(attempt, 0.01, on_hedge=lambda: hedges.append(1)) == "b"
    assert hedges == [1]
    assert log == ["start 0", "start 1", "end 1", "cancelled 0"]


async def test_a_first_attempt_failing_at_once_fails_the_whole_without_a_hedge() -> None:
    attempt, log = script((0.0, KeyError("refused")), (0.0, "b"))
    with pytest.raises(KeyError, match="refused"):
        await hedged(attempt, 5.0)
    assert log == ["start 0", "end 0"]


@pytest.mark.parametrize(("second", "want"), [
    ("b", "b"),                         # the first failed after the hedge started: the hedge wins
    (KeyError("second"), "first"),      # both failed: the first attempt's error
])
async def test_a_failure_after_the_hedge_started_waits_for_the_hedge(
        second: object, want: str) -> None:
    hedge_started = asyncio.Event()
    calls = iter(range(2))

    async def attempt() -> str:
        if next(calls) == 0:
            await hedge_started.wait()      # fail only once the second attempt is under way
            raise KeyError("first")
        await asyncio.sleep(0)
        if isinstance(second, BaseException):
            raise second
        return str(second)

    if want == "first":
        with pytest.raises(KeyError, match="first"):
            await hedged(attempt, 0.01, on_hedge=hedge_started.set)
    else:
        assert await hedged(attempt, 0.01, on_hedge=hedge_started.set) == want


async def test_cancelling_the_caller_cancels_both_attempts() -> None:
    attempt, log = script((60.0, "a"), (60.0, "b"))
    task = asyncio.create_task(hedged(attempt, 0.01))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(log) == ["cancelled 0", "cancelled 1", "start 0", "start 1"]


async def test_a_loser_that_succeeded_anyway_is_handed_to_spare() -> None:
    """The hedge releases the first attempt and then finishes itself: both are done when the
    winner is picked, so the other one is not lost but handed to ``spare``."""
    gate = asyncio.Event()
    order = iter([0, 1])

    async def gated() -> str:
        if next(order) == 0:
            await gate.wait()
            return "slow one"
        gate.set()
        await asyncio.sleep(0)
        return "hedge"

    kept: list[str] = []
    got = await hedged(gated, 0.01, spare=kept.append)
    assert {got, *kept} == {"slow one", "hedge"} and len(kept) == 1

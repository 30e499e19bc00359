"""Hedged attempts: a second try once the first is slow, the first success wins.

The tail-latency technique of "The Tail at Scale" (Dean and Barroso, CACM 2013, "hedged
requests"). Used where a slow attempt is usually stuck rather than busy: a TCP connect whose
SYN was lost waits the kernel's 1 s retransmission timeout (tcp_client.py), and a call on a
connection in retransmission backoff can wait many seconds while a new connection to the same
peer gets through (client.py, for idempotent methods only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def hedged(attempt: Callable[[], Coroutine[Any, Any, T]], after: float, *,
                 on_hedge: Callable[[], None] | None = None,
                 spare: Callable[[T], None] | None = None) -> T:
    """Run ``attempt()``; if it has not finished within ``after`` seconds, run a second one
    beside it. The first to succeed wins and the other is cancelled; ``spare`` receives a loser
    that succeeded before it could be cancelled (e.g. a connection worth keeping). A first
    attempt failing before ``after`` fails the whole at once; if both fail, the first attempt's
    error is raised. ``on_hedge`` is called when the second attempt starts.
    """
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(attempt())]
    winner: asyncio.Task[T] | None = None
    try:
        done, _ = await asyncio.wait(tasks, timeout=after)
        if not done:
            if on_hedge is not None:
                on_hedge()
            tasks.append(loop.create_task(attempt()))
        while winner is None:
            pending = [t for t in tasks if not t.done()]
            if pending:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            ok = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is None]
            if ok:
                winner = ok[0]
            elif all(t.done() for t in tasks):
                return tasks[0].result()           # raises the first attempt's error
        return winner.result()
    finally:
        losers = [t for t in tasks if t is not winner]
        for t in losers:
            t.cancel()
        for r in await asyncio.gather(*losers, return_exceptions=True):
            if spare is not None and not isinstance(r, BaseException):
                spare(r)

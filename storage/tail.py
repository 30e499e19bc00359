"""The write path's long tail: a store left unanswered too long moves to a spare peer.

Storj uploads a segment to more nodes than it needs and cancels the slowest ("long-tail
cancellation"). A Push here needs every one of its n = k+m holders, so it cannot just drop the
slowest; instead a holder that has not answered within the tail delay is given up for the rest
of this Push and what it was storing goes to the next spare, exactly as if it had failed —
when there is a distinct spare to go to (otherwise the store waits for its own deadline: doubling
a fragment up on another holder loses redundancy to a peer that may only be slow). The case
this covers: a holder whose disk hangs (or whose process is frozen) while the mesh still
counts it live. Without it such a holder held a Push until the 30 s call deadline, twice for a
one-stripe Push (the fragment, then the corrected manifest).

The delay is max(STORE_SPARE_S, 4x the fastest store this Push has seen): far above a loaded
loopback store (milliseconds), and past the channel's same-peer re-send (STORE_HEDGE_S = 1 s,
peer_client.py), which gets a store through a lossy path without moving it. Before any store
has answered it is twice the floor (a first connection may still be handshaking).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mesh.errors import MeshError, UnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")

STORE_SPARE_S = 3.0
# Reads that ask every replica for the newest record (document records, manifests, version
# digests, Stat) go on without one unanswered this long (4x the fastest, at least) once another
# has answered: a replica's failing answer was already treated so; a frozen one used to hold
# the read for the whole call deadline (10-30 s).
READ_TAIL_S = 1.0
_RECHECK_S = 0.5      # the delay shrinks once other stores answer: re-read it this often


class Tail:
    """One Push's view of its stores: how fast they answer, and the peers given up on."""

    def __init__(self, counters: dict[str, int] | None = None, *, floor: float | None = None,
                 counter: str = "store_spares", patient: bool = False,
                 on_stuck: Callable[[bytes], None] | None = None) -> None:
        self.fastest: float | None = None
        self.stuck: set[bytes] = set()
        self._on_stuck = on_stuck     # e.g. MeshNetwork.suspect: later Pushes rank it last
        self._counters = counters
        self._counter = counter
        self._floor = floor     # None: STORE_SPARE_S, read when used (tests shorten it)
        self._patient = patient

    def delay(self) -> float:
        """How long a call may go unanswered. ``patient`` (reads): until another peer has
        answered, indefinitely (the call's own deadline applies) — a read must not give up on
        every replica of a slow, lossy path at once; a store can still go to a spare."""
        floor = STORE_SPARE_S if self._floor is None else self._floor
        if self.fastest is None:
            return float("inf") if self._patient else 2 * floor
        return max(floor, 4 * self.fastest)

    def warning(self) -> list[str]:
        """For the PushResponse: the peers given up on, if any."""
        if not self.stuck:
            return []
        names = ", ".join(sorted(p.hex()[:16] for p in self.stuck))
        return [f"{len(self.stuck)} peer(s) left stores unanswered ({names}): what they were "
                "to keep went to spare peers"]

    async def call(self, peer: bytes, store: Callable[[], Awaitable[T]],
                   give_up: bool = True) -> T:
        """``store()`` (or any call) to ``peer``; UnavailableError if it goes unanswered past
        the delay (the call is cancelled and ``peer`` is skipped for the rest of the Push).
        ``give_up`` False: wait for the call's own deadline — a store with no distinct spare to
        go to would only double up on a holder, losing redundancy to a peer that may just be
        slow (a lossy path)."""
        if peer in self.stuck:
            raise UnavailableError(f"peer {peer.hex()[:16]} left a call unanswered before")
        if not give_up:
            return await store()
        loop = asyncio.get_running_loop()
        start = loop.time()
        task = asyncio.ensure_future(store())
        try:
            # another call of this Push may give the peer up first (stripes in flight to it)
            while (left := start + self.delay() - loop.time()) > 0 and peer not in self.stuck:
                done, _ = await asyncio.wait([task], timeout=min(left, _RECHECK_S))
                if done:
                    result = task.result()             # a failure raises its own error
                    took = loop.time() - start
                    self.fastest = took if self.fastest is None else min(self.fastest, took)
                    return result
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if peer not in self.stuck:
            self.stuck.add(peer)
            if self._on_stuck is not None:
                self._on_stuck(peer)
            if self._counters is not None:
                self._counters[self._counter] = self._counters.get(self._counter, 0) + 1
        raise UnavailableError(f"peer {peer.hex()[:16]} left a call unanswered for "
                               f"{loop.time() - start:.1f} s: going on without it")


async def on_spare(spares: list[bytes], tail: Tail, store: Callable[[bytes], Awaitable[object]],
                   what: str) -> bytes | None:
    """Store on the first of ``spares`` (consumed in order) that takes it; its node id, or None
    when none did."""
    while spares:
        peer = spares.pop(0)
        if peer in tail.stuck:
            continue
        try:
            await tail.call(peer, functools.partial(store, peer), give_up=bool(spares))
        except MeshError as exc:
            log.warning("%s not stored on spare %s: %s", what, peer.hex()[:16], exc)
            continue
        return peer
    return None

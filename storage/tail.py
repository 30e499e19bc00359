"""Long tails: a store left unanswered too long moves to a spare peer; a read goes on without.

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

Reads that ask every replica for the newest record use ``read_tail``: patient (never give up
before another replica answered), counted as ``replicas_cut``, and tied to the node's suspects
(storage/placement.py) both ways. A replica they cut is suspected, so the next Pushes rank it
last; a replica already suspected is still asked, but not waited for once a replica that is
not suspected has answered and none is still being asked (counted as ``replicas_skipped``).
So a frozen replica costs one read tail per SUSPECT_S, not one per read; a suspect that answers
a read in time is acquitted at once (a resumed replica is waited for again). With only suspects
asked, or none of the others answering, the read waits for the suspects as before: a read never
gives up on every replica.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol, TypeVar

from mesh.errors import MeshError, UnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")

STORE_SPARE_S = 3.0
# Reads that ask every replica for the newest record (document records, manifests, version
# digests, Stat) go on without one unanswered this long (4x the fastest, at least) once another
# has answered: a replica's failing answer was already treated so; a frozen one used to hold
# the read for the whole call deadline (10-30 s). See read_tail for suspects.
READ_TAIL_S = 1.0
_RECHECK_S = 0.5      # the delay shrinks once other stores answer: re-read it this often
_STALL_S = 0.05       # a wake-up later than this past its timeout: this process stalled
SKIPPED = "replicas_skipped"     # counter: suspects a read did not wait for


class Suspects(Protocol):
    """The node's peers that left a call unanswered lately (MeshNetwork, storage/placement.py)."""

    def suspect(self, node_id: bytes) -> None: ...

    def suspects(self) -> Collection[bytes]: ...

    def acquit(self, node_id: bytes) -> None: ...


class Tail:
    """One Push's (or read's) view of its calls: how fast they answer, the peers given up on."""

    def __init__(self, counters: dict[str, int] | None = None, *, floor: float | None = None,
                 counter: str = "store_spares", patient: bool = False,
                 on_stuck: Callable[[bytes], None] | None = None,
                 suspected: Callable[[], Collection[bytes]] | None = None,
                 on_answer: Callable[[bytes], None] | None = None) -> None:
        self.fastest: float | None = None
        self.stuck: set[bytes] = set()
        self._on_stuck = on_stuck     # e.g. MeshNetwork.suspect: later Pushes rank it last
        self._suspected = suspected   # e.g. MeshNetwork.suspects: not waited for (module doc)
        self._on_answer = on_answer   # e.g. MeshNetwork.acquit: it answered, so not frozen
        self._answered: set[bytes] = set()
        self._asking: dict[bytes, int] = {}          # peer -> calls in flight
        self._wake: asyncio.Future[None] | None = None   # set when a call ends (suspects only)
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
        the delay (the call is cancelled and ``peer`` is skipped for the rest of the Push), or,
        with ``suspected``, once ``peer`` is a suspect that ``_skippable`` says to leave out.
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
        self._asking[peer] = self._asking.get(peer, 0) + 1
        skipped = False
        try:
            # another call of this Push may give the peer up first (stripes in flight to it)
            while (left := start + self.delay() - loop.time()) > 0 and peer not in self.stuck:
                if skipped := self._skippable(peer):
                    break
                waits: list[asyncio.Future[Any]] = [task]
                if self._suspected is not None:    # re-check as soon as another call ends
                    waits.append(self._waker(loop))
                timeout, began = min(left, _RECHECK_S), loop.time()
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                # Woken this late, this process stalled (GC, a blocking call, a starved CPU):
                # the peer's answer may be unread in the socket. The stall is ours, not the
                # peer's, so it does not count; else one stall gives every holder up at once.
                start += max(0.0, loop.time() - began - timeout - _STALL_S)
                if task.done():
                    result = task.result()             # a failure raises its own error
                    took = loop.time() - start
                    self.fastest = took if self.fastest is None else min(self.fastest, took)
                    self._answered.add(peer)
                    if self._on_answer is not None:
                        self._on_answer(peer)
                    return result
        finally:
            self._asking[peer] -= 1
            if not self._asking[peer]:
                del self._asking[peer]
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if self._wake is not None:           # suspects waiting: re-check now
                if not self._wake.done():
                    self._wake.set_result(None)
                self._wake = None
        if peer not in self.stuck:
            self.stuck.add(peer)
            if not skipped and self._on_stuck is not None:
                self._on_stuck(peer)            # a skipped peer is a suspect already
            self._count(SKIPPED if skipped else self._counter)
        if skipped:
            raise UnavailableError(f"peer {peer.hex()[:16]} is a suspect and the others have "
                                   "answered: going on without it")
        raise UnavailableError(f"peer {peer.hex()[:16]} left a call unanswered for "
                               f"{loop.time() - start:.1f} s: going on without it")

    def _skippable(self, peer: bytes) -> bool:
        """``peer`` is suspected, a peer that is not has answered, and none is still being
        asked: waiting would only wait for the suspect (likely still frozen)."""
        if self._suspected is None:
            return False
        suspects = self._suspected()
        return peer in suspects and any(p not in suspects for p in self._answered) \
            and all(p in suspects for p in self._asking)

    def _waker(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        if self._wake is None:
            self._wake = loop.create_future()
        return self._wake

    def _count(self, name: str) -> None:
        if self._counters is not None:
            self._counters[name] = self._counters.get(name, 0) + 1


def read_tail(suspects: Suspects | None, counters: dict[str, int] | None = None, *,
              floor: float = READ_TAIL_S) -> Tail:
    """The tail of a read that asks every replica for the newest record (module docstring);
    ``suspects``: the node's network (None: a deep Stat, which waits as long as it takes)."""
    return Tail(counters, floor=floor, counter="replicas_cut", patient=True,
                on_stuck=suspects.suspect if suspects is not None else None,
                suspected=suspects.suspects if suspects is not None else None,
                on_answer=suspects.acquit if suspects is not None else None)


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

"""A TCP listener's receive budget: the memory incoming payloads may hold at once.

Why: tcp_rx allocates a payload's buffer at its header and keys are free, so anyone could
handshake, announce 64 MiB on each of 1,024 connections and trickle it: ~64 GiB. As HTTP/2's
flow-control windows and grpc's resource quota do, a payload over ``tcp_rx.OWN_BUFFER_ABOVE``
is charged to the listener from its header until the handler reads it:

- at most ``RxPolicy.total`` bytes at once, and ``per_peer`` for one peer: the node id of the
  session a frame's first 16 bytes name, else the connection's source address (a message
  alone always fits an idle budget or share, whatever its size);
- a message that does not fit waits, unread (its connection stops reading, so TCP's window
  holds the sender); freed budget goes to the waiter whose source address, then peer, holds
  least (first come among equals); a connection still waiting after ``max_wait_s`` is closed;
- a partial payload that received nothing in ``stall_s``, or less than ``min_rate`` bytes/s on
  average since its header, is dropped with its connection, and its budget returned.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mesh.channel.tcp_wire import CALL, MAX_PAYLOAD, STREAM

log = logging.getLogger(__name__)

RX_BUDGET = 256 * 2**20     # honest traffic measured ≤ 11.5 MiB per node (docs/channel.md)
PEER_SHARE = 2 * MAX_PAYLOAD    # one peer: two of the largest messages
MAX_WAIT_S = 60.0           # a message waiting for budget longer than this closes its connection
STALL_S = 30.0              # a partial payload receiving nothing for this long is dropped...
MIN_RATE = 64 * 1024        # ... as is one under this many bytes/s on average after STALL_S


@dataclass(frozen=True)
class RxPolicy:
    total: int = RX_BUDGET
    per_peer: int = PEER_SHARE
    max_wait_s: float = MAX_WAIT_S
    stall_s: float = STALL_S
    min_rate: float = MIN_RATE


class Charge(Protocol):
    """What a receiver asks of its account (tcp_rx.MessageReceiver.charge)."""

    def take(self, kind: int, size: int, head: bytes) -> bool: ...  # False: wait for granted()
    def give(self) -> None: ...                     # the oldest charged payload was read
    def close(self) -> None: ...


class Receiver(Protocol):
    """What an account needs of its connection (tcp_conn.Connection)."""

    def granted(self) -> None: ...
    def partial(self) -> int | None: ...
    def drop(self) -> None: ...


class RxBudget:
    """The listener's bytes held, per peer, and the messages waiting for room (in order)."""

    def __init__(self, policy: RxPolicy, peer_of: Callable[[bytes], bytes | None]) -> None:
        self.policy = policy
        self._peer_of = peer_of              # a live session's client node id, by session id
        self.held = 0
        self.max_held = 0
        self.waits = 0                        # messages that had to wait for room
        self.wait_closed = 0                  # connections closed after waiting max_wait_s
        self.stalled = 0                      # connections closed for a stalled payload
        self._by_peer: dict[str, int] = {}
        self._by_source: dict[str, int] = {}
        self._waiting: dict[Account, tuple[str, str, int]] = {}   # key, source, size; oldest first
        self._total_blocked = False           # the first waiter needs room in the total
        self._smallest: int | None = None     # the smallest waiting message (None: not known)

    def account(self, conn: Receiver, source: str) -> Account:
        return Account(self, conn, source)

    def key(self, kind: int, head: bytes, source: str) -> str:
        peer = self._peer_of(head) if kind in (CALL, STREAM) else None
        return source if peer is None else peer.hex()

    def status(self) -> dict[str, int]:
        return {"held": self.held, "max_held": self.max_held, "waits": self.waits,
                "wait_closed": self.wait_closed, "stalled": self.stalled,
                "waiting": len(self._waiting)}

    def _room(self, key: str, size: int) -> str:
        if self.held and self.held + size > self.policy.total:
            return "total"
        mine = self._by_peer.get(key, 0)
        if mine and mine + size > self.policy.per_peer:
            return "peer"
        return "fits"

    def try_take(self, account: Account, key: str, source: str, size: int) -> bool:
        """Charge now, or queue the account (False) to be granted later."""
        room = self._room(key, size)
        if room == "fits" and not self._total_blocked:
            self._charge(key, source, size)
            return True
        self.waits += 1
        self._waiting[account] = (key, source, size)
        if self._smallest is not None:
            self._smallest = min(self._smallest, size)
        self._total_blocked = self._total_blocked or room == "total"
        return False

    def unwait(self, account: Account) -> None:
        if account in self._waiting:
            self._unqueue(account)
            self._grant()

    def _unqueue(self, account: Account) -> None:
        if self._waiting.pop(account)[2] == self._smallest:
            self._smallest = None

    def refund(self, key: str, source: str, size: int) -> None:
        self.held -= size
        _add(self._by_peer, key, -size)
        _add(self._by_source, source, -size)
        self._grant()

    def _charge(self, key: str, source: str, size: int) -> None:
        self.held += size
        self.max_held = max(self.max_held, self.held)
        _add(self._by_peer, key, size)
        _add(self._by_source, source, size)

    def _grant(self) -> None:
        """Grant waiters, least-holding source and peer first; one short of total room stops
        the rest (nobody overtakes it), one over its peer's share is passed over (a peer at its
        share holds up nobody)."""
        self._total_blocked = False
        while self._waiting:
            if self._smallest is None:
                self._smallest = min(size for _, _, size in self._waiting.values())
            if self.held and self.held + self._smallest > self.policy.total:
                self._total_blocked = True        # nobody fits: no need to order them (O(1))
                return
            order = sorted(self._waiting.items(), key=lambda item: (
                self._by_source.get(item[1][1], 0), self._by_peer.get(item[1][0], 0)))
            for account, (key, source, size) in order:
                room = self._room(key, size)
                if room == "total":
                    self._total_blocked = True
                    return
                if room == "fits":
                    self._unqueue(account)
                    self._charge(key, source, size)
                    account.granted(key, source, size)
                    break                 # holdings changed: order again
            else:
                return                    # every waiter is over its peer's share


def _add(table: dict[str, int], key: str, size: int) -> None:
    left = table.get(key, 0) + size
    if left:
        table[key] = left
    else:
        del table[key]


class Account:
    """One connection's charges (tcp_rx's ``Charge``): payloads in arrival order."""

    def __init__(self, budget: RxBudget, conn: Receiver, source: str) -> None:
        self._budget = budget
        self._conn = conn
        self._source = source
        self._held: collections.deque[tuple[str, str, int]] = collections.deque()
        self._loop = asyncio.get_running_loop()
        self._wait_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._since = 0.0          # when the payload being received was charged
        self._mark = 0             # its bytes at the last check
        self._closed = False

    def take(self, kind: int, size: int, head: bytes) -> bool:
        """Room for a payload of ``size`` (False: the receiver waits for ``granted``)."""
        if self._closed:
            return False
        key = self._budget.key(kind, head, self._source)
        if self._budget.try_take(self, key, self._source, size):
            self._charged(key, size)
            return True
        self._wait_timer = self._loop.call_later(self._budget.policy.max_wait_s, self._expire)
        return False

    def granted(self, key: str, source: str, size: int) -> None:
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None
        self._charged(key, size)
        self._conn.granted()

    def give(self) -> None:
        """The oldest charged payload was read: its bytes go back."""
        if self._held:
            self._budget.refund(*self._held.popleft())

    def close(self) -> None:
        """The connection is done: everything it holds or waits for goes back."""
        self._closed = True
        for timer in (self._wait_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._wait_timer = self._stall_timer = None
        self._budget.unwait(self)
        while self._held:
            self._budget.refund(*self._held.popleft())

    def _charged(self, key: str, size: int) -> None:
        self._held.append((key, self._source, size))
        self._since, self._mark = self._loop.time(), 0
        if self._stall_timer is None:
            self._stall_timer = self._loop.call_at(self._since + self._budget.policy.stall_s,
                                                   self._check)

    def _check(self) -> None:
        """Is the payload being received still coming at an acceptable rate?"""
        self._stall_timer = None
        have = self._conn.partial()
        if have is None or self._closed:
            return                               # nothing partial: the next take re-arms
        policy, now = self._budget.policy, self._loop.time()
        due = self._since + policy.stall_s
        if due > now + 0.001:                    # charged after the last check: not due yet
            self._stall_timer = self._loop.call_at(due, self._check)
            return
        if have <= self._mark or have < policy.min_rate * (now - self._since):
            self._budget.stalled += 1
            log.warning("closed a TCP channel connection from %s: payload stalled at %d bytes "
                        "after %.0f s", self._source, have, now - self._since)
            self._drop()
            return
        self._mark = have
        self._stall_timer = self._loop.call_at(now + policy.stall_s, self._check)

    def _expire(self) -> None:
        self._wait_timer = None
        self._budget.wait_closed += 1
        log.warning("closed a TCP channel connection from %s: waited %.0f s for receive budget",
                    self._source, self._budget.policy.max_wait_s)
        self._drop()

    def _drop(self) -> None:
        self.close()
        self._conn.drop()

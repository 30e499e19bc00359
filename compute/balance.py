"""Choosing a provider: power of two choices over a decaying latency estimate.

The choice is the power of two choices (Mitzenmacher 2001): two random candidates, the lower
score wins, score = (published load + calls we have in flight to it + 1) × estimated latency.
How the latency is estimated matters as much as the choice, and follows Finagle's Peak-EWMA
balancer in two ways:

* A provider we have never heard from is *optimistic* (a near-zero latency while we have
  nothing in flight to it), so a new provider is tried on the next call. With a fixed prior instead, a caller
  whose first provider answered faster than the prior never tried the second one: sequential
  calls all went to one provider for as long as its calls stayed under the prior (found when a
  system test saw only one of two providers for 30 s).
* An estimate decays while it is not refreshed (halving every ``DECAY_HALF_LIFE_S``), so a
  provider that lost once (slower, or failed and was penalized) is probed again later instead
  of never; between providers that are in use the decay is negligible.

A retryable failure counts as ``FAILURE_PENALTY_S`` of latency, so a provider that answers
quickly with errors does not attract calls for being quick.

A long-running caller sees providers come and go: ``prune`` drops what it measured of the ones
it no longer has records of once they have been idle ``STATS_IDLE_S`` (by then the estimate has
decayed 2^-12, to nothing), and keeps at most ``MAX_STATS`` entries.
"""

from __future__ import annotations

import math
import random
from collections.abc import Container
from dataclasses import dataclass
from typing import Protocol, TypeVar

DECAY_HALF_LIFE_S = 5.0
SMOOTHING = 0.2                 # weight of a new sample in the moving average
UNKNOWN_IDLE_S = 1e-6           # an unheard-of provider: beats any measured one, load still ranks
UNKNOWN_BUSY_S = 0.002          # ... and once we have calls in flight to it
FAILURE_PENALTY_S = 0.1
STATS_IDLE_S = 60.0
MAX_STATS = 4096


class Candidate(Protocol):
    @property
    def node_id(self) -> bytes: ...
    @property
    def load(self) -> int: ...


T = TypeVar("T", bound=Candidate)


@dataclass
class LatencyStats:
    """What this caller measured of one provider."""

    latency_s: float | None = None      # None: no answer measured yet
    at: float = 0.0                     # monotonic time of the last sample
    inflight: int = 0
    failures: int = 0

    def estimate(self, now: float) -> float | None:
        """The smoothed latency, decayed by the time since it was last refreshed."""
        if self.latency_s is None:
            return None
        idle = max(0.0, now - self.at)
        return self.latency_s * math.exp2(-idle / DECAY_HALF_LIFE_S)

    def observe(self, elapsed: float, now: float) -> None:
        current = self.estimate(now)
        self.latency_s = elapsed if current is None else \
            (1 - SMOOTHING) * current + SMOOTHING * elapsed
        self.at = now

    def penalize(self, now: float) -> None:
        """A retryable failure: at least ``FAILURE_PENALTY_S`` until it decays or answers."""
        self.failures += 1
        current = self.estimate(now) or 0.0
        self.latency_s = max(current, FAILURE_PENALTY_S)
        self.at = now

    def score(self, load: int, now: float) -> float:
        latency = self.estimate(now)
        if latency is None:
            latency = UNKNOWN_BUSY_S if self.inflight else UNKNOWN_IDLE_S
        return (load + self.inflight + 1) * latency


def pick(targets: list[T], stats: dict[bytes, LatencyStats], rng: random.Random,
         now: float) -> T:
    """Power of two choices on (load + in flight + 1) × estimated latency."""
    if len(targets) == 1:
        return targets[0]
    a, b = rng.sample(targets, 2)
    none = LatencyStats()

    def score(t: T) -> float:
        return stats.get(t.node_id, none).score(t.load, now)

    return a if score(a) <= score(b) else b


def prune(stats: dict[bytes, LatencyStats], keep: Container[bytes], now: float, *,
          idle_s: float = STATS_IDLE_S, limit: int = MAX_STATS) -> int:
    """Drop the entries of providers not in ``keep`` idle over ``idle_s``, then the longest
    idle ones over ``limit``; never one with a call in flight. Returns how many went."""
    before = len(stats)
    for node_id in [k for k, s in stats.items()
                    if not s.inflight and k not in keep and now - s.at > idle_s]:
        del stats[node_id]
    if len(stats) > limit:
        idle = sorted((k for k, s in stats.items() if not s.inflight), key=lambda k: stats[k].at)
        for node_id in idle[:len(stats) - limit]:
            del stats[node_id]
    return before - len(stats)

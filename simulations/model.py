"""Parameters shared by the durability models: time units, churn, code, repair policy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

SECONDS_PER_MONTH = 365.25 * 86400 / 12
MONTHS_PER_YEAR = 12.0

LossModel = Literal["node", "poisson"]
Lifetime = Literal["exponential", "weibull"]


def node_leave_rate(monthly_churn: float) -> float:
    """Per-node departure rate (1/month) such that P(a node leaves within a month) = churn."""
    if not (0.0 <= monthly_churn < 1.0):
        raise ValueError(f"monthly churn must be in [0, 1), got {monthly_churn}")
    return -math.log1p(-monthly_churn)


@dataclass(frozen=True)
class Code:
    """k-of-n erasure code; replication r-fold is Code(1, r)."""

    k: int
    n: int

    def __post_init__(self) -> None:
        if not (1 <= self.k <= self.n):
            raise ValueError(f"need 1 <= k <= n, got {self.k}-of-{self.n}")

    @property
    def overhead(self) -> float:
        return self.n / self.k

    def label(self) -> str:
        return f"{self.n}x replication" if self.k == 1 else f"RS({self.k},{self.n - self.k})"


@dataclass(frozen=True)
class Repair:
    """Repair policy: when, how quickly, and how fast a file is rebuilt.

    A departed holder is considered gone `grace_s` after it left; a checker visits each file
    every `interval_s` (so the wait for the next visit is uniform on [0, interval)); if at most
    `k + threshold` fragments are then counted live, the repairer downloads k fragments and
    uploads the missing ones at `bandwidth_Bps`.  threshold = None disables repair.
    """

    threshold: int | None = None
    interval_s: float = 600.0
    grace_s: float = 900.0
    bandwidth_Bps: float = 10e6
    segment_bytes: float = 64 * 2**20

    @property
    def enabled(self) -> bool:
        return self.threshold is not None

    def transfer_s(self, code: Code, missing: int) -> float:
        """Seconds to download k fragments and upload `missing` ones through one node."""
        fragment = self.segment_bytes / code.k
        return fragment * (code.k + missing) / self.bandwidth_Bps

    def trigger_level(self, code: Code) -> int:
        """Repair starts once live fragments <= this level."""
        if self.threshold is None:
            return -1
        if not (0 <= self.threshold <= code.n - code.k - 1):
            raise ValueError(f"threshold must be in [0, n-k-1], got {self.threshold}")
        return code.k + self.threshold

    def delay_moments_months(self, code: Code) -> tuple[float, float]:
        """Mean and variance (months) of the time from the triggering loss to a repaired file."""
        missing = code.n - self.trigger_level(code)
        fixed = self.grace_s + self.transfer_s(code, missing)
        mean = (fixed + self.interval_s / 2) / SECONDS_PER_MONTH
        var = (self.interval_s / SECONDS_PER_MONTH) ** 2 / 12
        return mean, var

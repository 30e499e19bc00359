"""What the swarm measures: one lookup, one phase (its joins, lookups and counters) as a table
row, and the workers' counters at one moment."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Lookup:
    latency_s: float
    rpcs: int
    accuracy: float
    dead_returned: int
    returned: int


@dataclass
class Phase:
    name: str
    live: int
    lookups: list[Lookup] = field(default_factory=list)
    joins_s: list[float] = field(default_factory=list)
    join_rpcs: list[int] = field(default_factory=list)
    join_known: list[int] = field(default_factory=list)  # peers known right after joining
    late: int = 0
    refused: int = 0
    timeouts: int = 0  # joins or lookups that had not returned after --op-timeout
    cpu: float = 0.0  # worker CPU seconds per wall second, summed over workers
    known: float = 0.0  # live peers a node knows, mean over nodes, after the phase

    def row(self, k: int = 20) -> dict[str, str]:
        lat = sorted(x.latency_s for x in self.lookups)
        acc = [x.accuracy for x in self.lookups]
        joins = sorted(self.joins_s)
        dash = "–"
        return {
            "phase": self.name,
            "live": str(self.live),
            "join ms median / p95": (
                f"{1e3 * statistics.median(joins):.0f} / {1e3 * _q(joins, 0.95):.0f}"
                if joins
                else dash
            ),
            "join RPCs": f"{statistics.median(self.join_rpcs):.0f}" if self.join_rpcs else dash,
            "joins with < k peers": (
                str(sum(1 for x in self.join_known if x < k)) if self.join_known else dash
            ),
            "lookup ms median / p95 / max": (
                f"{1e3 * _q(lat, 0.5):.0f} / {1e3 * _q(lat, 0.95):.0f} / {1e3 * lat[-1]:.0f}"
                if lat
                else dash
            ),
            "RPCs / lookup": (
                f"{statistics.median(x.rpcs for x in self.lookups):.0f}" if self.lookups else dash
            ),
            "accuracy mean / min": (
                f"{100 * statistics.fmean(acc):.1f}% / {100 * min(acc):.0f}%" if acc else dash
            ),
            "exact top-k": f"{100 * sum(a == 1.0 for a in acc) / len(acc):.0f}%" if acc else dash,
            "dead returned": (
                f"{statistics.fmean(x.dead_returned for x in self.lookups):.2f}"
                if self.lookups
                else dash
            ),
            "peers known": f"{self.known:.0f}",
            "timed out": str(self.timeouts),
            "late answers": str(self.late),
            "refused": str(self.refused),
            "worker CPU": f"{100 * self.cpu:.0f}%",
        }


def _q(xs: list[float], f: float) -> float:
    return xs[min(len(xs) - 1, int(f * len(xs)))] if xs else float("nan")


@dataclass(frozen=True)
class Stats:
    late: int
    refused: int
    cpu_s: float
    known: float
    wall_s: float

    def cpu_share(self, earlier: Stats) -> float:
        return (self.cpu_s - earlier.cpu_s) / max(self.wall_s - earlier.wall_s, 1e-9)


def table(phases: list[Phase], k: int = 20) -> str:
    rows = [p.row(k) for p in phases]
    head = list(rows[0])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]
    return "\n".join(out)

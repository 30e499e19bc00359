"""CPU seconds of processes from /proc: the load-robust figure beside each wall-clock one.

On this shared 2-core machine, wall time moves with whatever else runs; the CPU an operation
costs, summed over every process involved, moves much less (and 2 cores / CPU per op is the
throughput ceiling on an idle machine).
"""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants (live ones, plus reaped children)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total = sum(int(x) for x in fields[11:15]) / _TICK
        children: list[int] = []
        for task in os.listdir(f"/proc/{pid}/task"):  # children of every thread
            try:
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    children += [int(x) for x in fh.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return total + sum(tree_cpu(c) for c in children)


def self_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` alone (all its threads, no children)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return sum(int(x) for x in fields[11:13]) / _TICK


def everything() -> float:
    """This process and all its descendants."""
    return tree_cpu(os.getpid())

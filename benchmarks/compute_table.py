"""The compute benchmark's table: each path's p50/p99 and calls/s beside the direct plain gRPC
row of the same run, and the CPU per call that bounds calls/s on an idle machine."""

from __future__ import annotations

import argparse
import os
import platform
import time

Row = tuple[str, list[float] | None, float]   # label, sequential latencies (s) or None, calls/s


def percentile(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(q * len(data)))]


def table(rows: list[Row], ns: argparse.Namespace, cpu_per_call: list[float],
          cpu_split: list[str], notes: list[str]) -> str:
    """The markdown section appended to RESULTS.md; the CPU lists have one entry per
    concurrent row, in order."""
    base = next(r for r in rows if r[1] is not None)
    base_p50 = percentile(base[1] or [], 0.5)
    base_rate = rows[1][2]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    lines = [f"### Remote function calls, {stamp}",
             f"`{platform.machine()}`, nproc {os.cpu_count()}, Python {platform.python_version()}, "
             f"{ns.n} sequential calls per row, {ns.concurrent} calls by {ns.width} concurrent "
             f"callers, load average {load:.1f} (shared machine); trivial `add(a, b)`; "
             "ratio = p50 (or calls/s) relative to the direct plain gRPC row of the same run.",
             "CPU/call = CPU seconds of every process involved (bench client, servers, nodes, "
             "zygote, sandbox workers) over the concurrent row, per call; 2 cores / CPU per "
             "call = the calls/s ceiling on an otherwise idle machine.",
             "CPU split = the same CPU per call (ms) process by process (a node: its own "
             "process; sandbox procs: the zygote and workers).",
             "", "| path | p50 | p99 | calls/s | × direct | CPU/call | ceiling on 2 idle cores "
             "| CPU split |", "|---|---|---|---|---|---|---|---|"]
    cpu, split = iter(cpu_per_call), iter(cpu_split)
    for label, seq, rate in rows:
        if seq is not None:
            p50 = percentile(seq, 0.5)
            lines.append(f"| {label} | {p50 * 1000:.2f} ms | {percentile(seq, 0.99) * 1000:.2f} ms | "
                         f"{rate:.0f} | {p50 / base_p50:.1f}× latency | | | |")
        else:
            per = next(cpu, 0.0)
            lines.append(f"| {label} | | | {rate:.0f} | {rate / base_rate:.2f}× throughput | "
                         f"{per * 1000:.2f} ms | {2 / per if per else 0:.0f}/s | "
                         f"{next(split, '')} |")
    lines += ["", *notes] if notes else []
    text = "\n".join(lines) + "\n"
    return text

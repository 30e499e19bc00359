"""Sandbox call latency and throughput: ``python -m benchmarks.sandbox_bench``.

Measures the whole SandboxPool.run path of a trivial function (fresh single-use worker per
call, all layers on), the CPU it costs per call in the node, the zygote and the workers,
and two baselines in the same run: a plain in-process call and a fresh ``python -I -S``
process per call. Prints a Markdown section (load average included: the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from compute.sandbox import SandboxPool

SOURCE = "def add(a, b):\n    return a + b\n"
# A deployed-module-sized source (~250 lines): compiled once by the zygote, not per call.
MODULE = SOURCE + "".join(
    f"\ndef f{i}(data, k={i}):\n    out = {{}}\n    for key, value in data.items():\n"
    f"        out[key] = [v * k for v in value if v % 2]\n    return out\n" for i in range(40))
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> tuple[float, float, int, int]:
    """(own CPU s, reaped children's CPU s, own page faults, reaped children's page faults)
    of a process. Faults do not depend on the machine's load: the steadiest figure here."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return ((int(fields[11]) + int(fields[12])) / _TICK,
            (int(fields[13]) + int(fields[14])) / _TICK, int(fields[7]), int(fields[8]))


def _first_child(pid: int) -> int:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return int(fh.read().split()[0])


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _sequential(pool: SandboxPool, n: int, source: str = SOURCE) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await pool.run(source, "add", [i, 1], {})
        out.append(time.perf_counter() - t0)
    return out


async def _concurrent(pool: SandboxPool, n: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await pool.run(SOURCE, "add", [i, 1], {})

    t0 = time.perf_counter()
    await asyncio.gather(*[one(i) for i in range(n)])
    return time.perf_counter() - t0


def _fresh_process(n: int) -> list[float]:
    out = []
    code = "import json,sys; print(json.dumps(sum(json.loads(sys.argv[1]))))"
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-S", "-c", code, "[1, 2]"], check=True,
                       capture_output=True, env={})
        out.append(time.perf_counter() - t0)
    return out


def _direct(n: int) -> list[float]:
    env: dict[str, Any] = {}
    exec(SOURCE, env)  # noqa: S102 - our own constant, the in-process baseline
    add = env["add"]
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        add(i, 1)
        out.append(time.perf_counter() - t0)
    return out


async def run(calls: int, concurrency: int, size: int) -> str:
    pool = SandboxPool(size=size)
    await pool.start()
    try:
        zygote = pool.stats()["zygote_pid"]
        init = _first_child(zygote)  # pid 1 of the sandbox pid namespace
        await _sequential(pool, 200)  # warm-up
        seq = await _sequential(pool, calls)
        await _sequential(pool, 50, MODULE)
        mod = await _sequential(pool, calls // 2, MODULE)
        host0, (init0, kids0, iflt0, kflt0) = _self_cpu(), _proc_cpu(init)
        elapsed = await _concurrent(pool, calls * 3, concurrency)
        await asyncio.sleep(0.3)  # let the last workers be reaped
        host1, (init1, kids1, iflt1, kflt1) = _self_cpu(), _proc_cpu(init)
        layers = pool.stats()["layers"]
    finally:
        await pool.stop()
    n = calls * 3
    fresh = _fresh_process(20)
    direct = _direct(10000)
    load = os.getloadavg()
    ms = 1e3
    return "\n".join([
        f"### Sandbox call path, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"`{platform.machine()}`, nproc {os.cpu_count()}, Python {platform.python_version()}, "
        f"pool size {size}, load average {load[0]:.2f} {load[1]:.2f} (shared machine); "
        f"layers: {', '.join(k for k, v in layers.items() if v)}.",
        "",
        "| path | p50 ms | p99 ms | calls/s |",
        "|---|---|---|---|",
        f"| SandboxPool.run, sequential ({calls} calls) | {_pct(seq, .5) * ms:.2f} | "
        f"{_pct(seq, .99) * ms:.2f} | {1 / statistics.mean(seq):.0f} |",
        f"| SandboxPool.run, {concurrency} concurrent ({n} calls) | | | {n / elapsed:.0f} |",
        f"| same, {len(MODULE.splitlines())}-line module, sequential ({len(mod)} calls) | "
        f"{_pct(mod, .5) * ms:.2f} | {_pct(mod, .99) * ms:.2f} | {1 / statistics.mean(mod):.0f} |",
        f"| fresh `python -I -S` process per call (20) | {_pct(fresh, .5) * ms:.1f} | "
        f"{_pct(fresh, .99) * ms:.1f} | {1 / statistics.mean(fresh):.0f} |",
        f"| direct in-process call (no isolation) | {_pct(direct, .5) * 1e6:.2f} µs | "
        f"{_pct(direct, .99) * 1e6:.2f} µs | |",
        "",
        f"CPU per sandboxed call (concurrent run): node {(host1 - host0) / n * ms:.2f} ms, "
        f"zygote {(init1 - init0) / n * ms:.2f} ms, worker (fork to exit) "
        f"{(kids1 - kids0) / n * ms:.2f} ms. Page faults per call: zygote "
        f"{(iflt1 - iflt0) / n:.0f}, worker {(kflt1 - kflt0) / n:.0f}.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=8, help="pre-forked workers")
    ns = parser.parse_args(argv)
    print(asyncio.run(run(ns.calls, ns.concurrency, ns.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A swarm of real DHT nodes on 127.0.0.1: join time, lookup latency/RPCs, accuracy, churn.

    python -m simulations.swarm                 # 1,000 nodes, 10% and 30% churn, plots
    python -m simulations.swarm --nodes 300     # when other jobs load the machine
    python -m simulations.swarm --nodes 200 --backend kademlia

Every node is the project's `mesh.dht.Membership` (or, if that package is not importable,
stock kademlia 2.2.3 `Server`, labelled FALLBACK in the output) with its own UDP socket
(port 0), hosted by --procs worker processes (asyncio, one loop each); this process only
coordinates.  Accuracy of a lookup = the share of the true k XOR-closest live nodes (brute
force over the swarm) that it returned.  Churn x%: x% of the nodes crash (socket closed, no
goodbye) and as many fresh nodes join; lookups are measured right after, and again after
--settle seconds.  "late answers" counts responses that arrived after their RPC had timed
out; many of them mean the host processes were saturated, not the protocol slow.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from simulations.swarm_coordinator import Member, Swarm
from simulations.swarm_nodes import mesh_fingerprint
from simulations.swarm_phases import Lookup, Phase, Stats, table
from simulations.swarm_worker import raise_fd_limit

DEFAULT_OUT = Path(__file__).resolve().parent / "out"

__all__ = ["Lookup", "Member", "Phase", "Stats", "Swarm", "main", "parse_args", "run", "table"]


async def run(ns: argparse.Namespace) -> tuple[str, list[Phase]]:
    swarm = Swarm(ns)
    try:
        return await _scenario(swarm, ns)
    finally:
        await swarm.close()


async def _scenario(swarm: Swarm, ns: argparse.Namespace) -> tuple[str, list[Phase]]:
    t0 = time.perf_counter()
    phases: list[Phase] = []
    s0 = await swarm.stats()
    join = Phase("no churn", 0)
    await swarm.join(ns.nodes, join)
    s1 = await swarm.stats()
    log(f"backend: {swarm.label}")
    log(
        f"{ns.nodes} nodes joined in {time.perf_counter() - t0:.1f} s "
        f"(worker CPU {100 * s1.cpu_share(s0):.0f}%)"
    )
    await asyncio.sleep(ns.settle)
    join.live = len(swarm.live)
    await swarm.measure(join)
    phases.append(join)
    log(f"baseline measured at {time.perf_counter() - t0:.1f} s")
    for frac in ns.churn:
        count = round(frac * len(swarm.live))
        await swarm.crash(count)
        right = Phase(f"{100 * frac:g}% churn, at once", 0)
        t1 = time.perf_counter()
        await swarm.join(count, right)
        log(f"{count} crashed, {count} joined in {time.perf_counter() - t1:.1f} s")
        right.live = len(swarm.live)
        await swarm.measure(right)
        phases.append(right)
        await asyncio.sleep(ns.settle)
        later = Phase(f"{100 * frac:g}% churn, +{ns.settle:g} s", len(swarm.live))
        await swarm.measure(later)
        phases.append(later)
        log(f"{100 * frac:g}% churn measured at {time.perf_counter() - t0:.1f} s")
    return swarm.label, phases


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m simulations.swarm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--nodes", type=int, default=1000, help="~1.5 min on a quiet 2-core machine")
    ap.add_argument("--procs", type=int, default=2, help="worker processes hosting the nodes")
    ap.add_argument("--backend", choices=["auto", "mesh", "kademlia"], default="auto")
    ap.add_argument("--lookups", type=int, default=100, help="lookups measured per phase")
    ap.add_argument("--k", type=int, default=20, help="closest peers asked for")
    ap.add_argument("--churn", type=float, nargs="*", default=[0.10, 0.30])
    ap.add_argument("--join-concurrency", type=int, default=40)
    ap.add_argument("--lookup-concurrency", type=int, default=40)
    ap.add_argument("--rpc-timeout", type=float, default=1.0, help="seconds (both backends)")
    ap.add_argument(
        "--sweep-interval",
        type=float,
        default=60.0,
        help="mesh.dht liveness sweep period, seconds (the swarm shares 2 cores among all nodes)",
    )
    ap.add_argument(
        "--settle", type=float, default=5.0, help="seconds between churn and re-measure"
    )
    ap.add_argument(
        "--op-timeout",
        type=float,
        default=30.0,
        help="give up on a join or lookup after this many seconds (counted as timed out)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    ns = parse_args(argv)
    raise_fd_limit(200)
    t0 = time.perf_counter()
    source = mesh_fingerprint()  # taken before the workers import it
    load0 = os.getloadavg()[0]
    label, phases = asyncio.run(run(ns))
    load1 = os.getloadavg()[0]
    if "FALLBACK" in label:
        source = "stock kademlia 2.2.3"
    text = (
        f"backend: {label} ({source})\n"
        f"nodes: {ns.nodes} in {ns.procs} worker process(es), seed {ns.seed}, k={ns.k}, "
        f"rpc timeout {ns.rpc_timeout:g} s, sweep interval {ns.sweep_interval:g} s\n"
        f"machine load average {load0:.1f} at start, {load1:.1f} at end, {os.cpu_count()} CPUs "
        "(other jobs' load starves the workers: low worker CPU then means waiting for a CPU)\n\n"
        f"{table(phases, ns.k)}\n\n(total {time.perf_counter() - t0:.0f} s)\n"
    )
    print(text)
    from simulations import swarm_plots

    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "swarm.md").write_text(text)
    swarm_plots.plot(phases, label, ns.out)


if __name__ == "__main__":
    main()

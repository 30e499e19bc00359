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
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from simulations.swarm_nodes import mesh_fingerprint
from simulations.swarm_worker import WorkerHandle, raise_fd_limit

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


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


@dataclass
class Member:
    index: int
    node_id: bytes
    port: int
    worker: WorkerHandle


class Swarm:
    """The coordinator's view: which nodes are live, where they run; brute-force truth."""

    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns
        self.rng = random.Random(ns.seed)
        config = {
            "backend": ns.backend,
            "seed": ns.seed,
            "rpc_timeout": ns.rpc_timeout,
            "sweep_interval": ns.sweep_interval,
            "op_timeout": ns.op_timeout,
            "fds": 2 * ns.nodes // ns.procs + 200,
        }
        self.workers = [WorkerHandle(config) for _ in range(ns.procs)]
        self.next_index = 0
        self.live: dict[bytes, Member] = {}
        self.joined: list[Member] = []
        self.label = ""
        self.includes_self = True

    async def join(self, count: int, phase: Phase) -> None:
        """Start `count` nodes and join each through a random node already in the swarm."""
        sem = asyncio.Semaphore(self.ns.join_concurrency)

        async def one(index: int) -> None:
            async with sem:
                worker = self.workers[index % len(self.workers)]
                node_id, port, self.label = await worker.call("start", index)
                self.includes_self = "FALLBACK" not in self.label
                member = Member(index, node_id, port, worker)
                if self.joined:
                    via = self.rng.choice(sorted(self.joined, key=lambda m: m.index))
                    dt, rpcs, known = await worker.call("bootstrap", index, via.port)
                    if dt < 0:
                        phase.timeouts += 1
                    else:
                        phase.joins_s.append(dt)
                    phase.join_rpcs.append(rpcs)
                    phase.join_known.append(known)
                self.live[node_id] = member
                self.joined.append(member)

        indices = list(range(self.next_index, self.next_index + count))
        self.next_index += count
        if not self.joined:  # the very first node must be up before anyone can join
            await one(indices.pop(0))
        await asyncio.gather(*(one(i) for i in indices))

    def truth(self, key: bytes, k: int, querier: Member) -> set[bytes]:
        k_int = int.from_bytes(key, "big")
        ids = [i for i in self.live if self.includes_self or i != querier.node_id]
        return set(sorted(ids, key=lambda i: int.from_bytes(i, "big") ^ k_int)[:k])

    async def measure(self, phase: Phase) -> None:
        k = self.ns.k
        ids = sorted(self.live)
        stats0 = await self.stats()

        async def one(querier: Member, key: bytes) -> Lookup:
            truth = self.truth(key, k, querier)
            dt, rpcs, got = await querier.worker.call("closest", querier.index, key, k)
            if dt < 0:
                phase.timeouts += 1
                dt = self.ns.op_timeout
            return Lookup(
                latency_s=dt,
                rpcs=rpcs,
                accuracy=len(truth & set(got)) / len(truth),
                dead_returned=sum(1 for g in got if g not in self.live),
                returned=len(got),
            )

        # Distinct queriers (while there are enough), so RPC counts of concurrent lookups
        # never mix; a sliding window of --lookup-concurrency lookups in flight.
        count = self.ns.lookups
        queriers = [self.live[i] for i in self.rng.sample(ids, min(count, len(ids)))]
        queriers += [self.live[self.rng.choice(ids)] for _ in range(count - len(queriers))]
        keys = [self.rng.randbytes(20) for _ in range(count)]
        sem = asyncio.Semaphore(self.ns.lookup_concurrency)

        async def windowed(q: Member, key: bytes) -> Lookup:
            async with sem:
                return await one(q, key)

        phase.lookups += await asyncio.gather(
            *(windowed(q, key) for q, key in zip(queriers, keys, strict=True))
        )
        stats1 = await self.stats()
        phase.late = stats1.late - stats0.late
        phase.refused = stats1.refused - stats0.refused
        phase.cpu = stats1.cpu_share(stats0)
        phase.known = stats1.known

    async def stats(self) -> Stats:
        """Counters summed over workers, and the wall clock."""
        got = await asyncio.gather(*(w.call("stats") for w in self.workers))
        return Stats(
            late=sum(g[0] for g in got),
            refused=sum(g[1] for g in got),
            cpu_s=sum(g[2] for g in got),
            known=statistics.fmean(g[3] for g in got),
            wall_s=time.perf_counter(),
        )

    async def crash(self, count: int) -> None:
        """Stop `count` random live nodes at once: sockets closed, no goodbye."""
        members = [self.live.pop(v) for v in self.rng.sample(sorted(self.live), count)]
        for m in members:
            self.joined.remove(m)
        await asyncio.gather(*(m.worker.call("stop", m.index) for m in members))

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self.workers))


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


def table(phases: list[Phase], k: int = 20) -> str:
    rows = [p.row(k) for p in phases]
    head = list(rows[0])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]
    return "\n".join(out)


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

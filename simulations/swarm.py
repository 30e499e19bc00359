"""A swarm of real DHT nodes on 127.0.0.1: join time, lookup latency/RPCs, accuracy, churn.

    python -m simulations.swarm                 # 1,000 nodes, 10% and 30% churn, plots
    python -m simulations.swarm --nodes 200 --backend kademlia

Every node is the project's `mesh.dht.Membership` (or, if that package is not importable,
stock kademlia 2.2.3 `Server`, labelled FALLBACK in the output) on its own UDP socket (port 0),
all in one asyncio process.  Accuracy of a lookup = the share of the true k XOR-closest live
nodes (brute force over the swarm) that it returned.  Churn x%: x% of the nodes crash (socket
closed, no goodbye) and as many fresh nodes join; lookups are measured right after, and again
after --settle seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from simulations.swarm_nodes import HOST, SwarmNode, node_class

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def raise_fd_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(f"need ~{needed} file descriptors, RLIMIT_NOFILE hard limit is {soft}")
    return soft


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

    def row(self) -> dict[str, str]:
        lat = sorted(x.latency_s for x in self.lookups)
        acc = [x.accuracy for x in self.lookups]

        def q(xs: list[float], f: float) -> float:
            return xs[min(len(xs) - 1, int(f * len(xs)))] if xs else float("nan")

        return {
            "phase": self.name,
            "live nodes": str(self.live),
            "join ms (median / p95)": (
                f"{1e3 * statistics.median(self.joins_s):.0f} / {1e3 * q(sorted(self.joins_s), 0.95):.0f}"
                if self.joins_s
                else "–"
            ),
            "join RPCs (median)": f"{statistics.median(self.join_rpcs):.0f}"
            if self.join_rpcs
            else "–",
            "lookup ms (median / p95 / max)": (
                f"{1e3 * q(lat, 0.5):.0f} / {1e3 * q(lat, 0.95):.0f} / {1e3 * lat[-1]:.0f}"
                if lat
                else "–"
            ),
            "RPCs/lookup (median)": f"{statistics.median(x.rpcs for x in self.lookups):.0f}"
            if self.lookups
            else "–",
            "accuracy (mean / min)": f"{100 * statistics.fmean(acc):.1f}% / {100 * min(acc):.0f}%"
            if acc
            else "–",
            "exact top-k": f"{100 * sum(a == 1.0 for a in acc) / len(acc):.1f}%" if acc else "–",
            "dead in results (mean)": f"{statistics.fmean(x.dead_returned for x in self.lookups):.2f}"
            if self.lookups
            else "–",
        }


class Swarm:
    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns
        self.rng = random.Random(ns.seed)
        self.cls = node_class(ns.backend)
        self.next_index = 0
        self.live: dict[bytes, SwarmNode] = {}
        self.joined: list[SwarmNode] = []

    def new_node(self) -> SwarmNode:
        node = self.cls(self.next_index, self.ns.seed, self.ns.rpc_timeout, self.ns.sweep_interval)
        self.next_index += 1
        return node

    async def join(self, count: int, phase: Phase) -> None:
        """Start `count` nodes and join each through a random node already in the swarm."""
        sem = asyncio.Semaphore(self.ns.join_concurrency)

        async def one(node: SwarmNode) -> None:
            async with sem:
                await node.start()
                if self.joined:
                    via = self.rng.choice(self.joined)
                    before, t0 = node.requests, time.perf_counter()
                    await node.bootstrap([(HOST, via.port)])
                    phase.joins_s.append(time.perf_counter() - t0)
                    phase.join_rpcs.append(node.requests - before)
                self.live[node.node_id] = node
                self.joined.append(node)

        nodes = [self.new_node() for _ in range(count)]
        if not self.joined:  # the very first node must be up before anyone can join
            await one(nodes.pop(0))
        await asyncio.gather(*(one(n) for n in nodes))

    def truth(self, key: bytes, k: int, querier: SwarmNode) -> list[bytes]:
        k_int = int.from_bytes(key, "big")
        ids = [i for i in self.live if querier.includes_self or i != querier.node_id]
        return sorted(ids, key=lambda i: int.from_bytes(i, "big") ^ k_int)[:k]

    async def measure(self, phase: Phase) -> None:
        k = self.ns.k
        ids = list(self.live)
        batch = min(self.ns.lookup_concurrency, len(ids))

        async def one(querier: SwarmNode, key: bytes) -> Lookup:
            truth = set(self.truth(key, k, querier))
            before, t0 = querier.requests, time.perf_counter()
            got = await querier.closest(key, k)
            dt = time.perf_counter() - t0
            return Lookup(
                latency_s=dt,
                rpcs=querier.requests - before,
                accuracy=len(truth & set(got)) / len(truth),
                dead_returned=sum(1 for g in got if g not in self.live),
                returned=len(got),
            )

        done = 0
        while done < self.ns.lookups:
            n = min(batch, self.ns.lookups - done)
            queriers = [self.live[i] for i in self.rng.sample(ids, n)]
            keys = [self.rng.randbytes(20) for _ in range(n)]
            phase.lookups += await asyncio.gather(
                *(one(q, key) for q, key in zip(queriers, keys, strict=True))
            )
            done += n

    async def crash(self, count: int) -> None:
        victims = self.rng.sample(list(self.live), count)
        for v in victims:
            node = self.live.pop(v)
            self.joined.remove(node)
            await node.stop()

    async def close(self) -> None:
        for node in list(self.live.values()):
            await node.stop()
        self.live.clear()


async def run(ns: argparse.Namespace) -> tuple[str, list[Phase]]:
    swarm = Swarm(ns)
    label = swarm.cls.label
    log(f"backend: {label}")
    phases: list[Phase] = []
    t0 = time.perf_counter()
    join = Phase("join", 0)
    await swarm.join(ns.nodes, join)
    join.live = len(swarm.live)
    log(f"{ns.nodes} nodes joined in {time.perf_counter() - t0:.1f} s")
    await asyncio.sleep(ns.settle)
    base = Phase("no churn", len(swarm.live), joins_s=join.joins_s, join_rpcs=join.join_rpcs)
    await swarm.measure(base)
    phases.append(base)
    log(f"baseline measured at {time.perf_counter() - t0:.1f} s")
    for frac in ns.churn:
        count = round(frac * len(swarm.live))
        await swarm.crash(count)
        right = Phase(f"{100 * frac:g}% churn, at once", 0)
        await swarm.join(count, right)
        right.live = len(swarm.live)
        await swarm.measure(right)
        phases.append(right)
        await asyncio.sleep(ns.settle)
        later = Phase(f"{100 * frac:g}% churn, +{ns.settle:g} s", len(swarm.live))
        await swarm.measure(later)
        phases.append(later)
        log(f"{100 * frac:g}% churn measured at {time.perf_counter() - t0:.1f} s")
    await swarm.close()
    return label, phases


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def table(phases: list[Phase]) -> str:
    rows = [p.row() for p in phases]
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
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--backend", choices=["auto", "mesh", "kademlia"], default="auto")
    ap.add_argument("--lookups", type=int, default=200, help="lookups measured per phase")
    ap.add_argument("--k", type=int, default=20, help="closest peers asked for")
    ap.add_argument("--churn", type=float, nargs="*", default=[0.10, 0.30])
    ap.add_argument("--join-concurrency", type=int, default=10)
    ap.add_argument("--lookup-concurrency", type=int, default=20)
    ap.add_argument("--rpc-timeout", type=float, default=1.0, help="seconds (both backends)")
    ap.add_argument(
        "--sweep-interval", type=float, default=10.0, help="mesh.dht liveness sweep period, seconds"
    )
    ap.add_argument(
        "--settle", type=float, default=5.0, help="seconds between churn and re-measure"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    ns = parse_args(argv)
    raise_fd_limit(ns.nodes * 2 + 100)
    t0 = time.perf_counter()
    label, phases = asyncio.run(run(ns))
    text = f"backend: {label}\nnodes: {ns.nodes}, seed {ns.seed}, k={ns.k}, rpc timeout {ns.rpc_timeout:g} s\n\n{table(phases)}\n"
    text += f"\n(total {time.perf_counter() - t0:.0f} s)\n"
    print(text)
    from simulations import swarm_plots

    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "swarm.md").write_text(text)
    swarm_plots.plot(phases, label, ns.out)


if __name__ == "__main__":
    main()

"""Mesh membership benchmark: tw-mesh ``Membership`` beside stock kademlia 2.2.3, same run.

Run: ``.venv/bin/python -m benchmarks.mesh_bench [--sizes 50 200] [--lookups 50]``.
For each N, both implementations start N nodes in this process on 127.0.0.1 (port 0), join
them one by one through a random earlier node, then run random-key lookups of the 20 closest
nodes from distinct askers (``--concurrency`` at a time): tw-mesh ``closest_peers(key, 20)``,
stock ``NodeSpiderCrawl`` as its ``set`` uses it. Then ``--kill`` of the nodes are stopped
without goodbye (socket closed) and the lookups are repeated at once. Accuracy is the share of
the true top 20 (brute force over live nodes; stock excludes the asker, as its crawl does)
that a lookup returned. Appends a table to benchmarks/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import platform
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kademlia.crawling import NodeSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from mesh.dht import Membership
from mesh.identity import Identity
from proto import mesh_pb2

RESULTS = Path(__file__).with_name("RESULTS.md")
TOP = 20


class CountingProtocol(KademliaProtocol):  # type: ignore[misc]
    """Stock 2.2.3 protocol with an RPC counter (instrumentation only)."""

    rpc_count = 0

    async def call_find_node(self, node_to_ask: Any, node_to_find: Any) -> Any:
        self.rpc_count += 1
        return await super().call_find_node(node_to_ask, node_to_find)


class StockServer(Server):  # type: ignore[misc]
    protocol_class = CountingProtocol


@dataclass
class Phase:
    impl: str
    n: int
    phase: str
    join_ms: float
    latencies: list[float]
    rpcs: list[int]
    accuracy: list[float]
    dead_returned: list[int]
    cpu_s: float
    load: float


def distance(key: bytes, node_id: bytes) -> int:
    return int.from_bytes(key, "big") ^ int.from_bytes(node_id, "big")


class Harness:
    """Uniform view of one mesh (tw-mesh or stock) for the benchmark."""

    def __init__(self, impl: str, n: int, rng: random.Random, sweep: float) -> None:
        self.impl, self.n, self.rng, self.sweep = impl, n, rng, sweep
        self.nodes: list[Any] = []
        self.alive: list[bool] = []

    def node_id(self, node: Any) -> bytes:
        return node.node_id if self.impl == "tw-mesh" else node.node.id  # type: ignore[no-any-return]

    def port(self, node: Any) -> int:
        return node.port if self.impl == "tw-mesh" else node.transport.get_extra_info("sockname")[1]  # type: ignore[no-any-return]

    async def join(self) -> float:
        spent = 0.0
        for i in range(self.n):
            if self.impl == "tw-mesh":
                node: Any = Membership(Identity.generate(), host="127.0.0.1", port=0,
                                       sweep_interval=self.sweep,
                                       peer_record_factory=mesh_pb2.PeerRecord)
                await node.start()
            else:
                node = StockServer()
                await node.listen(0, "127.0.0.1")
            if i:
                seed = self.nodes[self.rng.randrange(i)]
                start = time.perf_counter()
                await node.bootstrap([("127.0.0.1", self.port(seed))])
                spent += time.perf_counter() - start
            self.nodes.append(node)
            self.alive.append(True)
        return 1000 * spent / max(1, self.n - 1)

    def rpc_count(self, node: Any) -> int:
        return node.server.protocol.rpc_count if self.impl == "tw-mesh" else node.protocol.rpc_count  # type: ignore[no-any-return]

    async def lookup(self, node: Any, key: bytes) -> list[bytes]:
        if self.impl == "tw-mesh":
            return [r.node_id for r in await node.closest_peers(key, TOP)]
        target = Node(key)
        nearest = node.protocol.router.find_neighbors(target)
        crawl = NodeSpiderCrawl(node.protocol, target, nearest, node.ksize, node.alpha)
        return [n.id for n in await crawl.find()]

    async def one(self, asker: int, key: bytes) -> tuple[float, int, float, int]:
        node = self.nodes[asker]
        live = {self.node_id(x) for x, ok in zip(self.nodes, self.alive, strict=True) if ok}
        if self.impl != "tw-mesh":
            live.discard(self.node_id(node))
        want = set(sorted(live, key=lambda x: distance(key, x))[:TOP])
        before = self.rpc_count(node)
        start = time.perf_counter()
        got = await self.lookup(node, key)
        took = time.perf_counter() - start
        return (took, self.rpc_count(node) - before, len(want & set(got)) / len(want),
                len(set(got) - live))

    async def lookups(self, count: int, concurrency: int) -> list[tuple[float, int, float, int]]:
        out: list[tuple[float, int, float, int]] = []
        live = [i for i, ok in enumerate(self.alive) if ok]
        while len(out) < count:
            askers = self.rng.sample(live, min(concurrency, count - len(out), len(live)))
            out += await asyncio.gather(*(self.one(a, self.rng.randbytes(20)) for a in askers))
        return out

    async def kill(self, fraction: float) -> None:
        for i in self.rng.sample(range(self.n), int(self.n * fraction)):
            self.alive[i] = False
            await self.stop(self.nodes[i])

    async def stop(self, node: Any) -> None:
        if self.impl == "tw-mesh":
            await node.stop()
        else:
            node.stop()

    async def close(self) -> None:
        for node, ok in zip(self.nodes, self.alive, strict=True):
            if ok:
                await self.stop(node)


async def run_one(impl: str, n: int, args: argparse.Namespace) -> list[Phase]:
    h = Harness(impl, n, random.Random(args.seed + n), args.sweep_interval)
    join_ms = await h.join()
    await asyncio.sleep(args.settle)
    if impl == "tw-mesh":
        sizes = sorted(len(node.live_peers()) for node in h.nodes)
        print(f"# {impl} N={n}: live set per node min {sizes[0]}, median "
              f"{sizes[len(sizes) // 2]}, max {sizes[-1]}; load average {os.getloadavg()[0]:.1f}",
              flush=True)
    phases = []
    for label in ("before kill", f"after killing {int(args.kill * 100)}%"):
        if label != "before kill":
            await h.kill(args.kill)
        cpu = time.process_time()
        res = await h.lookups(args.lookups, args.concurrency)
        phases.append(Phase(impl, n, label, join_ms, [r[0] for r in res], [r[1] for r in res],
                            [r[2] for r in res], [r[3] for r in res],
                            time.process_time() - cpu, os.getloadavg()[0]))
        print(row(phases[-1]), flush=True)
    await h.close()
    return phases


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(p: Phase) -> str:
    full = sum(1 for a in p.accuracy if a == 1.0) / len(p.accuracy)
    return (f"| {p.impl} | {p.n} | {p.phase} | {p.join_ms:.1f} | "
            f"{1000 * pct(p.latencies, 0.5):.0f} | {1000 * pct(p.latencies, 0.99):.0f} | "
            f"{statistics.mean(p.rpcs):.1f} | {100 * statistics.mean(p.accuracy):.1f}% | "
            f"{100 * full:.0f}% | {statistics.mean(p.dead_returned):.2f} | "
            f"{1000 * p.cpu_s / len(p.latencies):.0f} | {p.load:.1f} |")


HEADER = ("| impl | N | phase | join ms/node | lookup p50 ms | lookup p99 ms | RPCs/lookup | "
          "live top-20 found | lookups with all 20 | dead returned/lookup | "
          "process CPU ms/lookup | load avg |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--lookups", type=int, default=50, help="lookups per phase")
    parser.add_argument("--concurrency", type=int, default=10, help="lookups in flight")
    parser.add_argument("--kill", type=float, default=0.3, help="fraction of nodes killed")
    parser.add_argument("--sweep-interval", type=float, default=10.0,
                        help="tw-mesh liveness sweep (s); all N nodes sweep in this one process")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after joining")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-stock", action="store_true", help="skip stock kademlia 2.2.3")
    parser.add_argument("--no-write", action="store_true", help="do not append RESULTS.md")
    args = parser.parse_args(argv)
    for name in ("kademlia", "rpcudp", "mesh"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    impls = ["tw-mesh"] + ([] if args.no_stock else ["stock kademlia 2.2.3"])
    print(HEADER, flush=True)
    phases = [p for n in args.sizes for impl in impls for p in asyncio.run(run_one(impl, n, args))]
    if args.no_write:
        return
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a") as fh:
        fh.write(f"\n### Mesh membership lookups (DHT), {stamp}\n"
                 f"`{platform.machine()}`, nproc {os.cpu_count()}, Python "
                 f"{platform.python_version()}; all nodes in one process on 127.0.0.1; "
                 f"{args.lookups} lookups of the {TOP} closest per phase, {args.concurrency} in "
                 f"flight from distinct askers; tw-mesh rpc timeout 1 s, sweep "
                 f"{args.sweep_interval} s; stock rpc timeout 5 s; lookups start right after "
                 f"the kill. `python -m benchmarks.mesh_bench "
                 f"--sizes {' '.join(map(str, args.sizes))} --lookups {args.lookups}`\n\n")
        fh.write(HEADER + "\n" + "\n".join(row(p) for p in phases) + "\n")


if __name__ == "__main__":
    main()

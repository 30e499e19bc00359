"""The coordinator of the swarm: which nodes are live and in which worker process, joins,
crashes and measured lookups, and the brute-force truth each lookup is checked against."""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from dataclasses import dataclass

from simulations.swarm_phases import Lookup, Phase, Stats
from simulations.swarm_worker import WorkerHandle


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

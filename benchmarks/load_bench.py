"""Load: many concurrent clients mixing Push, Get, Revise and CallFunction across real nodes.

    python -m benchmarks.load_bench                      # 100 clients, 60 s, 6 nodes; appends
    python -m benchmarks.load_bench --clients 20 --duration 10 --no-record

Each client is bound to one node's local API (client c → node c mod N) and owns one private
document there (so its Revises never conflict). Its loop picks an operation: Push 25% (1–64 KiB
random, public), Get 35% (a random file any client pushed, bytes compared), Revise 20% (its
document), CallFunction 20% (a deployed function whose answer is checked). Every error counts
as unexpected. Each node's RSS (VmRSS of the `tw-mesh join` process) is sampled every 0.5 s.
After the run every acknowledged Push is read back (byte-identical) and every acknowledged
Revise is found in its document's Log: "lost" must be 0.

Also used by tests/reliability/test_load.py (short run in `make test`, the full one in the slow
suite).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from benchmarks.report import append_results, machine_line
from compute import values
from proto import taskworker_pb2 as pb
from proto import taskworker_pb2_grpc as pbg
from tests.support.nodes import NodeCluster, NodeProc, run_cli

MODULE = '''
from taskworker import TaskWorker

worker = TaskWorker("load")

@worker.function("mix")
def mix(a, b):
    return {"sum": a + b, "cat": str(a) + "/" + str(b)}
'''
MIX = (("push", 25), ("get", 35), ("revise", 20), ("call", 20))
EXTRA = ["--sweep-interval", "0.5", "--provider-refresh", "1"]


@dataclass
class LoadResult:
    nodes: int
    clients: int
    duration: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    peak_rss_kib: list[int] = field(default_factory=list)
    start_rss_kib: list[int] = field(default_factory=list)
    pushed: int = 0
    revised: int = 0
    lost: int = 0
    elapsed: float = 0.0

    @property
    def ops(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    @property
    def throughput(self) -> float:
        return self.ops / self.elapsed if self.elapsed else 0.0

    def pct(self, op: str | None, q: float) -> float:
        xs = sorted(x for k, v in self.latencies.items() if op in (None, k) for x in v)
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def table(self) -> str:
        rows = ["| op | count | p50 | p99 | max |", "|---|---|---|---|---|"]
        for op in [*(k for k, _ in MIX), None]:
            xs = self.latencies.get(op, []) if op else [x for v in self.latencies.values()
                                                        for x in v]
            if not xs:
                continue
            rows.append(f"| {op or 'all'} | {len(xs)} | {self.pct(op, 0.5) * 1e3:.1f} ms | "
                        f"{self.pct(op, 0.99) * 1e3:.1f} ms | {max(xs) * 1e3:.1f} ms |")
        return "\n".join(rows)

    def summary(self) -> str:
        return (f"{self.clients} clients × {self.duration:.0f} s on {self.nodes} nodes: "
                f"{self.ops} ops, {self.throughput:.1f} ops/s, p99 {self.pct(None, 0.99) * 1e3:.0f}"
                f" ms, unexpected errors {sum(self.errors.values())} {dict(self.errors)}, "
                f"peak RSS per node {max(self.peak_rss_kib) / 1024:.0f} MiB (start "
                f"{max(self.start_rss_kib) / 1024:.0f} MiB), acknowledged pushes {self.pushed}, "
                f"revisions {self.revised}, lost {self.lost}")


def rss_kib(node: NodeProc) -> int:
    assert node.proc is not None
    try:
        for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def _deploy(cluster: NodeCluster, tmp: Path) -> None:
    module = tmp / "load_mod.py"
    module.write_text(MODULE)
    out = await asyncio.to_thread(run_cli, "deploy", str(module), "--json",
                                  api=cluster.nodes[0].api)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.decode())
    for i in range(len(cluster.nodes)):
        stub = cluster.stub(i, pbg.RPCServiceStub)
        deadline = time.monotonic() + 30
        while True:
            try:
                await _call(stub, 1, 2)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE) \
                        or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)


async def _call(stub: pbg.RPCServiceStub, a: int, b: int) -> None:
    resp = await stub.CallFunction(pb.FunctionCallRequest(
        function_name="mix", args=values.to_list([a, b]), timeout=30), timeout=35)
    got = values.from_value(resp.result)
    if resp.error.type or got != {"sum": a + b, "cat": f"{a}/{b}"}:
        raise AssertionError(f"wrong call result {got!r} {resp.error}")


async def run_load(tmp: Path, *, nodes: int = 6, clients: int = 100, duration: float = 60.0,
                   seed: int = 1) -> LoadResult:
    result = LoadResult(nodes, clients, duration)
    async with NodeCluster(tmp, nodes, extra=EXTRA) as cluster:
        await _deploy(cluster, tmp)
        result.start_rss_kib = [rss_kib(n) for n in cluster.nodes]
        result.peak_rss_kib = list(result.start_rss_kib)
        files: dict[str, bytes] = {}
        docs: dict[int, tuple[str, dict[str, bytes]]] = {}
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                for i, node in enumerate(cluster.nodes):
                    result.peak_rss_kib[i] = max(result.peak_rss_kib[i], rss_kib(node))
                await asyncio.sleep(0.5)

        async def client(c: int) -> None:
            rng = random.Random(seed * 1000 + c)
            idx = c % nodes
            fs = cluster.stub(idx, pbg.FileServiceStub)
            rpc = cluster.stub(idx, pbg.RPCServiceStub)
            doc = await fs.Push(pb.PushRequest(file_data=b"v0", filename=f"doc{c}"), timeout=60)
            docs[c] = (doc.file_id, {})
            ops, weights = zip(*MIX, strict=True)
            while not stop.is_set():
                op = rng.choices(ops, weights)[0]
                if op == "get" and not files:
                    op = "push"
                started = time.monotonic()
                try:
                    if op == "push":
                        data = rng.randbytes(rng.randint(1024, 64 * 1024))
                        r = await fs.Push(pb.PushRequest(file_data=data, public=True), timeout=60)
                        files[r.cid] = data
                    elif op == "get":
                        cid = rng.choice(list(files))
                        g = await fs.Get(pb.GetRequest(file_id=cid), timeout=60)
                        if g.file_data != files[cid]:
                            raise AssertionError(f"corrupt read of {cid}")
                    elif op == "revise":
                        data = rng.randbytes(rng.randint(100, 8192))
                        r2 = await fs.Revise(pb.ReviseRequest(file_id=doc.file_id, file_data=data),
                                             timeout=60)
                        docs[c][1][r2.version] = data
                    else:
                        await _call(rpc, rng.randint(0, 10**6), rng.randint(0, 10**6))
                except grpc.aio.AioRpcError as exc:
                    result.errors[f"{op}:{exc.code().name}"] += 1
                    continue
                except AssertionError as exc:
                    result.errors[f"{op}:{exc}"[:80]] += 1
                    continue
                result.latencies.setdefault(op, []).append(time.monotonic() - started)

        sampler = asyncio.create_task(sample())
        started = time.monotonic()
        tasks = [asyncio.create_task(client(c)) for c in range(clients)]
        await asyncio.sleep(duration)
        stop.set()
        await asyncio.gather(*tasks)
        result.elapsed = time.monotonic() - started
        await sampler
        # nothing acknowledged may be lost
        result.pushed = len(files)
        result.revised = sum(len(v) for _, v in docs.values())
        sem = asyncio.Semaphore(16)

        async def check(i: int, cid: str, data: bytes) -> None:
            async with sem:
                g = await cluster.stub(i % nodes, pbg.FileServiceStub).Get(
                    pb.GetRequest(file_id=cid), timeout=120)
                result.lost += g.file_data != data

        async def check_doc(c: int, fid: str, versions: dict[str, bytes]) -> None:
            async with sem:
                log = await cluster.stub(c % nodes, pbg.FileServiceStub).Log(
                    pb.LogRequest(file_id=fid), timeout=60)
                result.lost += len(set(versions) - {v.version for v in log.versions})

        await asyncio.gather(*(check(i, cid, d) for i, (cid, d) in enumerate(files.items())),
                             *(check_doc(c, fid, v) for c, (fid, v) in docs.items()))
        for node in cluster.nodes:
            if not node.alive:
                result.errors["node died"] += 1
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tw-load-") as tmp:
        res = asyncio.run(run_load(Path(tmp), nodes=args.nodes, clients=args.clients,
                                   duration=args.duration))
    print(res.summary())
    print(res.table())
    if args.json:
        print(json.dumps({"ops": res.ops, "throughput": res.throughput,
                          "p99_s": res.pct(None, 0.99), "errors": dict(res.errors),
                          "peak_rss_kib": res.peak_rss_kib, "lost": res.lost}))
    if not args.no_record:
        import os
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        ctx = (f"`python -m benchmarks.load_bench --clients {args.clients} --duration "
               f"{args.duration:g} --nodes {args.nodes}`: real `tw-mesh join` nodes on loopback, "
               f"each client bound to one node's local API; mix Push 25% (1–64 KiB) / Get 35% / "
               f"Revise 20% / CallFunction 20%. {machine_line()}; load average after the run "
               f"{load}.\n\n{res.summary()}.\n\nPeak VmRSS per node (MiB): "
               + ", ".join(f"{k / 1024:.0f}" for k in res.peak_rss_kib))
        append_results("Load: mixed Push/Get/Revise/CallFunction", ctx, res.table())


if __name__ == "__main__":
    main()

"""Remote-call latency and throughput: ``python -m benchmarks.compute_bench``.

Rows, all in one run on the same machine:
* a direct plain gRPC unary call to a Python servicer (grpc.aio, separate process) that adds
  two numbers — the floor any Python RPC pays;
* CallFunction at a node that serves the function itself (sandbox, no forwarding);
* CallFunction at a forwarding peer (``--role storage``: no sandbox, so it must route) to a
  compute peer over the sealed channel, which runs it in a fresh sandbox worker.
Each row: sequential p50/p99 and calls/s, then a concurrent calls/s row. The function is
deployed (``tw-mesh deploy``) so both nodes are plain ``tw-mesh join`` processes.
Anchors: Ray ~1 ms per synchronous task, Dask 0.2–1 ms. Goal p50 <= 2 ms, >= 1,000 calls/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from benchmarks.compute_procs import ROOT, SERVER, api_channel, start_node
from benchmarks.compute_table import percentile, table
from benchmarks.cpu import self_cpu, tree_cpu
from compute import values
from proto import taskworker_pb2, taskworker_pb2_grpc

MODULE = "def add(a, b):\n    return a + b\n"

CPU_PER_CALL: list[float] = []   # per concurrent row: CPU s per call, all processes
CPU_SPLIT: list[str] = []        # per concurrent row: the same CPU, process by process
PIDS: dict[str, int] = {}        # "plain server", "serving node", "forwarder" -> pid
NOTES: list[str] = []


def _split() -> dict[str, float]:
    """CPU seconds so far by part: this client, each server process, and the sandbox
    processes (zygote and workers: the serving node's descendants, or ours)."""
    me = os.getpid()
    node = PIDS.get("serving node", 0)
    out = {"client": self_cpu(me),
           "sandbox procs": tree_cpu(node) - self_cpu(node) if node else 0.0}
    out.update((name, self_cpu(pid)) for name, pid in PIDS.items())
    return out


def _pool_cpu() -> float:
    """Our descendants other than the servers: an in-process SandboxPool's zygote and workers."""
    return _cpu() - self_cpu(os.getpid()) - sum(tree_cpu(pid) for pid in PIDS.values())


def _cpu() -> float:
    """This process and all its descendants: the servers and nodes (started by us), their
    zygotes and sandbox workers, and an in-process SandboxPool's."""
    return tree_cpu(os.getpid())


def _request(i: int) -> taskworker_pb2.FunctionCallRequest:
    return taskworker_pb2.FunctionCallRequest(function_name="add",
                                              args=values.to_list([i, 1]), timeout=30)


async def _sequential(stub: Any, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await stub.CallFunction(_request(i), timeout=35)
        out.append(time.perf_counter() - t0)
    return out


async def _concurrent(stub: Any, n: int, width: int) -> float:
    counter = iter(range(n))

    async def client() -> None:
        for i in counter:
            await stub.CallFunction(_request(i), timeout=35)

    t0, c0, s0 = time.perf_counter(), _cpu(), _split()
    await asyncio.gather(*(client() for _ in range(width)))
    CPU_PER_CALL.append((_cpu() - c0) / n)
    _record_split(s0, n)
    return n / (time.perf_counter() - t0)


def _record_split(before: dict[str, float], n: int) -> None:
    after = _split()
    per = {name: (after[name] - before[name]) / n * 1000 for name in after}
    parts = [f"{name} {ms:.2f}" for name, ms in per.items() if ms >= 0.005]
    CPU_SPLIT.append(" · ".join(parts))


async def _sandbox_rows(ns: argparse.Namespace) -> list[tuple[str, list[float] | None, float]]:
    """SandboxPool.run alone, in this process: the floor of every sandboxed call."""
    from compute.sandbox import SandboxPool

    pool = SandboxPool(size=4)
    await pool.start()
    try:
        for i in range(100):
            await pool.run(MODULE, "add", [i, 1], {})
        seq = []
        for i in range(ns.n):
            t0 = time.perf_counter()
            await pool.run(MODULE, "add", [i, 1], {})
            seq.append(time.perf_counter() - t0)
        counter = iter(range(ns.concurrent))

        async def client() -> None:
            for i in counter:
                await pool.run(MODULE, "add", [i, 1], {})

        t0, c0, me0, zyg0 = time.perf_counter(), _cpu(), self_cpu(os.getpid()), _pool_cpu()
        await asyncio.gather(*(client() for _ in range(ns.width)))
        rate = ns.concurrent / (time.perf_counter() - t0)
        CPU_PER_CALL.append((_cpu() - c0) / ns.concurrent)
        me, zyg = self_cpu(os.getpid()) - me0, _pool_cpu() - zyg0
        CPU_SPLIT.append(f"client (pool host side) {me / ns.concurrent * 1000:.2f} · "
                         f"sandbox procs {zyg / ns.concurrent * 1000:.2f}")
    finally:
        await pool.stop()
    label = "SandboxPool.run in-process (no gRPC, no routing)"
    return [(label, seq, ns.n / sum(seq)), (f"{label}, {ns.width} concurrent callers", None, rate)]


async def _in_node(addr: str, label: str) -> str:
    """The serving node's own p50 of SandboxPool.run over its last 1,000 calls (NodeService
    Status): the rest of the row's p50 is gRPC, the node's call path and scheduling."""
    async with api_channel(addr) as ch:
        reply = await taskworker_pb2_grpc.NodeServiceStub(ch).Status(
            taskworker_pb2.StatusRequest(), timeout=10)
    compute = json.loads(reply.json).get("services", {}).get("compute", {})
    return (f"{label}: inside the node, SandboxPool.run p50 {compute.get('p50_ms', '?')} ms "
            f"(p99 {compute.get('p99_ms', '?')} ms).")


async def _measure(targets: list[tuple[str, str]], ns: argparse.Namespace
                   ) -> list[tuple[str, list[float] | None, float]]:
    rows: list[tuple[str, list[float] | None, float]] = []
    for label, addr in targets:
        if addr == "sandbox":
            rows += await _sandbox_rows(ns)
            continue
        async with api_channel(addr) as ch:
            stub = taskworker_pb2_grpc.RPCServiceStub(ch)
            deadline = time.monotonic() + 30
            while True:                     # wait for the provider to be found
                try:
                    await stub.CallFunction(_request(0), timeout=35)
                    break
                except grpc.aio.AioRpcError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            await _sequential(stub, 100)    # warm up
            seq = await _sequential(stub, ns.n)
            rows.append((label, seq, ns.n / sum(seq)))
            print(label, f"p50 {percentile(seq, 0.5) * 1000:.2f} ms", file=sys.stderr)
            if "serving node" in label:
                NOTES.append(await _in_node(addr, label))
            rate = await _concurrent(stub, ns.concurrent, ns.width)
            rows.append((f"{label}, {ns.width} concurrent callers", None, rate))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000, help="sequential calls per row")
    ap.add_argument("--concurrent", type=int, default=3000, help="calls in the concurrent rows")
    ap.add_argument("--width", type=int, default=16, help="concurrent callers")
    ap.add_argument("--write", action="store_true", help="append to benchmarks/RESULTS.md")
    ap.add_argument("--keep", type=Path, help="keep the nodes' directories and logs here")
    ns = ap.parse_args()
    procs: list[Any] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = ns.keep or Path(tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            server = subprocess.Popen([sys.executable, "-c", SERVER], cwd=ROOT,
                                      stdout=subprocess.PIPE,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)})
            procs.append(server)
            PIDS["plain server"] = server.pid
            assert server.stdout is not None
            port = int(server.stdout.readline())
            compute, peer, compute_api = start_node(tmp, "compute", None, ["compute"])
            procs.append(compute)
            PIDS["serving node"] = compute.pid
            router, _, router_api = start_node(tmp, "router", peer, ["storage"])
            procs.append(router)
            PIDS["forwarder"] = router.pid
            (tmp / "add.py").write_text(MODULE)
            subprocess.run([sys.executable, "-m", "taskworker.cli", "deploy", str(tmp / "add.py"),
                            "--api", compute_api], cwd=ROOT, check=True, capture_output=True)
            targets = [("direct plain gRPC unary (Python servicer, no sandbox)",
                        f"127.0.0.1:{port}"),
                       ("sandbox", "sandbox"),
                       ("CallFunction at the serving node (sandbox, no forwarding)", compute_api),
                       ("CallFunction through a forwarding peer (sealed channel + sandbox)",
                        router_api)]
            rows = asyncio.run(_measure(targets, ns))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
    text = table(rows, ns, CPU_PER_CALL, CPU_SPLIT, NOTES)
    print(text)
    if ns.write:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()

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
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from benchmarks.cpu import self_cpu, tree_cpu
from compute import values
from proto import taskworker_pb2, taskworker_pb2_grpc
from taskworker.api_auth import aio_channel
from taskworker.api_token import TOKEN_FILE

ROOT = Path(__file__).resolve().parents[1]
MODULE = "def add(a, b):\n    return a + b\n"

SERVER = '''
import asyncio, sys
import grpc
from proto import taskworker_pb2, taskworker_pb2_grpc

class Servicer(taskworker_pb2_grpc.RPCServiceServicer):
    async def CallFunction(self, request, context):
        a, b = request.args.values
        resp = taskworker_pb2.FunctionCallResponse(worker_id="direct")
        resp.result.number_value = a.number_value + b.number_value
        return resp

async def main():
    server = grpc.aio.server()
    taskworker_pb2_grpc.add_RPCServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()

asyncio.run(main())
'''


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


def _pct(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(q * len(data)))]


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


TOKENS: dict[str, str] = {}   # a node's API address -> its API token (DATA_DIR/api.token)


def _channel(addr: str) -> grpc.aio.Channel:
    """A node's local API sends its token (as the CLI and TaskWorker do); the plain server not."""
    return aio_channel(addr, TOKENS[addr]) if addr in TOKENS else grpc.aio.insecure_channel(addr)


def _start_node(tmp: Path, name: str, boot: str | None, roles: list[str]) -> tuple[Any, str, str]:
    log = tmp / f"{name}.log"
    args = [sys.executable, "-m", "taskworker.cli", "join", "--listen", "127.0.0.1:0",
            "--api", "127.0.0.1:0", "--data-dir", str(tmp / name), "--log-level", "INFO",
            *[f"--role={r}" for r in roles], *([f"--bootstrap={boot}"] if boot else [])]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=open(log, "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    import re

    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        peer = re.search(r"peer address ([\d.]+:\d+)", text)
        api = re.search(r"local API on ([\d.]+:\d+)", text)
        if peer and api:
            TOKENS[api.group(1)] = (tmp / name / TOKEN_FILE).read_text().strip()
            return proc, peer.group(1), api.group(1)
        if proc.poll() is not None:
            raise RuntimeError(text[-2000:])
        time.sleep(0.05)
    raise TimeoutError(log.read_text()[-2000:])


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
    async with _channel(addr) as ch:
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
        async with _channel(addr) as ch:
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
            print(label, f"p50 {_pct(seq, 0.5) * 1000:.2f} ms", file=sys.stderr)
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
            compute, peer, compute_api = _start_node(tmp, "compute", None, ["compute"])
            procs.append(compute)
            PIDS["serving node"] = compute.pid
            router, _, router_api = _start_node(tmp, "router", peer, ["storage"])
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
    base = next(r for r in rows if r[1] is not None)
    base_p50 = _pct(base[1] or [], 0.5)
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
    cpu, split = iter(CPU_PER_CALL), iter(CPU_SPLIT)
    for label, seq, rate in rows:
        if seq is not None:
            p50 = _pct(seq, 0.5)
            lines.append(f"| {label} | {p50 * 1000:.2f} ms | {_pct(seq, 0.99) * 1000:.2f} ms | "
                         f"{rate:.0f} | {p50 / base_p50:.1f}× latency | | | |")
        else:
            per = next(cpu, 0.0)
            lines.append(f"| {label} | | | {rate:.0f} | {rate / base_rate:.2f}× throughput | "
                         f"{per * 1000:.2f} ms | {2 / per if per else 0:.0f}/s | "
                         f"{next(split, '')} |")
    lines += ["", *NOTES] if NOTES else []
    text = "\n".join(lines) + "\n"
    print(text)
    if ns.write:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()

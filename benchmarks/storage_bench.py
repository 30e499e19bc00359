"""Storage Push/Get through 5 real tw-mesh nodes with (4,2), against Tahoe-LAFS in the same run.

Run: ``.venv/bin/python -m benchmarks.storage_bench [--runs 5] [--small-runs 30]
[--big-mib 64] [--no-tahoe] [--no-codec] [--write-results]``.

* tw-mesh: 5 ``tw-mesh join`` subprocesses on loopback (tests/support/nodes.py); the client is
  this process talking to node 0's local API with grpc.aio, as the CLI would: 64 MiB through
  PushStream / GetStream (1 MiB request chunks), 1 KiB and 1 MiB through unary Push / Get.
  Private files (encrypted, key sealed to the default user). Fresh random data every run.
  1 KiB files are stored inline in their manifest (storage/inline.py, files up to 4 KiB; Tahoe
  does the same only up to 55 bytes, LIT), so the 1 MiB row shows the erasure-coded small path.
* Tahoe-LAFS 1.20 (benchmarks/tahoe.py): introducer + 5 storage nodes + client, 4-of-6, web
  API; immutable upload/download of the same sizes, fresh data each run. Everything runs in a
  private network namespace (Tahoe opens a port on 0.0.0.0), so it stays on loopback.
* Codec: benchmarks.codec_bench.run for (4,2) and (10,4) against zfec and pyeclib.
Medians; MB/s = 10^6 bytes/s of file data; ratios are tw-mesh / Tahoe (higher is better for
throughput, lower for latency).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from benchmarks.cpu import Meter
from benchmarks.report import append_results, machine_line
from benchmarks.storage_table import MiB, median, table
from proto import taskworker_pb2, taskworker_pb2_grpc
from storage.manifest import manifest_key
from tests.support.nodes import NodeCluster

KEYS = ("big_up", "big_down", "small_up", "small_down", "mid_up", "mid_down", "small_cold")


def _series() -> dict[str, list[float]]:
    """Wall seconds per op under each key, and CPU seconds (every process) under cpu_<key>."""
    return {k: [] for key in KEYS for k in (key, f"cpu_{key}")}


async def _push_stream(stub: taskworker_pb2_grpc.FileServiceStub,
                       data: bytes) -> taskworker_pb2.PushResponse:
    async def chunks() -> AsyncIterator[taskworker_pb2.PushChunk]:
        yield taskworker_pb2.PushChunk(header=taskworker_pb2.PushRequest(filename="bench"))
        view = memoryview(data)
        for i in range(0, len(data), MiB):
            yield taskworker_pb2.PushChunk(data=bytes(view[i:i + MiB]))
    resp: taskworker_pb2.PushResponse = await stub.PushStream(chunks(), timeout=600)
    return resp


async def _get_stream(stub: taskworker_pb2_grpc.FileServiceStub, cid: str) -> int:
    n = 0
    async for chunk in stub.GetStream(taskworker_pb2.GetRequest(file_id=cid), timeout=600):
        n += len(chunk.data)
    return n


async def _cold_node(cluster: NodeCluster, ids: list[str], cid: str) -> int:
    """A node that is not one of the CID's manifest replicas and did not push it."""
    closest = await cluster.stub(0, taskworker_pb2_grpc.NodeServiceStub).Closest(
        taskworker_pb2.ClosestRequest(key=manifest_key(cid), n=3))
    replicas = {ids.index(p.node_id) for p in closest.peers}
    return next(i for i in range(1, len(ids)) if i not in replicas)


async def bench_mesh(tmp: Path, runs: int, small_runs: int, big: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = _series()
    meter = Meter()  # this process and the nodes it started
    async with NodeCluster(tmp, 5) as cluster:
        stub = cluster.stub(0, taskworker_pb2_grpc.FileServiceStub)
        ids = [(await cluster.peers_of(i)).self_id for i in range(len(cluster.nodes))]
        warm = await stub.Push(taskworker_pb2.PushRequest(file_data=os.urandom(1024)))
        await stub.Get(taskworker_pb2.GetRequest(file_id=warm.cid))
        for size, n, up, down in ((1024, small_runs, "small_up", "small_down"),
                                  (MiB, small_runs // 2, "mid_up", "mid_down")):
            for _ in range(n):
                data = os.urandom(size)
                c0 = meter.read()
                t0 = time.perf_counter()
                r = await stub.Push(taskworker_pb2.PushRequest(file_data=data))
                t1 = time.perf_counter()
                c1 = meter.read()
                t1b = time.perf_counter()
                g = await stub.Get(taskworker_pb2.GetRequest(file_id=r.cid))
                t2 = time.perf_counter()
                c2 = meter.read()
                assert g.file_data == data
                out[up].append(t1 - t0)
                out[down].append(t2 - t1b)
                out[f"cpu_{up}"].append(c1 - c0)
                out[f"cpu_{down}"].append(c2 - c1)
        # Get at a node that never had the file (no cached manifest). Each node's client
        # channel is opened and used once first, as for the pushing node's row: the row times
        # the node's manifest fetch, not the client's gRPC connection setup.
        stubs = [cluster.stub(i, taskworker_pb2_grpc.FileServiceStub) for i in range(len(ids))]
        shared = await stub.Push(taskworker_pb2.PushRequest(file_data=os.urandom(1024),
                                                            public=True))
        for node_stub in stubs:
            await node_stub.Get(taskworker_pb2.GetRequest(file_id=shared.cid))
        for _ in range(small_runs):
            r = await stub.Push(taskworker_pb2.PushRequest(file_data=os.urandom(1024),
                                                           public=True))
            cold = await _cold_node(cluster, ids, r.cid)
            cold_stub = stubs[cold]
            c0 = meter.read()
            t0 = time.perf_counter()
            g = await cold_stub.Get(taskworker_pb2.GetRequest(file_id=r.cid))
            out["small_cold"].append(time.perf_counter() - t0)
            out["cpu_small_cold"].append(meter.read() - c0)
            assert len(g.file_data) == 1024
        for _ in range(runs):
            data = os.urandom(big)
            c0 = meter.read()
            t0 = time.perf_counter()
            r = await _push_stream(stub, data)
            t1 = time.perf_counter()
            c1 = meter.read()
            t1b = time.perf_counter()
            n = await _get_stream(stub, r.cid)
            t2 = time.perf_counter()
            c2 = meter.read()
            assert n == big and r.size == big
            out["big_up"].append(t1 - t0)
            out["big_down"].append(t2 - t1b)
            out["cpu_big_up"].append(c1 - c0)
            out["cpu_big_down"].append(c2 - c1)
            print(f"tw-mesh {big // MiB} MiB: up {big / (t1 - t0) / 1e6:.0f} MB/s, "
                  f"down {big / (t2 - t1) / 1e6:.0f} MB/s", flush=True)
    return out


def bench_tahoe(tmp: Path, runs: int, small_runs: int, big: int) -> dict[str, list[float]]:
    from benchmarks.tahoe import TahoeGrid

    out: dict[str, list[float]] = _series()
    with TahoeGrid(tmp) as grid:
        meter = Meter(grid.cpu_seconds)
        grid.download(grid.upload(os.urandom(1024)))
        for size, n, up, down in ((1024, small_runs, "small_up", "small_down"),
                                  (MiB, small_runs // 2, "mid_up", "mid_down"),
                                  (big, runs, "big_up", "big_down")):
            for _ in range(n):
                data = os.urandom(size)
                c0 = meter.read()
                t0 = time.perf_counter()
                cap = grid.upload(data)
                t1 = time.perf_counter()
                c1 = meter.read()
                t1b = time.perf_counter()
                got = grid.download(cap)
                t2 = time.perf_counter()
                c2 = meter.read()
                assert got == data
                out[up].append(t1 - t0)
                out[down].append(t2 - t1b)
                out[f"cpu_{up}"].append(c1 - c0)
                out[f"cpu_{down}"].append(c2 - c1)
            if size == big:
                print(f"tahoe {big // MiB} MiB: up {big / median(out[up]) / 1e6:.0f} MB/s, "
                      f"down {big / median(out[down]) / 1e6:.0f} MB/s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.storage_bench",
                                description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--small-runs", type=int, default=30)
    p.add_argument("--big-mib", type=int, default=64)
    p.add_argument("--no-tahoe", action="store_true")
    p.add_argument("--no-codec", action="store_true")
    p.add_argument("--write-results", action="store_true",
                   help="append the tables to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    use_tahoe = not args.no_tahoe
    if use_tahoe:
        from benchmarks.tahoe import installed
        if not installed():
            print("Tahoe-LAFS not installed (python -m benchmarks.tahoe --install): skipping it",
                  file=sys.stderr)
            use_tahoe = False
        else:
            from benchmarks.netns import reexec_in_private_netns
            reexec_in_private_netns()
    big = args.big_mib * MiB
    codec_text = ""
    if not args.no_codec:
        from benchmarks.codec_bench import DEFAULT_PACKET, run
        from benchmarks.codec_bench import table as codec_table
        rows = run(64 * MiB, 4 * MiB, 5, [(4, 2), (10, 4)], DEFAULT_PACKET)
        codec_text = codec_table(rows, 64 * MiB, 4 * MiB, 5, DEFAULT_PACKET, False)
    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        (Path(tmp) / "mesh").mkdir()
        mesh = asyncio.run(bench_mesh(Path(tmp) / "mesh", args.runs, args.small_runs, big))
        tahoe = (bench_tahoe(Path(tmp) / "tahoe", args.runs, args.small_runs, big)
                 if use_tahoe else None)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = table(mesh, tahoe, big, args.runs, args.small_runs)
    print(text)
    if codec_text:
        print(codec_text)
    if args.write_results:
        context = (f"`python -m benchmarks.storage_bench`: 5 tw-mesh nodes, (4,2), 4 MiB "
                   "stripes, private files, loopback; Tahoe-LAFS 1.20 grid of 5 storage "
                   "servers, 4-of-6, web API, same run, private netns. "
                   f"{machine_line()}; load average after the run {load}.")
        append_results("Storage Push/Get vs Tahoe-LAFS", context,
                       text + ("\n\n" + codec_text if codec_text else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

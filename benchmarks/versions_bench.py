"""Revise and Get-latest of a 1 MiB file on 5 real tw-mesh nodes, beside Tahoe-LAFS MDMF
modify and read in the same run.

Run: ``.venv/bin/python -m benchmarks.versions_bench [--runs 15] [--no-tahoe] [--write-results]``.

* tw-mesh: 5 ``tw-mesh join`` subprocesses on loopback, (4,2), versions replicas r = m+1 = 3;
  the client is this process on node 0's local API (grpc.aio). One Push creates the file; each
  run then times Revise(file_id, fresh 1 MiB) (sync with the replicas, content Push: encrypt +
  erasure-code + 6 fragments + manifest, sign the version record, push it to the replicas) and
  Get(file_id) (sync with the replicas, single head, fetch k fragments, decode, decrypt, verify
  the CID). Private file (key sealed to the owner).
* Tahoe-LAFS 1.20 (benchmarks/tahoe.py): introducer + 5 storage nodes + client, 4-of-6; one
  MDMF mutable file created, then each run PUTs fresh 1 MiB to its write cap (modify) and GETs
  it (read) through the web API. Private network namespace, loopback only.
Medians; ratio = tw-mesh / Tahoe (goal ≤ 0.20).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import append_results, machine_line
from proto import taskworker_pb2, taskworker_pb2_grpc
from tests.support.nodes import NodeCluster

MiB = 1 << 20
_SITE = str(Path(__file__).resolve().parents[1] / "tests" / "system" / "versions_site")
# Loads storage.versions.service in the nodes even before taskworker.node lists it.
ENV = {"TW_MESH_TEST_EXTRA_SERVICES": "storage.versions.service",
       "PYTHONPATH": _SITE + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


async def bench_mesh(tmp: Path, runs: int, size: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"modify": [], "read": []}
    async with NodeCluster(tmp, 5, extra=["--sweep-interval", "0.5"], env=ENV) as cluster:
        stub = cluster.stub(0, taskworker_pb2_grpc.FileServiceStub)
        r = await stub.Push(taskworker_pb2.PushRequest(file_data=os.urandom(size)))
        fid = r.file_id
        for i in range(runs + 2):                       # two warm-up runs
            data = os.urandom(size)
            t0 = time.perf_counter()
            rev = await stub.Revise(taskworker_pb2.ReviseRequest(file_id=fid, file_data=data),
                                    timeout=120)
            t1 = time.perf_counter()
            g = await stub.Get(taskworker_pb2.GetRequest(file_id=fid), timeout=120)
            t2 = time.perf_counter()
            assert g.file_data == data and g.version == rev.version and not g.conflicts
            if i >= 2:
                out["modify"].append(t1 - t0)
                out["read"].append(t2 - t1)
    return out


def bench_tahoe(tmp: Path, runs: int, size: int) -> dict[str, list[float]]:
    from benchmarks.tahoe import TahoeGrid

    out: dict[str, list[float]] = {"modify": [], "read": []}
    with TahoeGrid(tmp) as grid:
        cap = grid.mutable_create(os.urandom(size), fmt="MDMF")
        for i in range(runs + 2):
            data = os.urandom(size)
            t0 = time.perf_counter()
            grid.mutable_modify(cap, data)
            t1 = time.perf_counter()
            got = grid.mutable_read(cap)
            t2 = time.perf_counter()
            assert got == data
            if i >= 2:
                out["modify"].append(t1 - t0)
                out["read"].append(t2 - t1)
    return out


def table(mesh: dict[str, list[float]], tahoe: dict[str, list[float]] | None,
          runs: int, size: int) -> str:
    lines = ["| op (1 MiB) | tw-mesh p50 | tw-mesh p90 | Tahoe-LAFS 1.20 MDMF p50 | "
             "tw-mesh / Tahoe | goal |", "|---|---|---|---|---|---|"]
    for key, label in (("modify", "Revise vs MDMF modify"), ("read", "Get latest vs MDMF read")):
        ours = _med(mesh[key]) * 1e3
        theirs = _med(tahoe[key]) * 1e3 if tahoe else float("nan")
        ratio = f"{ours / theirs:.2f}" if tahoe else "–"
        lines.append(f"| {label} | {ours:.1f} ms | {_pct(mesh[key], 0.9) * 1e3:.1f} ms | "
                     f"{theirs:.1f} ms | {ratio} | ≤ 0.20 |")
    lines.append("")
    lines.append(f"Medians of {runs} runs after 2 warm-up runs, fresh random {size // 1024} KiB "
                 "each run.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.versions_bench",
                                description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--size", type=int, default=MiB)
    p.add_argument("--no-tahoe", action="store_true")
    p.add_argument("--write-results", action="store_true",
                   help="append the table to benchmarks/RESULTS.md")
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
    with tempfile.TemporaryDirectory(prefix="versions-bench-") as tmp:
        (Path(tmp) / "mesh").mkdir()
        mesh = asyncio.run(bench_mesh(Path(tmp) / "mesh", args.runs, args.size))
        tahoe = bench_tahoe(Path(tmp) / "tahoe", args.runs, args.size) if use_tahoe else None
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = table(mesh, tahoe, args.runs, args.size)
    print(text)
    if args.write_results:
        context = ("`python -m benchmarks.versions_bench`: 5 tw-mesh nodes, (4,2), version "
                   "replicas 3, private file, loopback, client on node 0's local API; Tahoe-LAFS "
                   "1.20 grid of 5 storage servers, 4-of-6, MDMF through the web API, same run, "
                   f"private netns. {machine_line()}; load average after the run {load}.")
        append_results("Versions: Revise / Get-latest vs Tahoe-LAFS MDMF", context, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

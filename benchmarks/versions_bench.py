"""Revise and Get-latest of a 1 MiB file on 5 real tw-mesh nodes, beside Tahoe-LAFS MDMF
modify and read in the same run.

Run: ``.venv/bin/python -m benchmarks.versions_bench [--runs 15] [--no-tahoe] [--write-results]``.

* tw-mesh: 5 ``tw-mesh join`` subprocesses on loopback, (4,2), versions replicas r = m+1 = 3;
  the client is this process on node 0's local API (grpc.aio). One Push creates the file; each
  run then times Revise(file_id, fresh 1 MiB) (sync with the replicas, content Push: encrypt +
  erasure-code + 6 fragments + manifest, sign the version record, push it to the replicas) and
  Get(file_id) (sync with the replicas, single head, fetch k fragments, decode, decrypt, verify
  the CID). Private file (key sealed to the owner). A plain Push of the same 1 MiB is timed
  too: it is the floor under Revise (whose content is stored exactly like a Push). Get latest is
  also timed, by a user granted write access there, on another version replica of the file (it
  was pushed the record and its content's manifest by the Revise) and on a node that holds no
  records of the file (it syncs with the replicas, pulls the new record, fetches the manifest).
* Tahoe-LAFS 1.20 (benchmarks/tahoe.py): introducer + 5 storage nodes + client, 4-of-6; one
  MDMF mutable file created, then each run PUTs fresh 1 MiB to its write cap (modify) and GETs
  it (read) through the web API. Private network namespace, loopback only.
Both run at once and their operations alternate run by run, so they see the same machine load.
Medians; ratio = tw-mesh / Tahoe (goal ≤ 0.20).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.cpu import Meter, tree_cpu
from benchmarks.report import append_results, machine_line
from proto import taskworker_pb2, taskworker_pb2_grpc
from storage.versions.records import parse_file_id
from storage.versions.replicas import replica_key
from tests.support.nodes import NodeCluster, run_cli

MiB = 1 << 20
REPLICAS = 3                    # versions replicas: m + 1 with the default (4, 2)


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


async def _readers(cluster: NodeCluster, fid: str
                   ) -> dict[str, taskworker_pb2_grpc.FileServiceStub]:
    """A user granted on another replica of ``fid`` and on a node holding no records of it."""
    ids = [(await cluster.peers_of(i)).self_id for i in range(len(cluster.nodes))]
    closest = await cluster.stub(0, taskworker_pb2_grpc.NodeServiceStub).Closest(
        taskworker_pb2.ClosestRequest(key=replica_key(parse_file_id(fid)), n=REPLICAS))
    replicas = {ids.index(p.node_id) for p in closest.peers}
    picks = {"read_replica": [i for i in range(1, len(ids)) if i in replicas],
             "read_far": [i for i in range(1, len(ids)) if i not in replicas]}
    out = {}
    for key, nodes in picks.items():
        if not nodes:
            continue
        made = await asyncio.to_thread(run_cli, "user", "create", "bench-reader",
                                       "--data-dir", str(cluster.nodes[nodes[0]].data_dir))
        assert made.returncode == 0, made.stderr
        await cluster.stub(0, taskworker_pb2_grpc.FileServiceStub).Grant(
            taskworker_pb2.GrantRequest(file_id=fid, grantee=made.stdout.decode().split()[1]))
        out[key] = cluster.stub(nodes[0], taskworker_pb2_grpc.FileServiceStub)
    return out


async def bench(tmp: Path, runs: int, size: int, use_tahoe: bool
                ) -> tuple[dict[str, list[float]], dict[str, list[float]] | None]:
    """Both systems up at once, operations interleaved run by run, so they share the load."""
    mesh: dict[str, list[float]] = {"modify": [], "read": [], "push": [], "read_replica": [],
                                    "read_far": [], "cpu_modify": [], "cpu_read": []}
    tahoe: dict[str, list[float]] | None = {"modify": [], "read": [], "cpu_modify": [],
                                            "cpu_read": []} if use_tahoe else None
    grid = None
    if use_tahoe:
        from benchmarks.tahoe import TahoeGrid
        (tmp / "tahoe").mkdir()
        grid = await asyncio.to_thread(TahoeGrid(tmp / "tahoe").start)
    try:
        (tmp / "mesh").mkdir()
        async with NodeCluster(tmp / "mesh", 5, extra=["--sweep-interval", "0.5"]) as cluster:
            stub = cluster.stub(0, taskworker_pb2_grpc.FileServiceStub)
            node = cluster.stub(0, taskworker_pb2_grpc.NodeServiceStub)
            r = await stub.Push(taskworker_pb2.PushRequest(file_data=os.urandom(size)))
            fid = r.file_id
            readers = await _readers(cluster, fid)
            pids = [n.proc.pid for n in cluster.nodes]
            # this process (the client) plus the 5 nodes, or plus the Tahoe nodes
            mesh_cpu = Meter(lambda: sum(tree_cpu(p) for p in pids)).read
            tahoe_cpu = Meter(grid.cpu_seconds if grid else lambda: 0.0).read

            cap = grid.mutable_create(os.urandom(size), fmt="MDMF") if grid else ""
            for i in range(runs + 2):                       # two warm-up runs
                data = os.urandom(size)
                c0 = mesh_cpu()
                t0 = time.perf_counter()
                rev = await stub.Revise(taskworker_pb2.ReviseRequest(file_id=fid,
                                                                     file_data=data),
                                        timeout=120)
                t1 = time.perf_counter()
                c1 = mesh_cpu()
                t1b = time.perf_counter()
                g = await stub.Get(taskworker_pb2.GetRequest(file_id=fid), timeout=120)
                t2 = time.perf_counter()
                c2 = mesh_cpu()
                assert g.file_data == data and g.version == rev.version and not g.conflicts
                t2b = time.perf_counter()
                plain = await stub.Push(taskworker_pb2.PushRequest(file_data=data), timeout=120)
                t3 = time.perf_counter()
                assert plain.cid == rev.cid
                lat: dict[str, float] = {}
                for key, reader in readers.items():
                    t = time.perf_counter()
                    g = await reader.Get(taskworker_pb2.GetRequest(
                        file_id=fid, user_id="bench-reader"), timeout=120)
                    lat[key] = time.perf_counter() - t
                    assert g.file_data == data and g.version == rev.version
                status = json.loads((await node.Status(taskworker_pb2.StatusRequest())).json)
                vstatus = status["services"]["versions"]
                phases = {**vstatus["last_revise_ms"],
                          **{"get_" + k: v for k, v in vstatus.get("last_get_ms", {}).items()}}
                if i >= 2:
                    for k, v in phases.items():
                        mesh.setdefault("phase_" + k, []).append(v / 1e3)
                    mesh["modify"].append(t1 - t0)
                    mesh["read"].append(t2 - t1b)
                    mesh["cpu_modify"].append(c1 - c0)
                    mesh["cpu_read"].append(c2 - c1)
                    mesh["push"].append(t3 - t2b)
                    for key, t in lat.items():
                        mesh[key].append(t)
                if grid is not None and tahoe is not None:
                    data = os.urandom(size)
                    c0 = tahoe_cpu()
                    t0 = time.perf_counter()
                    grid.mutable_modify(cap, data)
                    t1 = time.perf_counter()
                    c1 = tahoe_cpu()
                    t1b = time.perf_counter()
                    got = grid.mutable_read(cap)
                    t2 = time.perf_counter()
                    c2 = tahoe_cpu()
                    assert got == data
                    if i >= 2:
                        tahoe["modify"].append(t1 - t0)
                        tahoe["read"].append(t2 - t1b)
                        tahoe["cpu_modify"].append(c1 - c0)
                        tahoe["cpu_read"].append(c2 - c1)
    finally:
        if grid is not None:
            grid.stop()
    return mesh, tahoe


def table(mesh: dict[str, list[float]], tahoe: dict[str, list[float]] | None,
          runs: int, size: int) -> str:
    lines = ["| op (1 MiB) | tw-mesh p50 | tw-mesh p90 | Tahoe-LAFS 1.20 MDMF p50 | "
             "tw-mesh / Tahoe | goal |", "|---|---|---|---|---|---|"]
    for key, label in (("modify", "Revise vs MDMF modify"), ("read", "Get latest vs MDMF read"),
                       ("read_replica", "Get latest on another replica vs MDMF read"),
                       ("read_far", "Get latest on a node holding no records vs MDMF read")):
        if not mesh[key]:
            continue
        theirs_key = "modify" if key == "modify" else "read"
        ours = _med(mesh[key]) * 1e3
        theirs = _med(tahoe[theirs_key]) * 1e3 if tahoe else float("nan")
        ratio = f"{ours / theirs:.2f}" if tahoe else "–"
        lines.append(f"| {label} | {ours:.1f} ms | {_pct(mesh[key], 0.9) * 1e3:.1f} ms | "
                     f"{theirs:.1f} ms | {ratio} | ≤ 0.20 |")
    for key, label in (("modify", "CPU per Revise vs per MDMF modify"),
                       ("read", "CPU per Get latest vs per MDMF read")):
        ours = statistics.fmean(mesh["cpu_" + key]) * 1e3
        theirs = statistics.fmean(tahoe["cpu_" + key]) * 1e3 if tahoe else float("nan")
        ratio = f"{ours / theirs:.2f}" if tahoe else "–"
        lines.append(f"| {label} (all processes, mean) | {ours:.1f} ms | | {theirs:.1f} ms | "
                     f"{ratio} | |")
    push = _med(mesh["push"]) * 1e3
    lines.append(f"| (reference) plain Push of the same 1 MiB | {push:.1f} ms | "
                 f"{_pct(mesh['push'], 0.9) * 1e3:.1f} ms | | | |")
    lines.append("")

    def ph(k: str) -> float:
        return _med(mesh.get("phase_" + k, [])) * 1e3

    lines.append(f"Revise inside node 0 (p50 per phase): sync with the replicas {ph('sync'):.1f} "
                 f"ms, concurrent with the content Push ({ph('content_push'):.1f} ms from the "
                 f"start, the counter reserved meanwhile); sign, then durable commit concurrent "
                 f"with the record's push to the first remote replica "
                 f"{ph('commit_and_replicate'):.1f} ms; node total {ph('total'):.1f} ms (the "
                 "rest of the client-side time is the 1 MiB local-API request).")
    lines.append(f"Get latest inside node 0 (p50): sync with the replicas {ph('get_sync'):.1f} ms, "
                 f"concurrent with reading the expected head; node total {ph('get_total'):.1f} "
                 "ms.")
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
        mesh, tahoe = asyncio.run(bench(Path(tmp), args.runs, args.size, use_tahoe))
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

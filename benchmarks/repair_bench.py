"""Repair: time to restore full redundancy after losing one node, and bytes moved per byte lost.

Run: ``.venv/bin/python -m benchmarks.repair_bench [--nodes 8] [--lost-mib 32] [--rate 10e6]
[--write-results]``; ``--lost-mib 1024`` is the issue's 1 GiB case (needs ~6 GiB of disk and
patience on a small machine).

Real ``tw-mesh join`` nodes on loopback (tests/support/nodes.py), RS(4,2), 4 MiB stripes,
random data in whole stripes (no padding fragments), enough of it that the victim holds about
``--lost-mib`` MiB of fragments. Repair flags: interval 1 s, grace 1 s, ``--rate`` bytes/s per
repairer (default: the shipped 10 MB/s). The victim is killed with -9; the clock runs until the
surviving nodes' repair counters show every lost fragment rebuilt, then the result is checked
on disk (every fragment hash present on a live node with matching bytes).

Reported: restore time (kill -9 → last fragment rebuilt; includes failure detection, the grace
period and the rate limit), repair bytes fetched per byte lost (ideal for RS: k = 4, the
stripe is decoded from any k fragments), and fetched+stored per byte lost (ideal k + 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import append_results, machine_line
from proto import taskworker_pb2, taskworker_pb2_grpc
from tests.support.nodes import NodeCluster, NodeProc

MiB = 1 << 20
STRIPE = 4 * MiB
K, M = 4, 2


def victim_fragments(node: NodeProc) -> tuple[int, int]:
    count = size = 0
    for path in (node.data_dir / "fragments").glob("??/*"):
        if len(path.name) == 64 and "." not in path.name:
            count += 1
            size += path.stat().st_size
    return count, size


async def repair_totals(cluster: NodeCluster) -> dict[str, int]:
    totals = {"fragments_rebuilt": 0, "bytes_fetched": 0, "bytes_stored": 0,
              "under_replicated": 0}
    for i, node in enumerate(cluster.nodes):
        if not node.alive:
            continue
        stub = cluster.stub(i, taskworker_pb2_grpc.NodeServiceStub)
        resp = await stub.Status(taskworker_pb2.StatusRequest(), timeout=30)
        doc = json.loads(resp.json)["services"].get("repair", {})
        for key in ("fragments_rebuilt", "bytes_fetched", "bytes_stored"):
            totals[key] += int(doc.get(key, 0))
        totals["under_replicated"] += len(doc.get("under_replicated", []))
    return totals


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    extra = ["--sweep-interval", "0.5", "--repair-interval", "1", "--repair-grace", "1",
             "--repair-rate", str(args.rate), "--scrub-interval", "0"]
    async with NodeCluster(tmp, args.nodes, extra=extra) as cluster:
        # The victim holds a stripe's fragment with odds (k+m)/nodes; a fragment is 1/k stripe.
        data_bytes = int(args.lost_mib * MiB * args.nodes * K / (K + M))
        per_file = args.file_stripes * STRIPE - 64       # whole stripes once sealed
        files = max(1, -(-data_bytes // per_file))
        stub = cluster.stub(0, taskworker_pb2_grpc.FileServiceStub)
        sem = asyncio.Semaphore(2)
        started = time.monotonic()

        async def push(i: int) -> str:
            async with sem:
                resp = await stub.Push(taskworker_pb2.PushRequest(
                    file_data=os.urandom(per_file), public=True, k=K, m=M,
                    stripe_size=STRIPE), timeout=600)
                assert not resp.under_replicated, resp.warnings
                return str(resp.cid)

        cids = await asyncio.gather(*(push(i) for i in range(files)))
        push_s = time.monotonic() - started
        victim_index = args.nodes // 2
        victim = cluster.nodes[victim_index]
        lost_count, lost_bytes = victim_fragments(victim)
        before = await repair_totals(cluster)
        victim.kill()
        killed = time.monotonic()
        while True:
            now = await repair_totals(cluster)
            if now["fragments_rebuilt"] - before["fragments_rebuilt"] >= lost_count \
                    and now["under_replicated"] == 0:
                break
            if time.monotonic() - killed > args.timeout:
                raise TimeoutError(f"repair incomplete after {args.timeout}s: {now}")
            await asyncio.sleep(0.2)
        restore_s = time.monotonic() - killed
        verified_s = float("nan")
        await asyncio.sleep(1.0)
        final = await repair_totals(cluster)
        fetched = final["bytes_fetched"] - before["bytes_fetched"]
        stored = final["bytes_stored"] - before["bytes_stored"]
        if args.verify:               # on disk: every fragment on a live node, no stripe crowded
            from tests.system.test_repair import health, manifests
            bodies = manifests(cluster.live())
            deadline = time.monotonic() + 120
            while (bad := await asyncio.to_thread(health, bodies, cluster.live())) != (0, 0):
                if time.monotonic() > deadline:
                    raise AssertionError(f"not healthy on disk (missing, crowded): {bad}")
                await asyncio.sleep(1.0)
            verified_s = time.monotonic() - killed
        return {"files": files, "cids": len(cids), "data_mib": files * per_file / MiB,
                "push_s": push_s, "lost_fragments": lost_count, "lost_mib": lost_bytes / MiB,
                "restore_s": restore_s, "fetched_mib": fetched / MiB, "stored_mib": stored / MiB,
                "fetched_per_lost": fetched / max(1, lost_bytes),
                "moved_per_lost": (fetched + stored) / max(1, lost_bytes),
                "rebuilt": final["fragments_rebuilt"] - before["fragments_rebuilt"],
                "verified_s": verified_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--lost-mib", type=float, default=32.0,
                   help="fragment MiB the killed node holds (1024 for the 1 GiB case)")
    p.add_argument("--file-stripes", type=int, default=1, help="4 MiB stripes per file")
    p.add_argument("--rate", type=float, default=10e6, help="repair bytes/s per repairer")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--no-verify", dest="verify", action="store_false")
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="repair-bench-") as tmp:
        r = asyncio.run(run(args, Path(tmp)))
    table = "\n".join([
        "| nodes | data stored | lost (victim's fragments) | restore time | repair rate cap "
        "| fetched / lost | (fetched + stored) / lost | fragments rebuilt |",
        "|---|---|---|---|---|---|---|---|",
        f"| {args.nodes} | {r['data_mib']:.0f} MiB in {r['files']:.0f} files "
        f"| {r['lost_mib']:.1f} MiB, {r['lost_fragments']:.0f} fragments "
        f"| {r['restore_s']:.1f} s | {args.rate / 1e6:.0f} MB/s per repairer "
        f"| {r['fetched_per_lost']:.2f} (ideal {K}) | {r['moved_per_lost']:.2f} (ideal {K + 1}) "
        f"| {r['rebuilt']:.0f} |",
    ])
    print(table)
    print(f"healthy on disk {r['verified_s']:.1f} s after the kill; "
          f"push of the data set: {r['push_s']:.1f} s; fetched {r['fetched_mib']:.1f} MiB, "
          f"stored {r['stored_mib']:.1f} MiB")
    if args.write_results:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        context = (f"`python -m benchmarks.repair_bench --lost-mib {args.lost_mib:g}`: "
                   f"{args.nodes} tw-mesh nodes on loopback, RS({K},{M}), 4 MiB stripes, "
                   "one node killed with -9; repair interval 1 s, grace 1 s. Restore time runs "
                   "from the kill to the last lost fragment rebuilt (failure detection + grace "
                   "+ rate-limited transfer); verified on disk afterwards. "
                   f"{machine_line()}; load average after the run {load}.")
        append_results("Repair: restore after losing one node", context, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

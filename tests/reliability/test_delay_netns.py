"""Issue 10 (1): delay faults — real nodes in network namespaces behind slow, jittery links.

This kernel has no sch_netem (nor sch_fq/etf for EDT delays), so the links are user-space delay
links (tests/support/delaylink.py): every frame between a node and the switch waits delay ±
jitter in a forwarder, kademlia UDP and gRPC TCP alike. Links of nodes 0..2 hold frames
25 ± 5 ms, of nodes 3..5 50 ± 10 ms, so a path is 40..60 ms one way inside the fast half,
60..90 ms across the halves and 80..120 ms inside the slow half. Before anything else the test
measures a TCP handshake across the halves: it must take at least the links' minimum (a lower
bound, so load cannot make it fail), which shows the delay is really applied.

Invariants under delay (and then delay plus 10% loss on every node): Push, Get, Revise and
CallFunction all succeed, reads are byte-exact, membership converges, every file is healthy,
every acknowledged revision is in the log. The short variant (3 nodes) runs in `make test`.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proto import taskworker_pb2 as pb
from proto import taskworker_pb2_grpc as pbg
from tests.reliability.test_faults_netns import (
    FAST,
    all_healthy,
    call_mix,
    call_when_ready,
    deploy,
    wait_for,
)
from tests.support import delaylink
from tests.support.netns import NetnsCluster, Topology, unavailable_reason
from tests.support.nodes import NodeCluster

REASON = unavailable_reason() or delaylink.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=str(REASON))
FAST_HALF, SLOW_HALF = (25.0, 5.0), (50.0, 10.0)        # (delay, jitter) ms per link
CONNECT = """
import socket, sys, time
took = []
for _ in range(3):
    t = time.monotonic()
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30).close()
    took.append(time.monotonic() - t)
print(min(took))
"""


def handshake_seconds(topo: Topology, src: int, target: str) -> float:
    """The fastest of three TCP connects from node ``src``'s namespace to ``target``."""
    host, port = target.rsplit(":", 1)
    out = subprocess.run(["ip", "netns", "exec", topo.names[src], sys.executable, "-c", CONNECT,
                          host, port], capture_output=True, text=True, timeout=120, check=True)
    return float(out.stdout)


async def delay_run(tmp: Path, nodes: int, pushes: int, calls: int, lossy: bool) -> None:
    topo = Topology(nodes, delay_links=True)
    half = (nodes + 1) // 2
    links = [FAST_HALF if i < half else SLOW_HALF for i in range(nodes)]
    try:
        for i, (ms, jitter) in enumerate(links):
            topo.delay(i, ms, jitter)
        started = time.monotonic()
        async with NetnsCluster(tmp, topo, extra=FAST) as cluster:
            joined = time.monotonic() - started
            far = nodes - 1
            rtt = handshake_seconds(topo, 0, cluster.nodes[far].peer)
            floor = 2 * sum(ms - jitter for ms, jitter in (links[0], links[far])) / 1000
            assert rtt >= floor, f"handshake {rtt * 1000:.0f} ms: the delay is not applied"
            await deploy(cluster, tmp)
            await call_when_ready(cluster.stub(far, pbg.RPCServiceStub), wait=60)
            await exercise(cluster, nodes, pushes, calls, "delay")
            if lossy:
                for i in range(nodes):
                    topo.loss(i, 10)
                await exercise(cluster, nodes, max(1, pushes // 2), max(1, calls // 2),
                               "delay + 10% loss")
                for i in range(nodes):
                    topo.loss(i, 0)
            await cluster.wait_converged(60)
            stats = topo.links.stats() if topo.links else []
            print(f"delay links {links} ms: joined in {joined:.1f}s, cross-half TCP handshake "
                  f"{rtt * 1000:.0f} ms (floor {floor * 1000:.0f}); frames forwarded "
                  f"{sum(s['forwarded'] for s in stats)}, dropped by the links "
                  f"{sum(s['dropped'] for s in stats)}")
    finally:
        topo.close()


async def exercise(cluster: NodeCluster, nodes: int, pushes: int, calls: int,
                   label: str) -> None:
    """Push from every node, Get everything everywhere, Revise, Call; nothing may fail."""
    rng = random.Random(len(label))
    started = time.monotonic()
    k, m = (2, 1) if nodes < 6 else (4, 2)
    files: dict[str, bytes] = {}
    for i in range(pushes):
        data = rng.randbytes(rng.randint(10_000, 300_000))
        r = await cluster.stub(i % nodes, pbg.FileServiceStub).Push(
            pb.PushRequest(file_data=data, public=True, k=k, m=m), timeout=120)
        assert not r.under_replicated, r.warnings
        files[r.cid] = data
    for i in range(nodes):
        s = cluster.stub(i, pbg.FileServiceStub)
        for cid, data in files.items():
            assert (await s.Get(pb.GetRequest(file_id=cid), timeout=120)).file_data == data
    s0 = cluster.stub(0, pbg.FileServiceStub)
    doc = await s0.Push(pb.PushRequest(file_data=b"v0", filename=f"{label}.txt", public=True),
                        timeout=120)
    versions = []
    for i in range(3):             # the owner revises; every node reads every revision
        data = f"{label} v{i + 1}".encode()
        r = await s0.Revise(pb.ReviseRequest(file_id=doc.file_id, file_data=data), timeout=120)
        versions.append((r.version, data))
    for i in range(nodes):
        s = cluster.stub(i, pbg.FileServiceStub)
        for version, data in versions:
            got = await s.Get(pb.GetRequest(file_id=doc.file_id, version=version), timeout=120)
            assert got.file_data == data, f"revision {version} lost at node {i}"
    log = await s0.Log(pb.LogRequest(file_id=doc.file_id), timeout=60)
    assert {v for v, _ in versions} <= {v.version for v in log.versions}
    for i in range(calls):
        rpc = cluster.stub(i % nodes, pbg.RPCServiceStub)
        assert await call_mix(rpc, i, 7, timeout=60) == {"sum": i + 7, "cat": f"{i}/7"}
    healthy = await wait_for("files healthy", lambda: all_healthy(cluster, list(files)), 120)
    print(f"  {label}, {nodes} nodes: {pushes} pushes, {pushes * nodes} gets, 3 revisions "
          f"read on every node, "
          f"{calls} calls in {time.monotonic() - started:.1f}s, all healthy (+{healthy:.1f}s)")


async def test_delay_short(tmp_path: Path) -> None:
    await delay_run(tmp_path, nodes=3, pushes=2, calls=3, lossy=False)


@pytest.mark.slow
async def test_delay_and_loss_six_nodes(tmp_path: Path) -> None:
    await delay_run(tmp_path, nodes=6, pushes=10, calls=20, lossy=True)

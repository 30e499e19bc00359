"""Issue 10 (1): faults on a real multi-host topology — each node in its own network namespace.

tests/support/netns.py builds the namespaces, a two-bridge switch, packet loss and partitions.
Scenarios: a partition splitting the mesh in two and healing; 20% packet loss on every link;
kill -9 of a random node at a random moment during Push, Get, Revise and CallFunction.
Invariants: every operation completes or fails with a deliberate gRPC status before its deadline
(never INTERNAL/UNKNOWN), reads are byte-exact, every acknowledged write is readable after the
faults heal, and repair brings every file back to "healthy" (Stat).

`make test` runs TW_FAULT_ROUNDS=1 kill per operation (4 kills); `make reliability` runs the slow
version with 50 per operation.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from compute import values
from proto import taskworker_pb2 as pb
from proto import taskworker_pb2_grpc as pbg
from tests.support.netns import NetnsCluster, Topology, unavailable_reason
from tests.support.nodes import ROOT, NodeCluster, run_cli

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=str(REASON))

FAST = ["--sweep-interval", "0.5", "--repair-interval", "1", "--repair-grace", "2",
        "--scrub-interval", "0", "--sync-interval", "0.5", "--provider-refresh", "0.5"]
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# SIGUSR1 makes a node print its asyncio tasks' stacks (used when an operation is slow)
DUMP_ENV = {"PYTHONPATH": os.pathsep.join(
    [str(ROOT / "tests" / "support" / "taskdump_site"), os.environ.get("PYTHONPATH", "")])}
MODULE = '''
from taskworker import TaskWorker

worker = TaskWorker("faults")

@worker.function("mix")
def mix(a, b):
    return {"sum": a + b, "cat": str(a) + "/" + str(b)}
'''


@pytest.fixture
def topo6() -> Iterator[Topology]:
    topo = Topology(6)
    try:
        yield topo
    finally:
        topo.close()


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.3)
    return time.monotonic() - started


async def peer_counts(cluster: NodeCluster, nodes: list[int]) -> list[int]:
    return [len((await cluster.peers_of(i)).peers) for i in nodes]


async def deploy(cluster: NodeCluster, tmp: Path, index: int = 0) -> None:
    module = tmp / "faults_mod.py"
    module.write_text(MODULE)
    out = await asyncio.to_thread(run_cli, "deploy", str(module), "--json",
                                  api=cluster.nodes[index].api)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["functions"] == ["mix"]


async def call_mix(stub: pbg.RPCServiceStub, a: int, b: int, timeout: float = 20
                   ) -> dict[str, Any]:
    resp = await stub.CallFunction(pb.FunctionCallRequest(
        function_name="mix", args=values.to_list([a, b]), timeout=timeout), timeout=timeout + 5)
    assert not resp.error.type, resp.error
    result: dict[str, Any] = values.from_value(resp.result)
    return result


async def call_when_ready(stub: pbg.RPCServiceStub, wait: float = 30) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            assert await call_mix(stub, 1, 2) == {"sum": 3, "cat": "1/2"}
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE) \
                    or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def all_healthy(cluster: NodeCluster, cids: list[str], index: int = 0) -> bool:
    stub = cluster.stub(index, pbg.FileServiceStub)
    for cid in cids:
        st = await stub.Stat(pb.StatRequest(file_id=cid), timeout=30)
        if st.health != "healthy":      # shown if the wait fails: which file, and why
            print(f"Stat {cid[:24]}: {st.health}", [(f.index, f.holder[:8], f.reachable,
                                                      f.healthy) for f in st.fragments])
            return False
    return True


# ------------------------------------------------------------------------------- partition

async def test_partition_splits_and_heals(tmp_path: Path, topo6: Topology) -> None:
    async with NetnsCluster(tmp_path, topo6, extra=FAST) as cluster:
        s0 = cluster.stub(0, pbg.FileServiceStub)
        s3 = cluster.stub(3, pbg.FileServiceStub)
        rng = random.Random(7)
        files = {}
        for i in range(4):
            data = rng.randbytes(20_000) + bytes([i])
            r = await s0.Push(pb.PushRequest(file_data=data, public=True), timeout=60)
            assert not r.under_replicated, r.warnings
            files[r.cid] = data
        doc = await s0.Push(pb.PushRequest(file_data=b"v1", filename="doc.txt"), timeout=60)
        out = await asyncio.to_thread(run_cli, "user", "create", "bob", "--data-dir",
                                      str(cluster.nodes[3].data_dir))
        assert out.returncode == 0, out.stderr
        bob = out.stdout.decode().split()[1]
        out = await asyncio.to_thread(run_cli, "grant", doc.file_id, bob, api=cluster.nodes[0].api)
        assert out.returncode == 0, out.stderr
        await s0.Synchronous(pb.SynchronousRequest(file_id=doc.file_id), timeout=30)
        # bob reads the file first: when every record replica lands on the other side
        # (1 file in 20), his node still knows it (storage/versions/sync.py)
        await s3.Synchronous(pb.SynchronousRequest(file_id=doc.file_id, user_id="bob"),
                             timeout=30)

        topo6.partition({3, 4, 5})
        split = await wait_for("membership splits 3|3", lambda: _counts_are(cluster, 2), 30)
        a = await s0.Revise(pb.ReviseRequest(file_id=doc.file_id, file_data=b"left edit"),
                            timeout=60)
        b = await s3.Revise(pb.ReviseRequest(file_id=doc.file_id, file_data=b"right edit",
                                             user_id="bob"), timeout=60)
        assert a.version != b.version

        topo6.heal()
        # No restart: departed peers are re-probed (mesh/dht/rejoin.py) and the halves merge.
        await cluster.wait_converged(60)
        s0 = cluster.stub(0, pbg.FileServiceStub)
        s3 = cluster.stub(3, pbg.FileServiceStub)

        async def conflict_seen() -> bool:
            sync = await s0.Synchronous(pb.SynchronousRequest(file_id=doc.file_id), timeout=30)
            return sync.conflict and {h.version for h in sync.heads} == {a.version, b.version}
        await wait_for("both sides' versions show as a conflict", conflict_seen, 60)
        g = await s3.Get(pb.GetRequest(file_id=doc.file_id, user_id="bob"), timeout=30)
        assert not g.file_data and {c.version for c in g.conflicts} == {a.version, b.version}
        for index in (1, 4):
            stub = cluster.stub(index, pbg.FileServiceStub)
            for cid, data in files.items():
                assert (await stub.Get(pb.GetRequest(file_id=cid), timeout=60)).file_data == data
        await wait_for("files healthy", lambda: all_healthy(cluster, list(files)), 60)
        print(f"partition: split seen in {split:.1f}s; conflict and {len(files)} files "
              "intact after healing")


async def _counts_are(cluster: NodeCluster, want: int) -> bool:
    return all(c == want for c in await peer_counts(cluster, list(range(len(cluster.nodes)))))


@pytest.mark.slow
async def test_healed_partition_remerges_by_itself(tmp_path: Path) -> None:
    topo = Topology(4)
    try:
        async with NetnsCluster(tmp_path, topo, extra=FAST) as cluster:
            topo.partition({2, 3})
            await wait_for("split", lambda: _counts_are(cluster, 1), 30)
            topo.heal()
            await cluster.wait_converged(30)
    finally:
        topo.close()


# ------------------------------------------------------------------------------- packet loss

async def loss_run(tmp: Path, nodes: int, pushes: int, calls: int) -> None:
    """20% of the packets every node receives are dropped (so every path loses 20%)."""
    topo = Topology(nodes)
    try:
        async with NetnsCluster(tmp, topo, extra=FAST) as cluster:
            await deploy(cluster, tmp)
            await call_when_ready(cluster.stub(nodes - 1, pbg.RPCServiceStub))
            s0 = cluster.stub(0, pbg.FileServiceStub)
            doc = await s0.Push(pb.PushRequest(file_data=b"v0", filename="doc"), timeout=60)
            for i in range(nodes):
                topo.loss(i, 20)
            rng = random.Random(3)
            started = time.monotonic()
            files = {}
            k, m = (2, 1) if nodes < 6 else (4, 2)
            for i in range(pushes):
                s = cluster.stub(i % nodes, pbg.FileServiceStub)
                data = rng.randbytes(rng.randint(10_000, 300_000))
                r = await s.Push(pb.PushRequest(file_data=data, public=True, k=k, m=m),
                                 timeout=120)
                files[r.cid] = data
            print(f"  loss: {pushes} pushes done at {time.monotonic() - started:.1f}s")
            for i in range(nodes):
                s = cluster.stub(i, pbg.FileServiceStub)
                for cid, data in files.items():
                    assert (await s.Get(pb.GetRequest(file_id=cid), timeout=120)).file_data == data
            print(f"  loss: gets done at {time.monotonic() - started:.1f}s")
            rev = await s0.Revise(pb.ReviseRequest(file_id=doc.file_id, file_data=b"v1"),
                                  timeout=120)
            print(f"  loss: revise done at {time.monotonic() - started:.1f}s")
            for i in range(calls):
                rpc = cluster.stub(i % nodes, pbg.RPCServiceStub)
                assert await call_mix(rpc, i, 5) == {"sum": i + 5, "cat": f"{i}/5"}
            got = await s0.Get(pb.GetRequest(file_id=doc.file_id), timeout=120)
            assert got.file_data == b"v1" and got.version == rev.version
            took = time.monotonic() - started
            counts = await peer_counts(cluster, list(range(nodes)))
            print(f"20% loss, {nodes} nodes: {pushes} pushes, {pushes * nodes} gets, 1 revise, "
                  f"{calls} calls in {took:.1f}s; peers seen {counts}")
    finally:
        topo.close()


@pytest.mark.slow
async def test_twenty_percent_packet_loss(tmp_path: Path) -> None:
    await loss_run(tmp_path, nodes=3, pushes=2, calls=3)


@pytest.mark.slow
@pytest.mark.timeout(900)   # a hang guard, not a speed claim: on 2 cores this run took 54–60 s
#                             with hedged connects, reads and stores (134–300+ s before; 164–195 s
#                             over gRPC; docs/channel.md, "Known limit")
async def test_twenty_percent_packet_loss_six_nodes(tmp_path: Path) -> None:
    await loss_run(tmp_path, nodes=6, pushes=10, calls=20)


# ------------------------------------------------------------------------------- kill -9

class Ledger:
    def __init__(self) -> None:
        self.pushed: dict[str, bytes] = {}        # acknowledged Push: cid -> bytes
        self.revised: dict[str, bytes] = {}       # acknowledged Revise: version -> bytes
        self.outcomes: Counter[str] = Counter()
        self.kills = 0


async def _one_op(kind: str, cluster: NodeCluster, ledger: Ledger, rng: random.Random,
                  fid: str, deadline: float) -> None:
    s = cluster.stub(0, pbg.FileServiceStub)
    if kind == "push":
        data = rng.randbytes(rng.randint(1_000, 200_000))
        r = await s.Push(pb.PushRequest(file_data=data, public=True), timeout=deadline)
        ledger.pushed[r.cid] = data
    elif kind == "get":
        cid, data = rng.choice(sorted(ledger.pushed.items()))
        got = await s.Get(pb.GetRequest(file_id=cid), timeout=deadline)
        assert got.file_data == data, f"corrupt read of {cid}"
    elif kind == "revise":
        data = rng.randbytes(rng.randint(100, 5_000))
        r = await s.Revise(pb.ReviseRequest(file_id=fid, file_data=data), timeout=deadline)
        ledger.revised[r.version] = data
    else:
        a, b = rng.randint(0, 10**6), rng.randint(0, 10**6)
        assert await call_mix(cluster.stub(0, pbg.RPCServiceStub), a, b,
                              timeout=deadline - 5) == {"sum": a + b, "cat": f"{a}/{b}"}


async def kill_during_ops(tmp: Path, topo: Topology, rounds: int) -> Ledger:
    """``rounds`` kills per operation kind; node 0 is the client's entry and stays up."""
    rng = random.Random(int(os.environ.get("TW_FAULT_SEED", "10")))
    ledger = Ledger()
    deadline = 40.0
    async with NetnsCluster(tmp, topo, extra=FAST, env=DUMP_ENV) as cluster:
        await deploy(cluster, tmp, index=1)
        await call_when_ready(cluster.stub(0, pbg.RPCServiceStub))
        s0 = cluster.stub(0, pbg.FileServiceStub)
        doc = await s0.Push(pb.PushRequest(file_data=b"v0", filename="log.txt"), timeout=60)
        for _ in range(3):
            await _one_op("push", cluster, ledger, rng, doc.file_id, deadline)
        plan = [k for k in ("push", "get", "revise", "call") for _ in range(rounds)]
        rng.shuffle(plan)
        restarting: dict[int, asyncio.Task[Any]] = {}
        for kind in plan:
            # at most two nodes down at once (m = 2): wait for older restarts beyond one
            while len(restarting) > 1:
                done, _ = await asyncio.wait(restarting.values(),
                                             return_when=asyncio.FIRST_COMPLETED)
                for i, task in list(restarting.items()):
                    if task in done:
                        task.result()
                        del restarting[i]
            victim = rng.choice([i for i in range(1, len(cluster.nodes)) if i not in restarting])
            op = asyncio.create_task(_one_op(kind, cluster, ledger, rng, doc.file_id, deadline))
            await asyncio.sleep(rng.uniform(0, 0.3))
            cluster.nodes[victim].kill()
            ledger.kills += 1
            started = time.monotonic()
            if not (await asyncio.wait({op}, timeout=20))[0]:
                for node in cluster.live():    # where is it stuck? (see the nodes' logs)
                    assert node.proc is not None
                    os.kill(node.proc.pid, signal.SIGUSR1)
            try:
                await op
                ledger.outcomes[f"{kind}:OK"] += 1
            except grpc.aio.AioRpcError as exc:
                ledger.outcomes[f"{kind}:{exc.code().name}"] += 1
                assert exc.code() not in BAD, f"{kind}: {exc.code().name} {exc.details()}"
                assert exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED, \
                    f"{kind} hung until its {deadline}s deadline (node {victim} killed)"
            assert time.monotonic() - started < deadline + 5
            restarting[victim] = asyncio.create_task(cluster.restart(victim))
            for i, task in list(restarting.items()):
                if task.done():
                    task.result()              # a restart that failed fails the test
                    del restarting[i]
        for task in restarting.values():
            await task
        # faults healed: every acknowledged write readable, byte-identical, and redundant
        await cluster.wait_converged(60)
        for cid, data in ledger.pushed.items():
            got = await cluster.stub(2, pbg.FileServiceStub).Get(pb.GetRequest(file_id=cid),
                                                                  timeout=60)
            assert got.file_data == data, f"acknowledged push {cid} lost or corrupt"
        s0 = cluster.stub(0, pbg.FileServiceStub)
        for version, data in ledger.revised.items():
            got = await s0.Get(pb.GetRequest(file_id=doc.file_id, version=version), timeout=60)
            assert got.file_data == data, f"acknowledged revise {version} lost"
        log = await s0.Log(pb.LogRequest(file_id=doc.file_id), timeout=30)
        assert set(ledger.revised) <= {v.version for v in log.versions}
        took = await wait_for("every file healthy after repair",
                              lambda: all_healthy(cluster, list(ledger.pushed)), 120)
        print(f"kill -9 x{ledger.kills}: {dict(sorted(ledger.outcomes.items()))}; "
              f"{len(ledger.pushed)} pushes + {len(ledger.revised)} revisions intact; "
              f"healthy {took:.1f}s after the last restart")
    return ledger


async def test_kill_nodes_during_operations(tmp_path: Path, topo6: Topology) -> None:
    await kill_during_ops(tmp_path, topo6, int(os.environ.get("TW_FAULT_ROUNDS", "1")))


@pytest.mark.slow
async def test_kill_nodes_during_operations_50_each(tmp_path: Path, topo6: Topology) -> None:
    ledger = await kill_during_ops(tmp_path, topo6, 50)
    assert ledger.kills == 200


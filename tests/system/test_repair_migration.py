"""Migration: a provider that goes offline stops being used, its functions are served by others.

The compute capability does the work (compute/router.py cross-checks provider records with
membership and retries elsewhere); this test pins the issue-8 guarantees from the outside: a
deployed function served by several peers keeps answering from every node while one of them is
killed with -9, and once membership has noticed, no call is even attempted on the dead peer.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc

from compute import values
from proto import taskworker_pb2, taskworker_pb2_grpc
from tests.support.nodes import NodeCluster, run_cli

MODULE = '''
from taskworker import TaskWorker
worker = TaskWorker("mig")

@worker.function("triple")
def triple(x):
    return 3 * x
'''


async def call(stub: taskworker_pb2_grpc.RPCServiceStub,
               x: int) -> taskworker_pb2.FunctionCallResponse:
    resp: taskworker_pb2.FunctionCallResponse = await stub.CallFunction(
        taskworker_pb2.FunctionCallRequest(function_name="triple",
                                           args=values.to_list([x]), timeout=20), timeout=25)
    return resp


async def test_killed_provider_is_replaced_and_never_tried_again(tmp_path: Path) -> None:
    src = tmp_path / "mig.py"
    src.write_text(MODULE)
    # Generous DHT timeouts: on a loaded machine a 1 s ping timeout makes membership flap.
    extra = ["--sweep-interval", "1", "--rpc-timeout", "3", "--provider-refresh", "0.5"]
    async with NodeCluster(tmp_path, 5, extra=extra) as cluster:
        out = await asyncio.to_thread(run_cli, "deploy", str(src), "--json",
                                      api=cluster.nodes[4].api)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["functions"] == ["triple"]
        stubs = [cluster.stub(i, taskworker_pb2_grpc.RPCServiceStub) for i in range(4)]
        # Wait until calls from node 0 run on a provider other than node 0 itself.
        serving: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for i, stub in enumerate(stubs):
                try:
                    resp = await call(stub, 2)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in (grpc.StatusCode.NOT_FOUND,
                                          grpc.StatusCode.UNAVAILABLE):
                        raise
                    continue
                assert values.from_value(resp.result) == 6
                serving[resp.node_id[:16]] = i
            remote = [nid for nid, caller in serving.items()
                      if nid != cluster.nodes[caller].node_id_prefix]
            if remote:
                break
            await asyncio.sleep(0.2)
        assert remote, f"no call ran remotely: {serving}"
        victim = next(n for n in cluster.nodes if n.node_id_prefix == remote[0])
        survivors = [i for i in range(4) if cluster.nodes[i] is not victim]
        victim.kill()
        killed_at = time.monotonic()
        failures: list[str] = []
        clean_since: float | None = None
        x = 0
        while True:                   # every call still succeeds, from every surviving node
            for i in survivors:
                x += 1
                try:
                    resp = await call(stubs[i], x)
                except grpc.aio.AioRpcError as exc:
                    failures.append(f"node {i}: {exc.code().name} {exc.details()}")
                    continue
                assert values.from_value(resp.result) == 3 * x
                assert resp.node_id[:16] != victim.node_id_prefix
                if resp.attempts > 1:
                    clean_since = None
                elif clean_since is None:
                    clean_since = time.monotonic()
            if clean_since is not None and time.monotonic() - clean_since > 2.0:
                break
            assert time.monotonic() - killed_at < 60, "calls kept trying the dead provider"
            await asyncio.sleep(0.05)
        print(f"dead provider out of use {clean_since - killed_at:.2f}s after kill -9")
        assert failures == []
        # Once membership has noticed, the dead peer's provider record is never tried again.
        deadline = time.monotonic() + 60
        for i in survivors:
            while any(p.node_id.startswith(victim.node_id_prefix)
                      for p in (await cluster.peers_of(i)).peers):
                assert time.monotonic() < deadline, f"node {i} still lists the dead peer"
                await asyncio.sleep(0.2)
        for i in survivors:
            for _ in range(10):
                x += 1
                resp = await call(stubs[i], x)
                assert values.from_value(resp.result) == 3 * x and resp.attempts == 1

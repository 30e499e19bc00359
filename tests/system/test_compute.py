"""Compute end to end: real `tw-mesh join` nodes plus TaskWorker processes (the seed's
examples, unchanged), calls through a third peer, errors, deploys, failover under kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from compute import values
from proto import taskworker_pb2, taskworker_pb2_grpc
from tests.support.nodes import ROOT, NodeCluster, run_cli

_READY = re.compile(r"taskworker (\S+): serving .* on node ([0-9a-f]+) \(api ([\d.]+:\d+), "
                    r"peer ([\d.]+:\d+)\)")


class WorkerProc:
    """A TaskWorker script run as its own process (embedded node), joined to ``bootstrap``."""

    def __init__(self, script: Path, tmp: Path, bootstrap: str, name: str) -> None:
        self.log_path = tmp / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
               "TASKWORKER_PORT": "0", "TASKWORKER_NODE_POOL": bootstrap,
               "TASKWORKER_DATA_DIR": str(tmp / f"{name}-data")}
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.api = self.peer = self.node_id = ""

    async def wait_ready(self, timeout: float = 60.0) -> WorkerProc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            found = _READY.search(text)
            if found:
                self.node_id, self.api, self.peer = found.group(2), found.group(3), found.group(4)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{text[-3000:]}")
            await asyncio.sleep(0.05)
        raise TimeoutError(self.log_path.read_text(errors="replace")[-3000:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        return self.proc.returncode


async def call(stub: taskworker_pb2_grpc.RPCServiceStub, fn: str, *args: Any,
               timeout: float = 30.0, **kwargs: Any) -> taskworker_pb2.FunctionCallResponse:
    resp: taskworker_pb2.FunctionCallResponse = await stub.CallFunction(
        taskworker_pb2.FunctionCallRequest(function_name=fn, args=values.to_list(list(args)),
                                           kwargs=values.to_struct(kwargs), timeout=timeout),
        timeout=timeout + 5)
    return resp


async def call_when_ready(stub: taskworker_pb2_grpc.RPCServiceStub, fn: str, *args: Any,
                          wait: float = 30.0) -> taskworker_pb2.FunctionCallResponse:
    """First call after a provider starts: its record and membership have to propagate."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return await call(stub, fn, *args)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE) \
                    or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_seed_examples_called_through_a_third_peer(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 3) as cluster:
        basic = WorkerProc(ROOT / "examples" / "seed_basic.py", tmp_path,
                           cluster.nodes[0].peer, "basic")
        rpc = WorkerProc(ROOT / "examples" / "seed_rpc.py", tmp_path, cluster.nodes[1].peer, "rpc")
        try:
            await basic.wait_ready()
            await rpc.wait_ready()
            stub = cluster.stub(2, taskworker_pb2_grpc.RPCServiceStub)
            resp = await call_when_ready(stub, "hello")
            assert values.from_value(resp.result) == "Hello from HiveMind!"
            assert resp.worker_id == "worker_001" and resp.node_id.startswith(basic.node_id)
            assert resp.attempts == 1
            assert values.from_value((await call_when_ready(stub, "add", 2, 3)).result) == 5
            resp = await call_when_ready(stub, "calculate", 1.5, 2)
            assert values.from_value(resp.result) == 3.5
            assert resp.node_id.startswith(rpc.node_id)
            data = {"items": [1, 2, {"k": None}], "flag": True}
            resp = await call(stub, "process_data", data)
            assert values.from_value(resp.result) == {"processed": True, "result": data}
            # the CLI, through the third peer
            out = await asyncio.to_thread(run_cli, "call", "add", "--args", "[20, 22]",
                                          api=cluster.nodes[2].api)
            assert out.returncode == 0 and out.stdout.decode().strip() == "42", out.stderr
            out = await asyncio.to_thread(run_cli, "call", "process_data", "--kwargs",
                                          '{"data": "x"}', "--json", api=cluster.nodes[2].api)
            doc = json.loads(out.stdout)
            assert doc["result"] == {"processed": True, "result": "x"}
            assert doc["worker_id"] == "worker_001" and doc["attempts"] == 1
            # a graceful stop withdraws the functions
            assert basic.terminate() == 0
            with pytest.raises(grpc.aio.AioRpcError) as info:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    await call(stub, "hello", timeout=3)
                    await asyncio.sleep(0.2)
            assert info.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)
        finally:
            basic.kill()
            rpc.kill()


ERRORS = '''
import asyncio
import os
from taskworker import TaskWorker

worker = TaskWorker("errors_worker")

@worker.function("boom")
def boom(x):
    return helper(x)

def helper(x):
    return 1 / x

@worker.function("spin")
def spin():
    while True:
        pass

@worker.function("hog")
def hog():
    return "x" * (1 << 30)

@worker.function("escape")
def escape():
    return os.getcwd()

@worker.function("secret")
def secret():
    return worker.get_secret("external_api_key")

@worker.function("big")
def big():
    return 2 ** 80

if __name__ == "__main__":
    asyncio.run(worker.start_server())
'''


async def test_errors_map_to_grpc_status_with_structured_user_errors(tmp_path: Path) -> None:
    script = tmp_path / "errors_worker.py"
    script.write_text(ERRORS)
    async with NodeCluster(tmp_path, 2) as cluster:
        worker = WorkerProc(script, tmp_path, cluster.nodes[0].peer, "errors")
        try:
            await worker.wait_ready()
            stub = cluster.stub(1, taskworker_pb2_grpc.RPCServiceStub)

            async def code_of(fn: str, *args: Any, **kw: Any) -> grpc.aio.AioRpcError:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call_when_ready(stub, fn, *args, **kw)
                return info.value

            err = await code_of("boom", 0)
            assert err.code() == grpc.StatusCode.UNKNOWN
            assert err.details() == "ZeroDivisionError: division by zero"
            meta = dict(err.trailing_metadata() or ())
            user = taskworker_pb2.UserError()
            user.ParseFromString(meta["tw-user-error-bin"])
            assert user.type == "ZeroDivisionError" and "helper" in user.traceback
            assert meta["tw-worker-id"] == "errors_worker"
            assert (await code_of("boom")).code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(stub, "missing_fn")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(stub, "spin", timeout=2.0)      # the caller's deadline reaches
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED   # the sandbox
            assert (await code_of("hog")).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            err = await code_of("escape")
            assert err.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.PERMISSION_DENIED)
            assert "not available inside the sandbox" in (err.details() or "")
            err = await code_of("secret")
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED or "PermissionError" in (
                err.details() or "")
            assert (await code_of("big")).code() == grpc.StatusCode.INVALID_ARGUMENT
            # the node keeps serving after all that
            assert values.from_value((await call(stub, "boom", 2)).result) == 0.5
            out = await asyncio.to_thread(run_cli, "call", "boom", "--args", "[0]",
                                          api=cluster.nodes[1].api)
            line = out.stderr.decode().strip()
            assert out.returncode == 1 and "\n" not in line
            assert "ZeroDivisionError: division by zero" in line and "errors_worker" in line
            out = await asyncio.to_thread(run_cli, "call", "nope", api=cluster.nodes[1].api)
            assert out.returncode == 1 and "NOT_FOUND" in out.stderr.decode()
        finally:
            worker.kill()


MODULE_V1 = '''
import asyncio
from taskworker import TaskWorker
worker = TaskWorker("shop")

@worker.function("price")
def price(qty, unit=2.5):
    return {"total": qty * unit, "version": 1}

if __name__ == "__main__":
    asyncio.run(worker.start_server())
'''


async def test_deployed_function_survives_its_deployer_and_only_its_owner_redeploys(
        tmp_path: Path) -> None:
    v1 = tmp_path / "shop.py"
    v1.write_text(MODULE_V1)
    v2 = tmp_path / "shop2.py"
    v2.write_text(MODULE_V1.replace('"version": 1', '"version": 2'))
    # Fast refresh: serving nodes republish the deploy records they serve (same CID and
    # deploy sequence) many times during the test.
    extra = ["--sweep-interval", "0.5", "--provider-refresh", "0.3"]
    async with NodeCluster(tmp_path, 4, extra=extra) as cluster:
        out = await asyncio.to_thread(run_cli, "deploy", str(v1), "--json",
                                      api=cluster.nodes[3].api)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["functions"] == ["price"] and doc["cid"].startswith("b")
        assert doc["code_replicas"] >= 2
        bad = await asyncio.to_thread(run_cli, "deploy", str(v1), "--name", "nope",
                                      api=cluster.nodes[3].api)
        assert bad.returncode == 1 and "offers no function 'nope'" in bad.stderr.decode()
        stub = cluster.stub(1, taskworker_pb2_grpc.RPCServiceStub)
        resp = await call_when_ready(stub, "price", 4)
        assert values.from_value(resp.result) == {"total": 10, "version": 1}
        await asyncio.sleep(1.0)                         # a few republish rounds
        for index in (0, 3):
            s = cluster.stub(index, taskworker_pb2_grpc.RPCServiceStub)
            assert values.from_value((await call(s, "price", 4)).result)["version"] == 1
        cluster.nodes[3].kill()                          # the deployer is gone (kill -9)
        for index in (0, 1, 2):
            s = cluster.stub(index, taskworker_pb2_grpc.RPCServiceStub)
            for _ in range(5):
                resp = await call(s, "price", 2, unit=1.25)
                assert values.from_value(resp.result) == {"total": 2.5, "version": 1}
        # The name belongs to the deployer's key: another node's redeploy is refused ...
        out = await asyncio.to_thread(run_cli, "deploy", str(v2), api=cluster.nodes[0].api)
        assert out.returncode == 1 and "PERMISSION_DENIED" in out.stderr.decode()
        assert values.from_value((await call(stub, "price", 1)).result)["version"] == 1
        # ... and the owner, back with the same key, redeploys.
        await cluster.restart(3)
        out = await asyncio.to_thread(run_cli, "deploy", str(v2), api=cluster.nodes[3].api)
        assert out.returncode == 0, out.stderr
        for index in (1, 2):  # takes effect once a node's provider cache (2 s) expires
            s = cluster.stub(index, taskworker_pb2_grpc.RPCServiceStub)
            deadline = time.monotonic() + 30
            while values.from_value((await call(s, "price", 1)).result)["version"] != 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            for _ in range(5):     # and stays: the newest deploy wins
                assert values.from_value((await call(s, "price", 1)).result)["version"] == 2
        out = await asyncio.to_thread(run_cli, "functions", "price", "--json",
                                      api=cluster.nodes[0].api)
        providers = json.loads(out.stdout)["providers"]
        # Only what the owner signed is listed: the replicas' records of v1 no longer count.
        assert providers and all(p["code_cid"] and p["deploy_seq"] for p in providers)
        assert doc["cid"] not in {p["code_cid"] for p in providers}


SQUARE = '''
import asyncio
from taskworker import TaskWorker

worker = TaskWorker("sq")

@worker.function("square")
def square(x):
    return x * x

if __name__ == "__main__":
    asyncio.run(worker.start_server())
'''


async def test_two_providers_one_killed_during_500_calls_no_call_fails(tmp_path: Path) -> None:
    script = tmp_path / "square.py"
    script.write_text(SQUARE)
    async with NodeCluster(tmp_path, 3) as cluster:
        a = WorkerProc(script, tmp_path, cluster.nodes[0].peer, "sq_a")
        b = WorkerProc(script, tmp_path, cluster.nodes[1].peer, "sq_b")
        try:
            await a.wait_ready()
            await b.wait_ready()
            stub = cluster.stub(2, taskworker_pb2_grpc.RPCServiceStub)
            await call_when_ready(stub, "square", 3)
            seen: set[str] = set()
            deadline = time.monotonic() + 30
            while len(seen) < 2 and time.monotonic() < deadline:   # both are in use
                seen.add((await call(stub, "square", 2)).node_id[:16])
            assert seen == {a.node_id, b.node_id}
            results: list[Any] = []
            failures: list[str] = []
            counter = iter(range(500))

            async def client() -> None:
                for i in counter:
                    if i == 150:
                        a.kill()                                   # kill -9 mid-run
                    try:
                        resp = await call(stub, "square", i)
                        results.append((i, values.from_value(resp.result), resp.attempts,
                                        resp.node_id[:16]))
                    except grpc.aio.AioRpcError as exc:
                        failures.append(f"{i}: {exc.code().name} {exc.details()}")

            await asyncio.gather(*(client() for _ in range(8)))
            assert failures == []
            assert sorted(r[0] for r in results) == list(range(500))
            assert all(r[1] == r[0] * r[0] for r in results)
            assert {r[3] for r in results if r[0] > 300} == {b.node_id}
        finally:
            a.kill()
            b.kill()


@pytest.mark.slow
async def test_a_stopped_provider_is_bypassed_within_its_wall_limit(tmp_path: Path) -> None:
    """SIGSTOP (not kill): the connection stays open but nothing answers. Calls that went to
    it are retried elsewhere once the function's wall limit (+ slack) has passed."""
    script = tmp_path / "square.py"
    script.write_text(SQUARE)
    async with NodeCluster(tmp_path, 3) as cluster:
        a = WorkerProc(script, tmp_path, cluster.nodes[0].peer, "sq_a")
        b = WorkerProc(script, tmp_path, cluster.nodes[1].peer, "sq_b")
        try:
            await a.wait_ready()
            await b.wait_ready()
            stub = cluster.stub(2, taskworker_pb2_grpc.RPCServiceStub)
            await call_when_ready(stub, "square", 3)
            os.killpg(a.proc.pid, signal.SIGSTOP)
            started = time.monotonic()
            results = await asyncio.gather(*(call(stub, "square", i) for i in range(40)))
            assert [values.from_value(r.result) for r in results] == [i * i for i in range(40)]
            assert {r.node_id[:16] for r in results} == {b.node_id}
            assert time.monotonic() - started < 30          # well inside the deadline
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(a.proc.pid, signal.SIGCONT)
            a.kill()
            b.kill()


@pytest.mark.slow
async def test_deployed_function_keeps_answering_while_serving_nodes_die(tmp_path: Path) -> None:
    """Calls through a storage-only node (it must forward); two of the three compute nodes,
    the deployer among them, are killed with kill -9 during the run: no call fails."""
    module = tmp_path / "shop.py"
    module.write_text(MODULE_V1)
    async with NodeCluster(tmp_path, 3) as cluster:
        await cluster.add(1, extra=["--sweep-interval", "0.5", "--role", "storage"])
        await cluster.wait_converged()
        out = await asyncio.to_thread(run_cli, "deploy", str(module), api=cluster.nodes[0].api)
        assert out.returncode == 0, out.stderr
        stub = cluster.stub(3, taskworker_pb2_grpc.RPCServiceStub)
        await call_when_ready(stub, "price", 1)
        failures: list[str] = []
        served: list[str] = []
        counter = iter(range(300))

        async def client() -> None:
            for i in counter:
                if i == 100:
                    cluster.nodes[1].kill()
                if i == 200:
                    cluster.nodes[0].kill()             # the deployer
                try:
                    resp = await call(stub, "price", i)
                    assert values.from_value(resp.result)["total"] == i * 2.5
                    served.append(resp.node_id[:16])
                except grpc.aio.AioRpcError as exc:
                    failures.append(f"{i}: {exc.code().name} {exc.details()}")

        await asyncio.gather(*(client() for _ in range(6)))
        assert failures == []
        assert served[-20:] == [cluster.nodes[2].node_id_prefix] * 20

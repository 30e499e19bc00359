"""TaskWorker in this process (embedded node, wait=False): registration before and after
start, calls through its own API, storage and host services, clean stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from compute import values
from proto import taskworker_pb2, taskworker_pb2_grpc
from taskworker import TaskWorker
from taskworker.api_auth import aio_channel


def triple(x):  # type: ignore[no-untyped-def]
    return x * 3


def late(items):  # type: ignore[no-untyped-def]
    return sorted(items)


async def _call(stub: taskworker_pb2_grpc.RPCServiceStub, fn: str, *args: object
                ) -> taskworker_pb2.FunctionCallResponse:
    resp: taskworker_pb2.FunctionCallResponse = await stub.CallFunction(
        taskworker_pb2.FunctionCallRequest(function_name=fn, args=values.to_list(list(args))),
        timeout=30)
    return resp


async def test_in_process_worker_serves_registers_late_and_stops(tmp_path: Path) -> None:
    worker = TaskWorker("inproc", data_dir=tmp_path)
    worker.register_function("triple", triple)

    @worker.function()
    def greet(name):  # type: ignore[no-untyped-def]
        return f"hi {name}"

    await worker.start_server(port=0, wait=False)
    try:
        async with aio_channel(f"127.0.0.1:{worker.node.api_port}", worker.node.api_token) as channel:
            stub = taskworker_pb2_grpc.RPCServiceStub(channel)
            resp = await _call(stub, "triple", 4)
            assert values.from_value(resp.result) == 12 and resp.worker_id == "inproc"
            assert values.from_value((await _call(stub, "greet", "mesh")).result) == "hi mesh"
            worker.register_function("late", late)               # after start: published too
            for _ in range(100):
                try:
                    resp = await _call(stub, "late", [3, 1, 2])
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.05)
            assert values.from_value(resp.result) == [1, 2, 3]
            # host services outside the sandbox: refused without a proxy policy allowing it
            with pytest.raises(Exception):  # noqa: B017 - PermissionError or the proxy's refusal
                await worker.get_secret("no-such-secret")
            # storage through the node's FileService (when this tree has the capability)
            # (the worker creates "user123" in its own node's keyring on first write)
            try:
                pushed = await worker.storage.Push(taskworker_pb2.PushRequest(
                    file_data=b"hello", filename="a.txt", user_id="user123"))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNIMPLEMENTED
            else:
                got = await worker.storage.Get(taskworker_pb2.GetRequest(
                    file_id=pushed.file_id, user_id="user123"))
                assert got.file_data == b"hello"
    finally:
        await worker.stop_server()
    assert worker.node is None
    await worker.stop_server()                                   # idempotent


async def test_port_in_use_and_bad_addresses_are_clear_errors(tmp_path: Path) -> None:
    from taskworker import TaskWorkerError

    first = TaskWorker("one", data_dir=tmp_path)
    await first.start_server(port=0, wait=False)
    try:
        second = TaskWorker("two", data_dir=tmp_path)
        with pytest.raises(TaskWorkerError, match="TASKWORKER_PORT"):
            await second.start_server(port=first.node.api_port, wait=False)
        with pytest.raises(TaskWorkerError, match="bad address"):
            await TaskWorker("three", "no-port-here", data_dir=tmp_path).start_server(
                port=0, wait=False)
    finally:
        await first.stop_server()


def test_seed_storage_example_runs_unchanged(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.support.nodes import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "TASKWORKER_PORT": "0",
           "TASKWORKER_DATA_DIR": str(tmp_path / "tw")}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "seed_storage.py")],
                         cwd=tmp_path, env=env, capture_output=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().strip().endswith("Hello from HiveMind storage!")

"""taskworker.worker.sandbox_source/capture: what a registered function ships to the sandbox."""

from __future__ import annotations

import pytest

from compute.deploy import sandbox_source
from compute.sandbox import SandboxPool, UserCodeError
from taskworker.worker import TaskWorkerError, capture

SEED = '''import asyncio
import json, os
from proto import taskworker_pb2
from taskworker import TaskWorker
import os.path as osp

worker = TaskWorker("worker_001")

@worker.function("hello")
def hello_world():
    return "Hello from HiveMind!"

@worker.function("dump")
def dump(x):
    return json.dumps(x)

@worker.function("cwd")
def cwd():
    return os.getcwd()

def boom():
    raise ValueError("line eleven-ish")

async def main():
    await worker.start_server(port=50052)

if __name__ == "__main__":
    asyncio.run(main())
'''


def test_lines_stay_in_place_and_disallowed_imports_become_stand_ins() -> None:
    out = sandbox_source(SEED)
    assert len(out.splitlines()) == len(SEED.splitlines())
    lines = out.splitlines()
    assert lines[0].startswith("asyncio = type(")
    assert lines[1].startswith("import json; os = type(")
    assert lines[2].startswith("taskworker_pb2 = type(")
    assert lines[3] == "from taskworker import TaskWorker"
    assert lines[4].startswith("osp = type(")
    assert "asyncio.run" not in out and lines[-2] == "pass"


async def test_the_transformed_seed_module_runs_in_the_sandbox() -> None:
    pool = SandboxPool(size=2)
    await pool.start()
    try:
        source = sandbox_source(SEED)
        assert await pool.run(source, "hello", [], {}) == "Hello from HiveMind!"
        assert await pool.run(source, "dump", [[1]], {}) == "[1]"
        with pytest.raises(UserCodeError) as info:
            await pool.run(source, "cwd", [], {})
        assert info.value.type == "ImportError" and "'os' is not available" in info.value.message
        with pytest.raises(UserCodeError) as info:
            await pool.run(source, "boom", [], {}, filename="seed.py")
        line = SEED.splitlines().index('    raise ValueError("line eleven-ish")') + 1
        assert f"line {line}, in boom" in info.value.traceback    # the user's own line
    finally:
        await pool.stop()


def test_capture_refuses_lambdas_and_source_less_functions() -> None:
    with pytest.raises(TaskWorkerError, match="lambda"):
        capture(lambda: 1)
    namespace: dict[str, object] = {}
    exec("def f():\n    return 1\n", namespace)  # noqa: S102 - a function with no file
    with pytest.raises(TaskWorkerError, match="source"):
        capture(namespace["f"])  # type: ignore[arg-type]


def test_capture_of_a_nested_function_ships_only_that_function() -> None:
    def outer_helper(x: int) -> int:
        return x + 1

    source, entry, _ = capture(outer_helper)
    assert entry == "outer_helper" and source.startswith("def outer_helper")


FUTURE = '''from __future__ import annotations
import grpc

def f(x: grpc.Channel, *rest: list[
        int], **kw: dict[str, grpc.Thing]) -> grpc.Result:
    y: grpc.X = x
    return [y, len(rest)]
'''


async def test_future_annotations_are_quoted_in_place() -> None:
    out = sandbox_source(FUTURE)
    assert len(out.splitlines()) == len(FUTURE.splitlines())
    assert "-> 'grpc.Result':" in out and "y: 'grpc.X' = x" in out
    pool = SandboxPool(size=1)
    await pool.start()
    try:
        assert await pool.run(out, "f", [1, 2, 3], {}) == [1, 2]
    finally:
        await pool.stop()

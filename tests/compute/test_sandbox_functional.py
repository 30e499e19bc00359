"""Functional tests of compute.sandbox: real zygote, real single-use workers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from compute.sandbox import (
    BadArguments,
    EntryNotFound,
    Limits,
    OutputLimit,
    PolicyViolation,
    SandboxError,
    SandboxPool,
    SandboxUnavailable,
    TimeLimit,
    UserCodeError,
)

SEED = '''
from taskworker import TaskWorker

worker = TaskWorker("worker_001")

@worker.function("hello")
def hello_world():
    return "Hello from HiveMind!"

@worker.function("add")
def add_numbers(a, b):
    return a + b

@worker.function("calculate")
def calculate_result(x, y):
    return x + y

@worker.function("process_data")
def process_data(data):
    return {"processed": True, "result": data}

def plain(x, *, scale=2):
    return x * scale

async def coro(x):
    return x + 1

def boom(x):
    return helper(x)

def helper(x):
    return 1 / x

def not_json():
    return {1, 2}

def use_secret():
    return worker.get_secret("external_api_key")

def use_api():
    return worker.call_external_api("https://api.example.com/v1",
                                    headers={"Authorization": "Bearer " + worker.get_secret("k")})

def use_dns():
    return worker.resolve("example.com", "A")

def stdlib():
    import json, math, re, datetime, collections, itertools, functools, random, hashlib
    import base64, decimal, fractions, statistics, typing, dataclasses, string, time
    from collections import namedtuple
    P = namedtuple("P", "x y")
    @dataclasses.dataclass
    class D:
        a: int
    T = typing.TypeVar("T")
    return [math.sqrt(16), hashlib.sha256(b"x").hexdigest()[:8], P(1, 2).y, D(3).a,
            str(decimal.Decimal("1.1") + 1), str(fractions.Fraction(1, 3)),
            statistics.mean([1, 2, 3]), datetime.date(2020, 1, 2).isoformat(),
            datetime.datetime.strptime("2021-03-04", "%Y-%m-%d").day,
            re.sub("a", "b", "aa"), base64.b64encode(b"hi").decode(), str(T)]
'''


@pytest.fixture
async def pool() -> AsyncIterator[SandboxPool]:
    p = SandboxPool(size=2)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


class Host:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def get_secret(self, name: str) -> str:
        self.calls.append(("get_secret", name))
        if name in ("external_api_key", "k"):
            return "s3cret"
        raise PermissionError(f"secret {name!r} not allowed")

    async def call_external_api(self, url: str, method: str, headers: dict[str, str] | None,
                                body: str | bytes | None, timeout: float) -> dict[str, Any]:
        self.calls.append(("call_external_api", (url, method, headers)))
        return {"status": 200, "body": "ok"}

    async def resolve(self, domain: str, record_type: str) -> list[dict[str, Any]]:
        self.calls.append(("resolve", (domain, record_type)))
        return [{"type": "A", "value": "93.184.216.34", "ttl": 60}]


@pytest.mark.parametrize(("entry", "args", "kwargs", "expected"), [
    ("hello", [], {}, "Hello from HiveMind!"),
    ("add", [2, 3], {}, 5),
    ("calculate", [1.5, 2], {}, 3.5),
    ("process_data", [{"a": [1, 2, {"b": None}]}], {},
     {"processed": True, "result": {"a": [1, 2, {"b": None}]}}),
    ("process_data", [[1, "x", True]], {}, {"processed": True, "result": [1, "x", True]}),
    ("plain", [3], {"scale": 5}, 15),
    ("coro", [1], {}, 2),
])
async def test_seed_functions(pool: SandboxPool, entry: str, args: list[Any],
                              kwargs: dict[str, Any], expected: Any) -> None:
    assert await pool.run(SEED, entry, args, kwargs) == expected


async def test_allowed_stdlib(pool: SandboxPool) -> None:
    out = await pool.run(SEED, "stdlib", [], {})
    assert out[:4] == [4.0, "2d711642", 2, 3]
    assert out[4:] == ["2.1", "1/3", 2, "2020-01-02", 4, "bb", "aGk=", "~T"]


async def test_user_exception_structure(pool: SandboxPool) -> None:
    with pytest.raises(UserCodeError) as info:
        await pool.run(SEED, "boom", [0], {}, filename="mod.py")
    err = info.value
    assert err.type == "ZeroDivisionError" and err.user_message == "division by zero"
    assert err.code == grpc.StatusCode.UNKNOWN
    assert 'File "mod.py", line 29, in boom' in err.traceback
    assert "return 1 / x" in err.traceback
    assert "compute/sandbox" not in err.traceback and "child.py" not in err.traceback


async def test_syntax_error_and_non_json_result(pool: SandboxPool) -> None:
    with pytest.raises(UserCodeError) as info:
        await pool.run("def f(:\n  pass", "f", [], {})
    assert info.value.type == "SyntaxError"
    with pytest.raises(UserCodeError, match="not JSON"):
        await pool.run(SEED, "not_json", [], {})


@pytest.mark.parametrize(("args", "kwargs"), [
    ([1], {}), ([1, 2, 3], {}), ([1], {"zz": 2}), ([{1, 2}], {}), ([float("nan")], {}),
])
async def test_bad_arguments(pool: SandboxPool, args: list[Any], kwargs: dict[str, Any]) -> None:
    with pytest.raises(BadArguments) as info:
        await pool.run(SEED, "add", args, kwargs)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_type_errors_inside_the_function_are_the_users(pool: SandboxPool) -> None:
    """Only a call whose arguments do not bind is BadArguments; a TypeError the function
    raises (directly or from a builtin it calls) is the user's error."""
    source = ("def f(x):\n    return len(x)\n\ndef g(x):\n    raise TypeError('mine')\n\n"
              "class C:\n    def __init__(self, x):\n        self.x = x\n\n"
              "def cycle():\n    a = []\n    a.append(a)\n    return a\n")
    with pytest.raises(UserCodeError) as info:
        await pool.run(source, "f", [3], {})
    assert info.value.type == "TypeError" and "len()" in info.value.user_message
    with pytest.raises(UserCodeError, match="mine"):
        await pool.run(source, "g", [1], {})
    with pytest.raises(BadArguments, match="bad arguments for 'g': missing required"):
        await pool.run(source, "g", [], {})
    with pytest.raises(BadArguments, match="bad arguments for 'C'"):
        await pool.run(source, "C", [1, 2], {})
    with pytest.raises(UserCodeError, match="not JSON"):
        await pool.run(source, "cycle", [], {})


async def test_bad_entry(pool: SandboxPool) -> None:
    with pytest.raises(EntryNotFound):
        await pool.run(SEED, "missing", [], {})
    with pytest.raises(BadArguments):
        await pool.run(SEED, "not a name", [], {})
    with pytest.raises(EntryNotFound):
        await pool.run(SEED, "__import__", [], {})


async def test_host_services_through_the_pipe(pool: SandboxPool) -> None:
    host = Host()
    assert await pool.run(SEED, "use_secret", [], {}, host=host) == "s3cret"
    assert await pool.run(SEED, "use_api", [], {}, host=host) == {"status": 200, "body": "ok"}
    assert (await pool.run(SEED, "use_dns", [], {}, host=host))[0]["ttl"] == 60
    assert ("call_external_api", ("https://api.example.com/v1", "GET",
                                  {"Authorization": "Bearer s3cret"})) in host.calls
    src = "def f():\n    return worker.get_secret('other')\n"
    with pytest.raises(PolicyViolation, match="not allowed"):
        await pool.run(src, "f", [], {}, host=host)
    with pytest.raises(PolicyViolation):  # default host refuses everything
        await pool.run(SEED, "use_secret", [], {})


async def test_secrets_are_redacted_from_errors(pool: SandboxPool) -> None:
    src = ("def f():\n    key = worker.get_secret('external_api_key')\n"
           "    raise ValueError('bad key ' + key)\n")
    with pytest.raises(UserCodeError) as info:
        await pool.run(src, "f", [], {}, host=Host())
    assert "s3cret" not in str(info.value) and "s3cret" not in info.value.traceback
    assert info.value.user_message == "bad key [REDACTED]"


async def test_per_call_limits(pool: SandboxPool) -> None:
    src = "def f(n):\n    return 'x' * n\n"
    assert len(await pool.run(src, "f", [1000], {})) == 1000
    with pytest.raises(OutputLimit) as info:
        await pool.run(src, "f", [1000], {}, limits=Limits(output_bytes=500))
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    slow = "import time\ndef f():\n    time.sleep(60)\n"
    t0 = time.monotonic()
    with pytest.raises(TimeLimit) as tinfo:
        await pool.run(slow, "f", [], {}, limits=Limits(wall_time_s=0.3))
    assert time.monotonic() - t0 < 30     # cut short (the sleep is 60 s); a bound, not speed
    assert tinfo.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await pool.run(SEED, "add", [1, 1], {}) == 2


async def test_concurrent_calls_and_stats(pool: SandboxPool) -> None:
    results = await asyncio.gather(*[pool.run(SEED, "add", [i, i], {}) for i in range(40)])
    assert results == [2 * i for i in range(40)]
    stats = pool.stats()
    assert stats["calls"] == 40 and stats["failures"] == 0 and stats["size"] == 2
    assert stats["layers"]["seccomp"] is True


async def test_stopped_pool_refuses() -> None:
    p = SandboxPool(size=1)
    await p.start()
    await p.stop()
    with pytest.raises(SandboxUnavailable):
        await p.run(SEED, "add", [1, 2], {})


async def test_every_call_uses_a_fresh_process(pool: SandboxPool) -> None:
    src = "import random\ndef f():\n    return random.getrandbits(64)\n"
    values = {await pool.run(src, "f", [], {}) for _ in range(6)}
    assert len(values) == 6  # reseeded per worker, not cloned zygote state


async def test_zygote_killed_is_relaunched(pool: SandboxPool) -> None:
    assert await pool.run(SEED, "add", [1, 2], {}) == 3
    os.kill(pool.stats()["zygote_pid"], signal.SIGKILL)  # pid 1 of the sandbox ns dies too
    for _ in range(100):
        if pool.stats()["zygote_restarts"] == 1 and pool.stats()["idle"]:
            break
        await asyncio.sleep(0.05)
    assert pool.stats()["zygote_restarts"] == 1
    assert await pool.run(SEED, "add", [2, 2], {}) == 4


async def test_modules_are_compiled_once_in_the_zygote(pool: SandboxPool) -> None:
    for i in range(12):
        assert await pool.run(SEED, "add", [i, 1], {}) == i + 1
    assert pool.stats()["code_cache_hits"] >= 8  # the first few workers were forked before
    big = "X = 1\n" * 30000 + "def f():\n    return X\n"  # above the cache's size limit
    assert await pool.run(big, "f", [], {}) == 1


@pytest.mark.parametrize("source", [
    "def f(:\n    pass\n",
    "x = " + "(" * 5000 + ")" * 5000 + "\n",
    "x = " + "[" * 100 + "]" * 100 + "\n" + "def f():\n    return x\n",
    "x = 2 ** 10 ** 8\n",
])
async def test_hostile_sources_do_not_hurt_the_zygote(pool: SandboxPool, source: str) -> None:
    for _ in range(4):
        try:
            await pool.run(source, "f", [], {}, limits=Limits(wall_time_s=2))
        except (UserCodeError, TimeLimit, EntryNotFound):
            pass
    assert pool.stats()["zygote_restarts"] == 0
    assert await pool.run(SEED, "add", [1, 2], {}) == 3


class OddHost(Host):
    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[object] = []

    async def get_secret(self, name: str) -> str:
        if name == "slow":
            await asyncio.sleep(60)
        if name == "odd":
            return {1, 2}  # type: ignore[return-value]  # not JSON: the user gets an error
        if name == "crash":
            raise KeyError("vault offline")
        return await super().get_secret(name)

    async def call_external_api(self, url: str, method: str, headers: dict[str, str] | None,
                                body: str | bytes | None, timeout: float) -> dict[str, Any]:
        self.bodies.append(body)
        return {"status": 201}


async def test_host_hook_edge_cases(pool: SandboxPool) -> None:
    host = OddHost()
    src = ("def get(name):\n    try:\n        return worker.get_secret(name)\n"
           "    except Exception as exc:\n        return [type(exc).__name__, str(exc)]\n"
           "def post(data):\n    return worker.call_external_api('https://x.test', 'POST',"
           " body=data.encode() if data.startswith('b:') else data)\n")
    assert (await pool.run(src, "get", ["odd"], {}, host=host))[0] == "HostRequestError"
    assert await pool.run(src, "get", ["crash"], {}, host=host) == [
        "HostRequestError", "'vault offline'"]
    assert await pool.run(src, "post", ["b:raw"], {}, host=host) == {"status": 201}
    assert await pool.run(src, "post", ["text"], {}, host=host) == {"status": 201}
    assert host.bodies == [b"b:raw", "text"]
    t0 = time.monotonic()
    with pytest.raises(TimeLimit):  # time spent in the host hook counts toward the deadline
        await pool.run(src, "get", ["slow"], {}, host=host, limits=Limits(wall_time_s=0.5))
    assert time.monotonic() - t0 < 30     # cut short (the hook sleeps 60 s)


async def test_call_in_flight_when_the_zygote_dies(pool: SandboxPool) -> None:
    spin = "def f():\n    while True:\n        pass\n"
    task = asyncio.create_task(pool.run(spin, "f", [], {}, limits=Limits(wall_time_s=20)))
    await asyncio.sleep(0.3)
    os.kill(pool.stats()["zygote_pid"], signal.SIGKILL)
    with pytest.raises(SandboxError):
        await asyncio.wait_for(task, 10)
    for _ in range(100):
        if pool.stats()["idle"]:
            break
        await asyncio.sleep(0.05)
    assert await pool.run(SEED, "add", [1, 2], {}) == 3


async def test_zygote_has_no_threads_and_no_openssl() -> None:
    """The zygote forks with kernel.fork_bare (no CPython at-fork work), which is only valid
    while it has a single thread; and it must not load OpenSSL (libcrypto's mappings make
    every fork and exit dearer). Checked from inside a worker, with the import guard off."""
    src = ("import sys, _thread\ndef f():\n    return [sys.modules.get('_hashlib', 0) is None, "
           "_thread._count(), [m for m in ('threading', '_ssl', '_hashlib') "
           "if sys.modules.get(m) is not None]]\n")
    p = SandboxPool(size=1, inprocess_guard=False)
    await p.start()
    try:
        assert await p.run(src, "f", [], {}) == [True, 0, []]
    finally:
        await p.stop()

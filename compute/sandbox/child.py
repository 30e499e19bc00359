"""The single-use worker: hardens itself, runs exactly one call, reports, exits. Stdlib only.

Runs in a process forked from the zygote. Order matters: privileges and filesystem go
before the call is read; per-call rlimits, the audit gate and seccomp go right before the
user's source is executed (seccomp last, since it also forbids the setup syscalls).
"""

from __future__ import annotations

import builtins
import inspect
import linecache
import math
import os
import random
import resource
import signal
import sys
import traceback
import types
from dataclasses import dataclass
from typing import Any, NoReturn

from . import framing, guard, kernel, shim

NOBODY = 65534
_MAX_TEXT = 8192


@dataclass
class WorkerConfig:
    bpf: bytes
    drop_uid: bool
    landlock_abi: int
    stdlib_dir: str
    base_vm_bytes: int
    inprocess: bool = True  # False only in tests that check the OS layers alone


class Refusal(Exception):
    """A classified failure reported to the host (kind is one of the wire kinds)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class CpuTimeExceeded(BaseException):
    pass


def _on_sigxcpu(_signum: int, _frame: Any) -> None:
    raise CpuTimeExceeded


def harden(cfg: WorkerConfig) -> None:
    """Pre-call layers: parent-death kill, non-dumpable, nobody, no_new_privs, Landlock."""
    kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
    kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
    if cfg.drop_uid:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
    if cfg.landlock_abi:
        kernel.landlock_deny_all(cfg.landlock_abi)
    os.environ.clear()  # already empty but for the LC_CTYPE that locale coercion adds
    random.seed()  # the zygote's state is shared by every fork: reseed from getrandom()


def apply_limits(limits: dict[str, Any], cfg: WorkerConfig) -> None:
    cpu = max(1, math.ceil(float(limits["cpu_time_s"])))
    table = [
        (resource.RLIMIT_AS, cfg.base_vm_bytes + int(limits["memory_bytes"])),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, int(limits["file_size_bytes"])),
        (resource.RLIMIT_NOFILE, int(limits["max_open_files"])),
        (resource.RLIMIT_NPROC, 0),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_MEMLOCK, 0),
        (resource.RLIMIT_MSGQUEUE, 0),
    ]
    for which, soft in table:
        hard = soft + 1 if which == resource.RLIMIT_CPU else soft
        resource.setrlimit(which, (soft, hard))
    signal.signal(signal.SIGXCPU, _on_sigxcpu)


def _text(value: object) -> str:
    try:
        text = str(value)
    except BaseException:  # noqa: B036 - user __str__ may raise anything
        text = "<unprintable>"
    return text[:_MAX_TEXT]


def _user_error(exc: BaseException, filename: str) -> dict[str, Any]:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    if isinstance(exc, SyntaxError):
        lines += traceback.format_exception_only(type(exc), exc)
    else:
        lines.append(f"{type(exc).__name__}: {_text(exc)}\n")
    return {"op": "error", "kind": "user", "type": _text(type(exc).__name__),
            "message": _text(exc), "traceback": "".join(lines)[-4 * _MAX_TEXT:]}


def _drive(value: Any) -> Any:
    """Run an ``async def`` entry point to completion (it may not await real I/O)."""
    if not inspect.iscoroutine(value):
        return value
    try:
        while True:
            value.send(None)
            value.close()
            raise Refusal("policy", "async functions may not await external futures")
    except StopIteration as stop:
        return stop.value


def _run_user(env: dict[str, Any], msg: dict[str, Any], gate: guard.AuditGate) -> Any:
    entry, args, kwargs = str(msg["entry"]), msg["args"], msg["kwargs"]
    code = compile(str(msg["source"]), str(msg["filename"]), "exec")
    try:
        gate.active = True
        exec(code, env)  # noqa: S102 - running user code is this process's only job
    finally:
        gate.active = False
    func = shim.registered().get(entry) or env.get(entry)
    if not callable(func) or entry.startswith("__"):
        raise Refusal("entry", f"no function {entry!r} in the module")
    try:
        inspect.signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        raise Refusal("args", f"bad arguments for {entry!r}: {exc}") from None
    except ValueError:
        pass  # no signature available: let the call decide
    try:
        gate.active = True
        return _drive(func(*args, **kwargs))
    finally:
        gate.active = False


def execute(msg: dict[str, Any], sock_fd: int, cfg: WorkerConfig) -> bytes:
    """Run the call; returns the encoded reply body (result or classified error)."""
    filename, source = str(msg["filename"]), str(msg["source"])
    apply_limits(msg["limits"], cfg)
    gate = guard.AuditGate(cfg.stdlib_dir)
    worker, module = shim.make_modules()
    importer = guard.make_import(guard.ALLOWED_MODULES, {"taskworker": module})
    user_module = types.ModuleType("user_module")  # dataclasses/pickle-free lookups need it
    sys.modules["user_module"] = user_module
    env: dict[str, Any] = user_module.__dict__
    env.update(worker=worker, __builtins__=guard.safe_builtins(importer), __file__=filename)
    if cfg.inprocess:
        sys.addaudithook(gate)
    else:
        env["__builtins__"] = builtins.__dict__
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    shim.PIPE.fd = sock_fd
    if cfg.bpf:
        kernel.load_seccomp(cfg.bpf)
    try:
        result = _run_user(env, msg, gate)
    except Refusal:
        raise
    except CpuTimeExceeded:
        raise Refusal("time", "CPU time limit exceeded") from None
    except MemoryError:
        raise Refusal("memory", "memory limit exceeded") from None
    except PermissionError as exc:
        raise Refusal("policy", _text(exc) or "operation not permitted") from None
    except BaseException as exc:  # noqa: B036 - everything user code raises is reported
        return framing.dumps(_user_error(exc, filename))
    try:
        body = framing.dumps({"op": "result", "value": result})
    except (TypeError, ValueError, RecursionError) as exc:
        return framing.dumps({"op": "error", "kind": "user", "type": "TypeError",
                              "message": f"result is not JSON-serializable: {_text(exc)}",
                              "traceback": ""})
    if len(body) > int(msg["limits"]["output_bytes"]):
        raise Refusal("output", f"result of {len(body)} bytes exceeds the output cap")
    return body


def worker_main(sock_fd: int, cfg: WorkerConfig) -> NoReturn:
    """Entry point in the freshly forked worker; never returns."""
    try:
        harden(cfg)
        msg = framing.read_frame(sock_fd)
        try:
            body = execute(msg, sock_fd, cfg)
        except Refusal as ref:
            body = framing.dumps({"op": "error", "kind": ref.kind, "message": _text(ref)})
        except CpuTimeExceeded:
            body = framing.dumps({"op": "error", "kind": "time", "message": "CPU time limit"})
        except MemoryError:
            body = framing.dumps({"op": "error", "kind": "memory", "message": "memory limit"})
        framing.write_all(sock_fd, framing.encode_body(body))
    except BaseException:  # noqa: B036,S110 - nothing may escape a worker but its exit
        pass
    finally:
        os._exit(0)

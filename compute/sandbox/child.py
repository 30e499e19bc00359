"""The single-use worker: hardens itself, runs exactly one call, reports, exits. Stdlib only.

Runs in a process forked from the zygote. Everything but the per-call rlimits is in place
before the call is read (uid, Landlock, seccomp), and the call path is walked once on a
throwaway function so its copy-on-write faults are paid while the worker is idle. When the
call arrives: rlimits (soft == hard: nobody can only lower them), then the user's code with
the audit gate active.
"""

from __future__ import annotations

import builtins
import linecache
import math
import os
import resource
import signal
import sys
import traceback
import types
from dataclasses import dataclass
from typing import Any, NoReturn

from . import codecache, framing, guard, kernel, shim

NOBODY = 65534
SOCK_FD, LANDLOCK_FD = 3, 4  # where the zygote places a worker's only two descriptors
_MAX_TEXT = 8192
_WARMUP_SOURCE = "def f(a, b, *, c=1):\n    return [a + b, {'k': c}]\n"


@dataclass
class WorkerConfig:
    seccomp: kernel.SeccompProgram | None
    drop_uid: bool
    landlock_fd: int  # ruleset fd inherited at LANDLOCK_FD, or -1
    stdlib_dir: str
    base_vm_bytes: int
    inprocess: bool = True  # False only in tests that check the OS layers alone
    pid_namespace: bool = False


class Prepared:
    """Per-worker objects built once in the zygote (fork shares them copy-on-write), so a
    worker touches as few pages as possible: every page it writes costs a COW fault."""

    def __init__(self, cfg: WorkerConfig, code: codecache.CodeCache) -> None:
        self.code = code  # the zygote's compiled modules, as of this worker's fork
        self.cache_hit = False
        self.gate = guard.AuditGate(cfg.stdlib_dir)
        self.warm_code = compile(_WARMUP_SOURCE, "<warm-up>", "exec", dont_inherit=True)
        self.worker, taskworker = shim.make_modules()
        importer = guard.make_import(guard.ALLOWED_MODULES, {"taskworker": taskworker})
        self.module = types.ModuleType("user_module")  # dataclasses look classes up here
        sys.modules["user_module"] = self.module
        self.module.__dict__.update(worker=self.worker, __builtins__=(
            guard.safe_builtins(importer) if cfg.inprocess else builtins.__dict__))
        if cfg.inprocess:
            sys.addaudithook(self.gate)  # inert until gate.active is set in a worker


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
    """Pre-call layers of this worker: parent-death kill, its own Landlock domain, seccomp.
    Only the per-call rlimits remain, set (lowered) once the call arrives."""
    # uid/gid nobody, no_new_privs and non-dumpable are inherited from the init that forked
    # us; in a pid namespace the death of that init already takes every worker with it.
    if not cfg.pid_namespace:
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
    if cfg.landlock_fd >= 0:
        kernel.landlock_restrict(LANDLOCK_FD)
    if cfg.seccomp is not None:
        cfg.seccomp.load()


def drop_to_nobody() -> None:
    """Done once by the forking init (workers inherit it): no groups, uid and gid nobody,
    then non-dumpable again (a uid change resets it to ``fs.suid_dumpable``)."""
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    kernel.prctl(kernel.PR_SET_DUMPABLE, 0)


def fixed_limits() -> None:
    """Limits common to every worker, set once in the zygote and inherited; also the
    SIGXCPU handler (CPU soft limit -> TimeLimit; the hard limit, 1 s later, is SIGKILL)."""
    for which in (resource.RLIMIT_CORE, resource.RLIMIT_MEMLOCK, resource.RLIMIT_MSGQUEUE):
        resource.setrlimit(which, (0, 0))
    signal.signal(signal.SIGXCPU, _on_sigxcpu)


def apply_limits(limits: dict[str, Any], cfg: WorkerConfig) -> None:
    cpu = max(1, math.ceil(float(limits["cpu_time_s"])))
    setrlimit = resource.setrlimit
    setrlimit(resource.RLIMIT_AS, (cfg.base_vm_bytes + int(limits["memory_bytes"]),) * 2)
    setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    setrlimit(resource.RLIMIT_FSIZE, (int(limits["file_size_bytes"]),) * 2)
    setrlimit(resource.RLIMIT_NOFILE, (int(limits["max_open_files"]),) * 2)
    if cfg.drop_uid:  # binds only non-root ids; 0 is below the count of nobody's processes
        setrlimit(resource.RLIMIT_NPROC, (0, 0))


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
    if not isinstance(value, types.CoroutineType):
        return value
    try:
        while True:
            value.send(None)
            value.close()
            raise Refusal("policy", "async functions may not await external futures")
    except StopIteration as stop:
        return stop.value


def _run_user(env: dict[str, Any], msg: dict[str, Any], prep: Prepared) -> Any:
    entry, args, kwargs = str(msg["entry"]), msg["args"], msg["kwargs"]
    gate = prep.gate
    code = prep.code.get(msg.get("code_key"))
    prep.cache_hit = code is not None
    if code is None:
        code = compile(str(msg["source"]), str(msg["filename"]), "exec", dont_inherit=True)
    try:
        gate.active = True
        exec(code, env)  # noqa: S102 - running user code is this process's only job
    finally:
        gate.active = False
    func = shim.registered().get(entry) or env.get(entry)
    if not callable(func) or entry.startswith("__"):
        raise Refusal("entry", f"no function {entry!r} in the module")
    unbound: TypeError | None = None
    try:
        gate.active = True
        try:
            value = func(*args, **kwargs)
        except TypeError as exc:
            unbound = exc
        else:
            return _drive(value)
    finally:
        gate.active = False
    # A TypeError with no frame below ours was raised by the call itself, before the
    # function ran: the arguments do not fit (checked only now, on failure: the check
    # walks code a worker would otherwise pay ~20 copy-on-write faults for on every call).
    assert unbound is not None
    tb = unbound.__traceback__
    if tb is None or tb.tb_next is not None:
        raise unbound  # raised inside the function: the user's error
    try:
        guard.check_args(func, args, kwargs)  # the clearer message, for plain functions
    except TypeError as exc:
        unbound = exc
    raise Refusal("args", f"bad arguments for {entry!r}: {unbound}") from None


def execute(msg: dict[str, Any], sock_fd: int, cfg: WorkerConfig, prep: Prepared) -> bytes:
    """Run the call; returns the encoded reply body (result or classified error)."""
    filename = str(msg["filename"])
    apply_limits(msg["limits"], cfg)
    env = prep.module.__dict__
    env["__file__"] = filename
    shim.PIPE.fd = sock_fd
    try:
        result = _run_user(env, msg, prep)
    except Refusal:
        raise
    except CpuTimeExceeded:
        raise Refusal("time", "CPU time limit exceeded") from None
    except MemoryError:
        raise Refusal("memory", "memory limit exceeded") from None
    except PermissionError as exc:
        raise Refusal("policy", _text(exc) or "operation not permitted") from None
    except BaseException as exc:  # noqa: B036 - everything user code raises is reported
        source = str(msg["source"])
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        return framing.dumps(_user_error(exc, filename))
    try:
        body = framing.dumps({"op": "result", "value": result, "cached": prep.cache_hit})
    except (TypeError, ValueError, RecursionError) as exc:
        return framing.dumps({"op": "error", "kind": "user", "type": "TypeError",
                              "message": f"result is not JSON-serializable: {_text(exc)}",
                              "traceback": ""})
    if len(body) > int(msg["limits"]["output_bytes"]):
        raise Refusal("output", f"result of {len(body)} bytes exceeds the output cap")
    return body


_WARMUP_CALL = framing.dumps({"op": "call", "entry": "f", "args": [1, 2], "kwargs": {"c": 3},
                              "limits": {"wall_time_s": 1.0}, "source": "(compiled)"})


def warm_up(prep: Prepared) -> None:
    """Walk the call path once on a throwaway function while the worker is idle, so the
    copy-on-write faults it costs are paid before the call arrives, not during it."""
    msg = framing.loads(_WARMUP_CALL)
    scratch: dict[str, Any] = {"__builtins__": prep.module.__dict__["__builtins__"]}
    exec(prep.warm_code, scratch)  # noqa: S102 - our constant, compiled by the zygote
    framing.dumps({"op": "result", "value": scratch["f"](*msg["args"], **msg["kwargs"])})


def worker_main(sock_fd: int, cfg: WorkerConfig, prep: Prepared) -> NoReturn:
    """Entry point in the freshly forked worker; never returns."""
    try:
        harden(cfg)
        warm_up(prep)
        msg = framing.read_frame(sock_fd)
        try:
            body = execute(msg, sock_fd, cfg, prep)
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

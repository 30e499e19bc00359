"""SandboxPool: the node-facing API. Keeps ``size`` pre-forked single-use workers ready,
forked by a zygote process (never by the node), and runs each call in a fresh one."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import errors, framing
from .limits import JSON, DenyAllHost, HostServices, Limits
from .seccomp_policy import compile_bpf
from .session import Worker, converse

_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from compute.sandbox.zygote import main; main(int(sys.argv[2]))")


DEFAULT_LIMITS = Limits()


class SandboxPool:
    def __init__(self, size: int = 4, limits: Limits = DEFAULT_LIMITS, *, seccomp: bool = True,
                 acquire_timeout_s: float = 10.0, inprocess_guard: bool = True) -> None:
        """``seccomp=False`` / ``inprocess_guard=False`` exist only so tests can check that the
        remaining layers hold on their own; the node never sets them."""
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size, self.limits, self.seccomp = size, limits, seccomp
        self.acquire_timeout_s = acquire_timeout_s
        self.inprocess_guard = inprocess_guard
        self.layers: dict[str, Any] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._ctrl: socket.socket | None = None
        self._idle: collections.deque[Worker] = collections.deque()
        self._live: dict[int, Worker] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._requested = 0
        self._wake = asyncio.Event()
        self._refill: asyncio.Task[None] | None = None
        self._closed = True
        self._calls = self._failures = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        bpf = base64.b64encode(compile_bpf()).decode() if self.seccomp else ""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", "-c", _BOOT, _ROOT, str(theirs.fileno()),
                pass_fds=(theirs.fileno(),), env={}, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None if os.environ.get("TW_SANDBOX_DEBUG") else subprocess.DEVNULL)
        finally:
            theirs.close()
        ours.setblocking(False)
        self._ctrl = ours
        await loop.sock_sendall(ours, framing.dumps({"op": "config", "bpf": bpf,
                                                        "inprocess": self.inprocess_guard}))
        try:
            async with asyncio.timeout(10):
                msg = framing.loads(await loop.sock_recv(ours, 1 << 16))
                if msg.get("op") == "map":
                    drop = self._write_id_maps(int(msg["pid"]))
                    await loop.sock_sendall(ours, framing.dumps({"op": "mapped",
                                                                 "drop_uid": drop}))
                    msg = framing.loads(await loop.sock_recv(ours, 1 << 16))
        except (TimeoutError, framing.FrameError) as exc:
            await self.stop()
            raise errors.SandboxUnavailable(f"sandbox zygote failed to start: {exc}") from None
        if msg.get("op") != "ready":
            await self.stop()
            raise errors.SandboxUnavailable("sandbox zygote failed to start")
        self.layers = dict(msg["layers"], rlimits=True, import_allowlist=self.inprocess_guard,
                           audit_gate=self.inprocess_guard)
        self._closed = False
        loop.add_reader(ours.fileno(), self._on_ctrl)
        self._refill = asyncio.create_task(self._refill_loop(), name="sandbox-refill")
        self._wake.set()

    @staticmethod
    def _write_id_maps(pid: int) -> bool:
        """Map root and nobody (root host) or just our own id (unprivileged host)."""
        proc = Path(f"/proc/{pid}")
        try:
            if os.geteuid() == 0:
                (proc / "uid_map").write_text("0 0 1\n65534 65534 1\n")
                (proc / "gid_map").write_text("0 0 1\n65534 65534 1\n")
                return True
            (proc / "setgroups").write_text("deny")
            (proc / "uid_map").write_text(f"0 {os.geteuid()} 1\n")
            (proc / "gid_map").write_text(f"0 {os.getegid()} 1\n")
        except OSError:
            pass
        return False

    async def stop(self) -> None:
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill
            self._refill = None
        if self._ctrl is not None:
            asyncio.get_running_loop().remove_reader(self._ctrl.fileno())
            with contextlib.suppress(OSError):
                self._ctrl.send(framing.dumps({"op": "quit"}))
            self._ctrl.close()
            self._ctrl = None
        for worker in list(self._live.values()):
            worker.close()
        self._live.clear()
        self._idle.clear()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
            self._proc = None

    def _on_ctrl(self) -> None:
        assert self._ctrl is not None
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self._ctrl, 1 << 16, 16)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                for fd in fds:
                    os.close(fd)
                self._zygote_lost()
                return
            self._handle(framing.loads(data), fds)

    def _handle(self, msg: dict[str, Any], fds: list[int]) -> None:
        op = msg.get("op")
        wids = msg.get("wids") if op == "workers" else None
        if isinstance(wids, list) and len(fds) == 2 * len(wids):
            self._requested = max(0, self._requested - len(wids))
            for i, wid in enumerate(wids):
                self._add_worker(int(wid), fds[2 * i], fds[2 * i + 1])
            return
        for fd in fds:
            os.close(fd)
        if op == "exits":
            for wid, status in msg.get("items", []):
                self._worker_exited(int(wid), int(status))

    def _add_worker(self, wid: int, sock_fd: int, pidfd: int) -> None:
        sock = socket.socket(fileno=sock_fd)
        sock.setblocking(False)
        worker = Worker(wid, sock, pidfd)
        if self._closed:
            worker.close()
            return
        self._live[wid] = worker
        self._idle.append(worker)
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                break

    def _worker_exited(self, wid: int, status: int) -> None:
        dead = self._live.get(wid)
        if dead is None:
            return
        if not dead.exited.done():
            dead.exited.set_result(status)
        if dead in self._idle:  # died before use (should not happen): discard
            self._idle.remove(dead)
            self._live.pop(wid, None)
            dead.close()
            self._wake.set()

    def _zygote_lost(self) -> None:
        if self._ctrl is not None and not self._closed:
            asyncio.get_running_loop().remove_reader(self._ctrl.fileno())
        self._closed = True
        self.layers["zygote"] = "lost"
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    async def _refill_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            deficit = self.size - len(self._idle) - self._requested
            if deficit > 0 and self._ctrl is not None:
                self._requested += deficit
                await loop.sock_sendall(self._ctrl, framing.dumps({"op": "spawn", "n": deficit}))

    async def _acquire(self) -> Worker:
        async with asyncio.timeout(self.acquire_timeout_s):
            while not self._idle:
                if self._closed:
                    raise errors.SandboxUnavailable("sandbox pool is not running")
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._waiters.append(fut)
                await fut
        worker = self._idle.popleft()
        self._wake.set()
        return worker

    async def run(self, source: str, entry: str, args: list[JSON], kwargs: dict[str, JSON], *,
                  limits: Limits | None = None, host: HostServices | None = None,
                  filename: str = "<user>") -> JSON:
        limits = limits or self.limits
        self._calls += 1
        try:
            call = _encode_call(source, entry, args, kwargs, limits, filename)
            if self._closed:
                raise errors.SandboxUnavailable("sandbox pool is not running")
            try:
                worker = await self._acquire()
            except TimeoutError:
                raise errors.SandboxUnavailable("no sandbox worker available in time") from None
            try:
                return await converse(worker, call, limits, host or DenyAllHost())
            finally:
                self._live.pop(worker.wid, None)
                worker.close()
        except BaseException:
            self._failures += 1
            raise

    def stats(self) -> dict[str, Any]:
        return {"size": self.size, "idle": len(self._idle), "calls": self._calls,
                "failures": self._failures, "busy": len(self._live) - len(self._idle),
                "running": not self._closed, "layers": dict(self.layers)}


def _encode_call(source: str, entry: str, args: list[JSON], kwargs: dict[str, JSON],
                 limits: Limits, filename: str) -> bytes:
    if not isinstance(source, str) or len(source.encode()) > limits.source_bytes:
        raise errors.BadArguments("source must be a string within the source size limit")
    if not isinstance(entry, str) or not entry.isidentifier():
        raise errors.BadArguments("entry must be a function name")
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not all(
            isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise errors.BadArguments("args must be a list and kwargs a dict of names")
    try:
        return framing.encode({"op": "call", "source": source, "entry": entry, "args": args,
                               "kwargs": kwargs, "limits": limits.to_wire(),
                               "filename": str(filename)})
    except (TypeError, ValueError, RecursionError) as exc:
        raise errors.BadArguments(f"arguments are not JSON: {exc}") from None

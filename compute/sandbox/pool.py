"""SandboxPool: the node-facing API. Keeps ``size`` pre-forked single-use workers ready,
forked by a zygote process (never by the node), and runs each call in a fresh one."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
from typing import Any

from . import codecache, errors, framing
from .launcher import Zygote
from .limits import JSON, DenyAllHost, HostServices, Limits
from .seccomp_policy import compile_bpf
from .session import Worker, converse, encode_call

DEFAULT_LIMITS = Limits()


class SandboxPool:
    def __init__(self, size: int = 4, limits: Limits = DEFAULT_LIMITS, *, seccomp: bool = True,
                 acquire_timeout_s: float = 10.0, inprocess_guard: bool = True,
                 namespaces: bool = True) -> None:
        """``seccomp=False`` / ``inprocess_guard=False`` / ``namespaces=False`` exist so tests
        can check that the remaining layers hold on their own (``namespaces=False`` is also
        what a kernel without namespaces gets); the node never sets them."""
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size, self.limits, self.seccomp = size, limits, seccomp
        self.acquire_timeout_s = acquire_timeout_s
        self.inprocess_guard = inprocess_guard
        self.namespaces = namespaces
        self.layers: dict[str, Any] = {}
        self._zygote: Zygote | None = None
        self._restart: asyncio.Task[None] | None = None
        self._restarts = 0
        self._compiled: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._cache_hits = 0
        self._keys: dict[tuple[str, str], str] = {}  # (source, filename) -> codecache key
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
        bpf = compile_bpf() if self.seccomp else b""
        self._zygote = await Zygote.launch(bpf, self.inprocess_guard, self.namespaces)
        self.layers = dict(self._zygote.layers)
        self._closed = False
        self._attach()
        self._refill = asyncio.create_task(self._refill_loop(), name="sandbox-refill")

    def _attach(self) -> None:
        assert self._zygote is not None
        self._ctrl = self._zygote.ctrl
        asyncio.get_running_loop().add_reader(self._ctrl.fileno(), self._on_ctrl)
        self._requested = 0
        self._compiled.clear()  # a new zygote has an empty code cache
        self._wake.set()

    def _detach(self) -> None:
        """Forget the current zygote's control socket and workers (its pid 1 took them)."""
        if self._ctrl is not None and self._ctrl.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self._ctrl.fileno())
        self._ctrl = None
        for worker in self._idle:
            worker.close()
        for worker in self._live.values():  # busy: their calls see EOF and close them
            if not worker.exited.done():
                worker.exited.set_result(-1)
        self._live.clear()
        self._idle.clear()

    async def stop(self) -> None:
        self._closed = True
        for task in (self._refill, self._restart):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refill = self._restart = None
        self._detach()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        if self._zygote is not None:
            zygote, self._zygote = self._zygote, None
            await zygote.shutdown()

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
        """The zygote died (killed, crashed): drop its workers and start a new one."""
        self._detach()
        if not self._closed and self._restart is None:
            self._restart = asyncio.create_task(self._relaunch(), name="sandbox-relaunch")

    async def _relaunch(self) -> None:
        old, self._zygote = self._zygote, None
        if old is not None:
            await old.shutdown()
        delay = 0.05
        while not self._closed:
            try:
                self._zygote = await Zygote.launch(compile_bpf() if self.seccomp else b"",
                                                   self.inprocess_guard, self.namespaces)
            except errors.SandboxUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._restarts += 1
            self._attach()
            break
        self._restart = None

    async def _refill_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            deficit = self.size - len(self._idle) - self._requested
            if deficit > 0 and self._ctrl is not None:
                self._requested += deficit
                try:
                    await loop.sock_sendall(self._ctrl, framing.dumps({"op": "spawn",
                                                                       "n": deficit}))
                except OSError:  # zygote gone: _on_ctrl sees EOF and relaunches it
                    self._requested -= deficit

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

    def _key(self, source: str, filename: str) -> str:
        """codecache.cache_key, remembered: the same few sources come back call after call
        (a str caches its hash, so the lookup does not re-read a long source)."""
        key = self._keys.get((source, filename))
        if key is None:
            if len(self._keys) >= 64:
                self._keys.clear()
            key = self._keys[(source, filename)] = codecache.cache_key(source, filename)
        return key

    async def run(self, source: str, entry: str, args: list[JSON], kwargs: dict[str, JSON], *,
                  limits: Limits | None = None, host: HostServices | None = None,
                  filename: str = "<user>") -> JSON:
        limits = limits or self.limits
        self._calls += 1
        try:
            key = self._key(source, str(filename)) if isinstance(source, str) else ""
            call = encode_call(source, entry, args, kwargs, limits, filename, key)
            if self._closed:
                raise errors.SandboxUnavailable("sandbox pool is not running")
            self._ask_compile(key, source, str(filename))
            try:
                worker = await self._acquire()
            except TimeoutError:
                raise errors.SandboxUnavailable("no sandbox worker available in time") from None
            info: dict[str, Any] = {}
            try:
                value = await converse(worker, call, limits, host or DenyAllHost(), info)
                self._cache_hits += bool(info.get("cached"))
                return value
            finally:
                self._live.pop(worker.wid, None)
                worker.close()
        except BaseException:
            self._failures += 1
            raise

    def _ask_compile(self, key: str, source: str, filename: str) -> None:
        """Have the zygote compile this module once, so later workers inherit the code."""
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return
        if self._ctrl is None or len(source) > codecache.MAX_SOURCE:
            return
        try:
            self._ctrl.send(framing.dumps({"op": "compile", "source": source,
                                           "filename": filename}))
        except OSError:  # buffer full or zygote gone: the worker compiles it this time
            return
        self._compiled[key] = None
        while len(self._compiled) > 256:
            self._compiled.popitem(last=False)

    def stats(self) -> dict[str, Any]:
        return {"size": self.size, "idle": len(self._idle), "calls": self._calls,
                "failures": self._failures, "busy": len(self._live) - len(self._idle),
                "running": not self._closed, "zygote_restarts": self._restarts,
                "zygote_pid": self._zygote.proc.pid if self._zygote else None,
                "code_cache_hits": self._cache_hits,
                "layers": dict(self.layers)}


"""SandboxPool: the node-facing API. Keeps ``size`` pre-forked single-use workers ready,
forked by a zygote process (never by the node; its control socket: zygote_link.py), and runs
each call in a fresh one."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from typing import Any

from . import codecache, errors, framing
from .launcher import Zygote
from .limits import JSON, DenyAllHost, HostServices, Limits
from .seccomp_policy import compile_bpf
from .session import Worker, converse, encode_call
from .zygote_link import ZygoteLink

DEFAULT_LIMITS = Limits()


class SandboxPool(ZygoteLink):
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


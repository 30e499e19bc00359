"""The pool's side of its zygote: the control socket that hands over forked workers and
reports their exits, the refill requests that keep ``size`` workers ready, and a new zygote
when the old one dies (killed, crashed), with backoff while none can start.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
from typing import Any

from . import errors, framing
from .launcher import Zygote
from .seccomp_policy import compile_bpf
from .session import Worker


class ZygoteLink:
    """Mixin for ``SandboxPool``: everything driven by the zygote's control socket."""

    size: int
    seccomp: bool
    inprocess_guard: bool
    namespaces: bool
    _zygote: Zygote | None
    _restart: asyncio.Task[None] | None
    _restarts: int
    _compiled: collections.OrderedDict[str, None]
    _ctrl: socket.socket | None
    _idle: collections.deque[Worker]
    _live: dict[int, Worker]
    _waiters: collections.deque[asyncio.Future[None]]
    _requested: int
    _wake: asyncio.Event
    _closed: bool

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

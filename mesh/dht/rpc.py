"""rpcudp plumbing for the mesh: tracked tasks and inline datagram handling.

rpcudp 5.0 (under kademlia 2.2.3) spawned two untracked tasks per datagram, raised inside them
on malformed input, and logged every timeout at ERROR. ``TrackedDatagrams`` is mixed in before
``KademliaProtocol`` so these methods replace rpcudp's: every handler is synchronous and runs
inline, background work goes through ``spawn`` and is cancelled by ``aclose``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Coroutine
from typing import Any

import umsgpack  # type: ignore[import-untyped]

log = logging.getLogger(__name__)


class TrackedDatagrams:
    """Mixin for an ``rpcudp.RPCProtocol`` subclass (uses its ``_outstanding`` and transport)."""

    closed: bool
    transport: Any
    _outstanding: dict[bytes, tuple[asyncio.Future[Any], asyncio.TimerHandle]]
    _tasks: set[asyncio.Task[Any]]

    # --- task tracking ---------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """Run ``coro`` as a tracked task (cancelled by ``aclose``)."""
        if self.closed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("dht task failed: %r", task.exception())

    async def aclose(self) -> None:
        """Stop answering, fail outstanding calls and cancel every tracked task."""
        self.closed = True
        for future, timer in list(self._outstanding.values()):
            timer.cancel()
            if not future.done():
                future.set_result((False, None))
        self._outstanding.clear()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- rpcudp plumbing -------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Handle a datagram inline: every rpc_* handler is synchronous, so no task is needed
        (rpcudp spawned two untracked tasks per datagram)."""
        if len(data) < 22 or self.closed:
            return
        msg_id = data[1:21]
        try:
            message = umsgpack.unpackb(data[21:])
        except Exception:  # umsgpack raises many types on garbage
            log.debug("undecodable datagram from %s:%s", *addr[:2])
            return
        if data[:1] == b"\x00":
            self._answer(msg_id, message, addr)
        elif data[:1] == b"\x01":
            self._accept_response(msg_id, message, addr)

    def _accept_response(self, msg_id: bytes, data: Any, address: tuple[str, int]) -> None:
        entry = self._outstanding.pop(msg_id, None)
        if entry is None:  # a late answer to a call that already timed out
            return
        future, timer = entry
        timer.cancel()
        if not future.done():
            future.set_result((True, data))

    def _answer(self, msg_id: bytes, data: Any, address: tuple[str, int]) -> None:
        if not isinstance(data, list) or len(data) != 2 or not isinstance(data[0], str):
            return
        funcname, args = data
        func = getattr(self, f"rpc_{funcname}", None)
        if func is None or not callable(func) or not isinstance(args, list):
            return
        try:
            response = func(address, *args)
        except (TypeError, ValueError) as exc:
            log.debug("bad %s request from %s:%s: %s", funcname, address[0], address[1], exc)
            return
        except Exception:  # never let one request break the datagram endpoint
            log.exception("rpc_%s from %s:%s failed", funcname, address[0], address[1])
            return
        if inspect.iscoroutine(response):   # a handler that must wait (a STORE whose sender
            self.spawn(self._answer_later(msg_id, response, address))   # is being admitted)
        else:
            self._reply(msg_id, response, address)

    async def _answer_later(self, msg_id: bytes, pending: Coroutine[Any, Any, Any],
                            address: tuple[str, int]) -> None:
        self._reply(msg_id, await pending, address)

    def _reply(self, msg_id: bytes, response: Any, address: tuple[str, int]) -> None:
        packed = umsgpack.packb(response)
        if self.transport is not None and not self.closed:
            self.transport.sendto(b"\x01" + msg_id + packed, address)

    def _timeout(self, msg_id: bytes) -> None:
        entry = self._outstanding.pop(msg_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result((False, None))

    def send_request(self, address: tuple[str, int], name: str, args: tuple[Any, ...],
                     timeout: float) -> asyncio.Future[Any]:
        """rpcudp's request with a per-call timeout (rpcudp has one for the whole protocol)."""
        msg_id = os.urandom(20)
        data = umsgpack.packb([name, list(args)])
        if len(data) > 8192:
            raise ValueError("an RPC request must fit 8 KB")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._outstanding[msg_id] = (future, loop.call_later(timeout, self._timeout, msg_id))
        self.transport.sendto(b"\x00" + msg_id + data, address)
        return future

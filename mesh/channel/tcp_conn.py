"""One TCP connection of the channel's TCP transport: tcp_rx's receiver plus the writing side.

It replaces the StreamReader/StreamWriter pair (reading without copies: tcp_rx.py). Writing
behaves as StreamWriter's does: ``write`` hands the bytes to the transport (which sends what
it can at once and buffers the rest), ``drain`` waits while the transport's buffer is above
its high-water mark (between ``pause_writing`` and ``resume_writing``) and raises once the
connection is lost. StreamWriter itself is not reused: it relies on private hooks of
StreamReaderProtocol (``_drain_helper``, ``_get_close_waiter``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from mesh.channel.tcp_rx import MessageReceiver


class Connection(MessageReceiver):
    """``read()`` messages (tcp_rx.py), ``write`` and ``drain`` bytes."""

    def __init__(self, on_made: Callable[[Connection], None] | None = None) -> None:
        super().__init__()
        self._on_made = on_made
        self._write_paused = False
        self._lost = False
        self._lost_exc: Exception | None = None
        self._drainers: list[asyncio.Future[None]] = []
        self._gone: asyncio.Future[None] | None = None

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None, "not connected yet"
        return self._transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:        # calls are small round trips (asyncio sets it too; explicit)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._on_made is not None:
            self._on_made(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._lost, self._lost_exc = True, exc
        self._wake_drainers()
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    # -- the receive budget's side (tcp_budget.py) ----------------------------------------

    def granted(self) -> None:
        """The payload whose header waits in staging has its budget now: receive it."""
        self._waiting, self._granted = False, True
        if self._ended is None:
            self._set_reading()
            self._parse()

    def partial(self) -> int | None:
        """Bytes received of the payload being received in place, if any."""
        return self._big_have if self._big is not None else None

    def drop(self) -> None:
        """Hang up at once, the partial payload freed now (its budget goes to another)."""
        MessageReceiver.connection_lost(self, ConnectionAbortedError("dropped by the budget"))
        self.transport.abort()

    # -- writing ----------------------------------------------------------------------------

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drainers()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport wants more; raise if the connection is lost."""
        if self.transport.is_closing():
            await asyncio.sleep(0)   # lets connection_lost run: a write loop then fails here
        while not self._lost and self._write_paused:
            waiter = asyncio.get_running_loop().create_future()
            self._drainers.append(waiter)
            try:
                await waiter
            finally:
                self._drainers.remove(waiter)
        if self._lost:
            raise self._lost_exc or ConnectionResetError("Connection lost")

    async def wait_lost(self) -> None:
        """Until the connection is gone (a refused one lingers: tcp_server.py)."""
        if not self._lost:
            self._gone = asyncio.get_running_loop().create_future()
            await self._gone

    def close(self) -> None:
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def usable(self) -> bool:
        """Worth reusing for the next call: still open both ways."""
        return not (self.at_eof() or self.transport.is_closing())

    def _wake_drainers(self) -> None:
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_result(None)


async def open_connection(host: str, port: int) -> Connection:
    _, conn = await asyncio.get_running_loop().create_connection(Connection, host, port)
    return conn


async def start_server(on_connection: Callable[[Connection], None], host: str,
                       port: int) -> asyncio.Server:
    """A listener calling ``on_connection`` (synchronously) with each accepted connection."""
    return await asyncio.get_running_loop().create_server(
        lambda: Connection(on_connection), host, port)

"""The TCP transport's connections (mesh/channel/tcp_conn.py) on real loopback sockets, and
their drain() as StreamWriter's behaves: wait while paused, fail once the connection is lost."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mesh.channel.tcp_conn import Connection, open_connection, start_server
from mesh.channel.tcp_rx import QUEUE_BYTES
from mesh.channel.tcp_wire import CALL, STREAM, write_message


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Connection, Connection]]:
    accepted: asyncio.Queue[Connection] = asyncio.Queue()
    server = await start_server(accepted.put_nowait, "127.0.0.1", 0)
    client = await open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    served = await accepted.get()
    try:
        yield client, served
    finally:
        client.transport.abort()
        served.transport.abort()
        server.close()
        await server.wait_closed()


async def test_messages_of_every_size_cross_a_real_socket(
        pair: tuple[Connection, Connection]) -> None:
    client, served = pair
    messages = [(CALL, b""), (STREAM, os.urandom(3 * 2**20 + 7)), (CALL, b"small"),
                (STREAM, os.urandom(70_000))] * 3

    async def send() -> None:
        for kind, payload in messages:
            write_message(client, kind, payload)
            await client.drain()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(send())
        got = [await served.read() for _ in messages]
    assert got == messages
    write_message(served, CALL, b"answer")
    await served.drain()
    assert await client.read() == (CALL, b"answer")
    client.transport.write_eof()
    with pytest.raises(asyncio.IncompleteReadError):
        await served.read()
    assert served.at_eof() and not client.at_eof() and client.usable()


async def test_a_reader_that_falls_behind_pauses_the_socket(
        pair: tuple[Connection, Connection]) -> None:
    client, served = pair
    message = (STREAM, os.urandom(2**20))
    count = 2 * QUEUE_BYTES // len(message[1]) + 2

    async def send() -> None:
        for _ in range(count):
            write_message(client, *message)
            await client.drain()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(send())
        async with asyncio.timeout(30):           # a bound on a hang, not a measurement
            while served.transport.is_reading():  # noqa: ASYNC110  (no event to wait on)
                await asyncio.sleep(0.01)
        for _ in range(count):
            assert await served.read() == message
    assert served.transport.is_reading()


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.written: list[Any] = []

    def write(self, data: Any) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing


async def test_drain_waits_while_paused_and_fails_once_lost() -> None:
    conn, transport = Connection(), FakeTransport()
    conn.connection_made(transport)
    await conn.drain()                            # not paused: at once
    conn.pause_writing()
    draining = asyncio.create_task(conn.drain())
    await asyncio.sleep(0)
    assert not draining.done()
    conn.resume_writing()
    await draining
    conn.pause_writing()
    draining = asyncio.create_task(conn.drain())
    await asyncio.sleep(0)
    transport.closing = True
    conn.connection_lost(None)
    with pytest.raises(ConnectionResetError):
        await draining
    with pytest.raises(ConnectionResetError):     # and every drain after it
        await conn.drain()
    assert not conn.usable()


async def test_drain_raises_the_error_the_connection_was_lost_with() -> None:
    conn, transport = Connection(), FakeTransport()
    conn.connection_made(transport)
    conn.pause_writing()
    draining = asyncio.create_task(conn.drain())
    await asyncio.sleep(0)
    conn.connection_lost(BrokenPipeError("gone"))
    with pytest.raises(BrokenPipeError, match="gone"):
        await draining

"""A call's cap on the peer's reply (``PeerChannel.unary(max_reply=...)``, reply_cap.py) on
real channel servers: over TCP a reply over the cap is refused at its header, before the
client allocates or reads it; over gRPC it is refused after receipt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from mesh.channel import Caller, ChannelPool, tcp_client, tcp_rx
from mesh.channel.tcp_conn import Connection
from mesh.errors import ReplyTooLargeError, ResourceExhaustedError
from tests.mesh.test_channel import Node
from tests.mesh.test_channel_tcp import Server, pool, server  # noqa: F401 - fixtures

MiB = 2**20
BIG = 8 * MiB


class Client:
    """Counts what the client side of the TCP transport does: its connections, the bytes
    each received, and the payload buffers the receivers allocated (tcp_rx)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.conns: list[Connection] = []
        self.received: dict[int, int] = {}
        self.allocated: list[int] = []
        real_open, real_alloc = tcp_client.open_connection, tcp_rx._writable_bytes
        real_updated = tcp_rx.MessageReceiver.buffer_updated

        async def opened(host: str, port: int) -> Connection:
            conn = await real_open(host, port)
            self.conns.append(conn)
            return conn

        def allocate(size: int) -> tuple[bytes, memoryview]:
            self.allocated.append(size)
            return real_alloc(size)

        def updated(receiver: tcp_rx.MessageReceiver, nbytes: int) -> None:
            if receiver in self.conns:
                self.received[id(receiver)] = self.received.get(id(receiver), 0) + nbytes
            real_updated(receiver, nbytes)

        monkeypatch.setattr(tcp_client, "open_connection", opened)
        monkeypatch.setattr(tcp_rx, "_writable_bytes", allocate)
        monkeypatch.setattr(tcp_rx.MessageReceiver, "buffer_updated", updated)

    def read(self, conn: Connection) -> int:
        return self.received.get(id(conn), 0)


@pytest.fixture
async def big(server: Server) -> AsyncIterator[Server]:  # noqa: F811
    stalled = asyncio.Event()

    async def answer(caller: Caller, body: bytes) -> bytes:
        return b"z" * int(body)

    async def late_big(caller: Caller, body: bytes) -> bytes:
        """The first call answers 8 MiB once released, the others a few bytes at once."""
        if not stalled.is_set():
            stalled.set()
            await server.release.wait()
            return b"z" * BIG
        return b"ok"

    async def chunks(caller: Caller, header: bytes,
                     chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for _ in chunks:
            pass
        for _ in range(2):
            yield b"c" * int(header)

    server.channel.handle("test.Sized", answer)
    server.channel.handle("test.LateBig", late_big)
    server.channel.handle_stream("test.Chunks", chunks)
    yield server


async def test_a_reply_over_the_cap_is_refused_at_its_header_unread(
        big: Server, pool: ChannelPool, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    client = Client(monkeypatch)
    peer = pool.peer(big.identity.node_id, f"127.0.0.1:{big.port}", big.port)
    assert await peer.unary("test.Echo", b"warm") == b"warm"
    (conn,) = client.conns
    with pytest.raises(ReplyTooLargeError, match=f"over this call's cap of {MiB}") as info:
        await peer.unary("test.Sized", str(BIG).encode(), max_reply=MiB)
    err = info.value
    assert isinstance(err, ResourceExhaustedError) and err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.unread and err.cap == MiB and err.size > BIG
    assert max(client.allocated, default=0) < MiB     # the 8 MiB buffer was never made
    assert client.read(conn) < MiB                    # ... nor was most of it received
    assert conn.transport.is_closing()                # the connection is not reused
    assert peer._link._idle == [] and peer._link.refused_replies == 1   # type: ignore[union-attr]
    assert await peer.unary("test.Echo", b"next") == b"next"    # the session is intact
    assert len(client.conns) == 2 and big.listener.accepted == 2
    assert await peer.unary("test.Sized", str(BIG).encode()) == b"z" * BIG    # uncapped


async def test_a_reply_at_the_cap_is_taken_and_the_cap_ends_with_its_call(
        big: Server, pool: ChannelPool, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    client = Client(monkeypatch)
    peer = pool.peer(big.identity.node_id, f"127.0.0.1:{big.port}", big.port)
    assert await peer.unary("test.Sized", str(MiB).encode(), max_reply=MiB) == b"z" * MiB
    got = [c async for c in peer.stream("test.Chunks", str(2 * MiB).encode())]   # no cap
    assert got == [b"c" * 2 * MiB] * 2 and len(client.conns) == 1   # on the pooled one
    assert await peer.unary("test.Sized", str(BIG).encode()) == b"z" * BIG
    with pytest.raises(ReplyTooLargeError) as info:   # within the frame's allowance: opened,
        await peer.unary("test.Sized", str(MiB + 1).encode(), max_reply=MiB)  # then refused
    assert not info.value.unread and info.value.size == MiB + 1


async def test_an_abandoned_call_s_late_answer_is_held_to_its_cap(
        big: Server, pool: ChannelPool, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The hedge's losing attempt is read in the background (tcp_client._drain): its 8 MiB
    answer is refused at the header there too, and the next call gets a clean connection."""
    client = Client(monkeypatch)
    peer = pool.peer(big.identity.node_id, f"127.0.0.1:{big.port}", big.port)
    got = await peer.unary("test.LateBig", b"", hedge_after=0.05, max_reply=MiB)
    assert got == b"ok" and pool.hedged_calls == 1
    link = peer._link
    assert isinstance(link, tcp_client.TcpLink) and len(link._draining) == 1
    big.release.set()
    await asyncio.wait(list(link._draining))     # the late answer comes to the drained one
    assert max(client.allocated, default=0) < MiB
    assert sum(client.received.values()) < MiB
    assert await peer.unary("test.Sized", str(BIG).encode()) == b"z" * BIG


async def test_over_grpc_a_reply_over_the_cap_is_refused_after_receipt() -> None:
    """gRPC has no per-call receive limit: the reply is received whole, then refused."""
    a, b = Node(), Node()

    async def answer(caller: Caller, body: bytes) -> bytes:
        return b"z" * int(body)

    b.channel.handle("test.Sized", answer)
    await a.start()
    await b.start()
    try:
        peer = a.peer(b.identity.node_id, b.address)
        assert peer.transport == "grpc"
        with pytest.raises(ReplyTooLargeError, match=f"cap of {MiB}") as info:
            await peer.unary("test.Sized", str(BIG).encode(), max_reply=MiB)
        assert not info.value.unread
        with pytest.raises(ReplyTooLargeError):
            await peer.unary("test.Sized", str(MiB + 1).encode(), max_reply=MiB)
        assert await peer.unary("test.Sized", str(MiB).encode(), max_reply=MiB) == b"z" * MiB
    finally:
        await a.stop()
        await b.stop()

"""The channel's TCP transport on its own: hostile bytes on the port, connection reuse and
loss, deadlines and failing senders (the shared behaviour is in test_channel.py)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import grpc
import pytest

from mesh.channel import Caller, ChannelPool, ChannelServer
from mesh.channel.tcp_client import TcpLink
from mesh.channel.tcp_server import TcpListener
from mesh.channel.tcp_wire import ABORT, CALL, HANDSHAKE, MAX_PAYLOAD, STREAM, decode_abort
from mesh.errors import DeadlineExceededError
from mesh.identity import Identity


class Server:
    def __init__(self, idle_timeout: float = 300.0) -> None:
        self.identity = Identity.generate()
        self.channel = ChannelServer(self.identity)
        self.listener = TcpListener(self.channel, idle_timeout=idle_timeout)
        self.channel.handle("test.Echo", self._echo)
        self.channel.handle("test.Slow", self._slow)
        self.channel.handle_stream("test.Count", self._count)
        self.channel.handle("test.StallFirst", self._stall_first)
        self.stalled = 0
        self.release = asyncio.Event()
        self.port = 0

    async def _stall_first(self, caller: Caller, body: bytes) -> bytes:
        """The first call hangs until released (a connection stuck in TCP backoff)."""
        self.stalled += 1
        if self.stalled == 1:
            await self.release.wait()
        return body + b"#%d" % self.stalled

    async def _echo(self, caller: Caller, body: bytes) -> bytes:
        return body

    async def _slow(self, caller: Caller, body: bytes) -> bytes:
        await asyncio.sleep(float(body))
        return body

    async def _count(self, caller: Caller, header: bytes,
                     chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        n = 0
        async for chunk in chunks:
            n += len(chunk)
        yield n.to_bytes(8, "big")

    async def start(self) -> None:
        self.port = await self.listener.start("127.0.0.1")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    await s.start()
    yield s
    await s.listener.stop()


@pytest.fixture
async def pool() -> AsyncIterator[ChannelPool]:
    p = ChannelPool(Identity.generate(), on_unreachable=lambda node_id: UNREACHABLE.append(node_id))
    UNREACHABLE.clear()
    yield p
    await p.close()


UNREACHABLE: list[bytes] = []


async def _raw(port: int, data: bytes) -> bytes:
    """Send raw bytes to the port; the first message the server answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            header = await reader.readexactly(5)
            return header + await reader.readexactly(struct.unpack(">I", header[:4])[0])
    finally:
        writer.close()


def _abort_code(answer: bytes) -> grpc.StatusCode:
    size, kind = struct.unpack_from(">IB", answer)
    assert kind == ABORT
    code, _ = decode_abort(answer[5:5 + size])
    return {c.value[0]: c for c in grpc.StatusCode}[code]


@pytest.mark.parametrize("data", [
    struct.pack(">IB", 3, 99) + b"abc",                       # unknown kind
    struct.pack(">IB", MAX_PAYLOAD + 1, CALL),                # longer than the limit
    struct.pack(">IB", 4, CALL) + b"\x00" * 4,                # frame shorter than its header
    struct.pack(">IB", 5, HANDSHAKE) + b"\xff" * 5,           # not a HandshakeRequest
    struct.pack(">IB", 60, CALL) + b"\x01" * 60,              # a frame of an unknown session
    struct.pack(">IB", 60, STREAM) + b"\x01" * 60,
])
async def test_hostile_bytes_get_an_abort_and_the_port_keeps_serving(
        server: Server, pool: ChannelPool, data: bytes) -> None:
    answer = await _raw(server.port, data)
    assert _abort_code(answer) in (grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNAUTHENTICATED,
                                   grpc.StatusCode.INVALID_ARGUMENT)
    peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
    assert await peer.unary("test.Echo", b"still here") == b"still here"


async def test_truncated_message_is_dropped_quietly(server: Server, pool: ChannelPool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(struct.pack(">IB", 1000, CALL) + b"x" * 10)   # then hang up mid-message
    await writer.drain()
    writer.close()
    peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
    assert await peer.unary("test.Echo", b"ok") == b"ok"


async def test_connections_are_reused_and_concurrent_calls_get_their_own(
        server: Server, pool: ChannelPool) -> None:
    peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
    for i in range(5):
        assert await peer.unary("test.Echo", bytes([i])) == bytes([i])
    assert len(server.listener._connections) == 1          # one connection, reused
    bodies = [str(i).encode() for i in range(20)]
    got = await asyncio.gather(*(peer.unary("test.Echo", b) for b in bodies))
    assert got == bodies
    assert 1 < len(server.listener._connections) <= 20


async def test_server_closing_idle_connections_is_not_a_dead_peer(pool: ChannelPool) -> None:
    s = Server(idle_timeout=0.1)
    await s.start()
    try:
        peer = pool.peer(s.identity.node_id, f"127.0.0.1:{s.port}", s.port)
        assert await peer.unary("test.Echo", b"1") == b"1"
        await asyncio.sleep(0.3)                            # the server hung up on the idle one
        assert await peer.unary("test.Echo", b"2") == b"2"
        assert UNREACHABLE == []
    finally:
        await s.listener.stop()


async def test_deadline_exceeded_then_next_call_works(server: Server, pool: ChannelPool) -> None:
    peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
    with pytest.raises(DeadlineExceededError):
        await peer.unary("test.Slow", b"1.0", timeout=0.1)
    assert await peer.unary("test.Slow", b"0") == b"0"
    assert UNREACHABLE == []


async def test_an_abandoned_call_keeps_its_connection_for_the_next(server: Server,
                                                                   pool: ChannelPool) -> None:
    """The late answer of a cancelled call is read in the background and the connection
    pooled again: no new TCP connection (under packet loss a lost SYN costs a second)."""
    peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
    assert await peer.unary("test.Echo", b"warm") == b"warm"
    call = asyncio.ensure_future(peer.unary("test.Slow", b"0.3"))
    await asyncio.sleep(0.1)
    call.cancel()                                           # as a hedged read does
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.4)                                # the late answer has arrived
    for i in range(3):
        assert await peer.unary("test.Echo", bytes([i])) == bytes([i])
    assert server.listener.accepted == 1                    # still the first connection


async def test_failing_chunk_source_raises_its_own_error(server: Server, pool: ChannelPool) -> None:
    peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        raise ValueError("the source broke")

    with pytest.raises(ValueError, match="the source broke"):
        _ = [r async for r in peer.stream("test.Count", b"", chunks())]
    out = [r async for r in peer.stream("test.Count", b"", _repeat(b"y" * 4096, 300))]
    assert out == [(4096 * 300).to_bytes(8, "big")]


async def test_consumer_leaving_a_stream_early_does_not_poison_the_link(
        server: Server, pool: ChannelPool) -> None:
    peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
    stream = peer.stream("test.Count", b"", _repeat(b"z" * (1 << 20), 64))
    await stream.aclose()                                   # never read
    assert await peer.unary("test.Echo", b"after") == b"after"


async def test_stopped_server_is_unavailable_and_reported(pool: ChannelPool) -> None:
    s = Server()
    await s.start()
    peer = pool.peer(s.identity.node_id, f"127.0.0.1:{s.port}", s.port)
    assert await peer.unary("test.Echo", b"1") == b"1"
    await s.listener.stop()
    from mesh.errors import UnavailableError
    with pytest.raises(UnavailableError):
        await peer.unary("test.Echo", b"2")
    assert UNREACHABLE == [s.identity.node_id]


async def _repeat(chunk: bytes, n: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield chunk


async def test_connections_beyond_the_cap_are_closed_and_served_ones_keep_working(
        pool: ChannelPool) -> None:
    s = Server()
    s.listener._max_connections = 3
    await s.start()
    try:
        peer = pool.peer(s.identity.node_id, f"127.0.0.1:{s.port}", s.port)
        assert await peer.unary("test.Echo", b"1") == b"1"   # one connection, pooled
        held = [await asyncio.open_connection("127.0.0.1", s.port) for _ in range(4)]
        await asyncio.sleep(0.1)
        assert s.listener.refused_connections >= 2
        assert await peer.unary("test.Echo", b"2") == b"2"   # the pooled one still serves
        for _, writer in held:
            writer.close()
    finally:
        await s.listener.stop()


async def test_a_dropped_syn_is_hedged_by_a_second_connection_attempt() -> None:
    """A listener whose accept queue is full drops SYNs (as a lossy path would lose them):
    the first attempt waits for the kernel's 1 s retransmission, the hedge gets in as soon
    as the queue has room, and the abandoned first attempt never connects."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))   # fills the accept queue
    link = TcpLink("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    accepted: list[socket.socket] = []
    try:
        connecting = asyncio.create_task(link._connect())
        await asyncio.sleep(0.05)                 # the first SYN went out and was dropped
        assert not connecting.done()              # nothing connects while the queue is full
        accepted.append((await loop.sock_accept(srv))[0])      # the filler: room for one
        conn = await connecting
        assert link.hedged_connects == 1
        hedge, _ = await loop.sock_accept(srv)
        accepted.append(hedge)
        assert hedge.getpeername() == conn.get_extra_info("sockname")
        conn.write(b"ping")
        await conn.drain()
        assert await loop.sock_recv(hedge, 4) == b"ping"
        # the first attempt was cancelled: its SYN retransmission (at 1 s) never arrives
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                accepted.append((await loop.sock_accept(srv))[0])
        conn.close()
    finally:
        await link.close()
        for s in (*accepted, filler, srv):
            s.close()


async def test_a_refused_connection_fails_at_once_without_a_hedge() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    srv.close()                                   # nothing listens: RST
    link = TcpLink("127.0.0.1", port)
    try:
        with pytest.raises(OSError):
            await link._connect()
        assert link.hedged_connects == 0
    finally:
        await link.close()


async def test_an_unanswered_idempotent_call_is_hedged_on_another_connection(
        server: Server, pool: ChannelPool) -> None:
    peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
    assert await peer.unary("test.Echo", b"warm") == b"warm"    # a session and a connection
    got = await peer.unary("test.StallFirst", b"x", timeout=30, hedge_after=0.05)
    assert got == b"x#2" and server.stalled == 2 and pool.hedged_calls == 1
    server.release.set()                       # the first call's late answer is drained
    assert await peer.unary("test.Echo", b"after") == b"after"
    assert await peer.unary("test.Echo", b"quick", hedge_after=5) == b"quick"
    assert pool.hedged_calls == 1              # an answered call is never hedged

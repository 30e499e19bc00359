"""What a TCP connection that has not authenticated can cost the server (tcp_preauth.py), on
a real ChannelServer and TcpListener on 127.0.0.1: raw sockets play the attacker, a real
ChannelPool the honest peer."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import grpc
import pytest

from mesh.channel import Caller, ChannelPool, ChannelServer, tcp_rx
from mesh.channel.frames import Frame
from mesh.channel.tcp_preauth import PRE_AUTH_MAX_PAYLOAD, PreAuthPolicy, largest_handshake_request
from mesh.channel.tcp_server import TcpListener
from mesh.channel.tcp_wire import ABORT, CALL, HANDSHAKE, HEADER, MAX_PAYLOAD, STREAM, decode_abort
from mesh.identity import Identity

Raw = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Server:
    def __init__(self, policy: PreAuthPolicy) -> None:
        self.identity = Identity.generate()
        self.channel = ChannelServer(self.identity)
        self.listener = TcpListener(self.channel, pre_auth=policy)
        self.channel.handle("test.Len", self._len)
        self.channel.handle("test.Wait", self._wait)
        self.release = asyncio.Event()
        self.waiting = 0
        self.port = 0

    async def _len(self, caller: Caller, body: bytes) -> bytes:
        return len(body).to_bytes(8, "big")

    async def _wait(self, caller: Caller, body: bytes) -> bytes:
        self.waiting += 1
        await self.release.wait()
        return body

    async def __aenter__(self) -> Server:
        self.port = await self.listener.start("127.0.0.1")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.listener.stop()


@pytest.fixture
def big_buffers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the payload buffers the receiver allocated (tcp_rx._writable_bytes)."""
    sizes: list[int] = []
    real = tcp_rx._writable_bytes

    def spy(size: int) -> tuple[bytes, memoryview]:
        sizes.append(size)
        return real(size)
    monkeypatch.setattr(tcp_rx, "_writable_bytes", spy)
    return sizes


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(20):
        while not condition():  # noqa: ASYNC110  (counters, no event to wait on)
            await asyncio.sleep(0.01)


async def _connect(server: Server) -> Raw:
    accepted = server.listener.accepted
    raw = await asyncio.open_connection("127.0.0.1", server.port)
    await _until(lambda: server.listener.accepted > accepted)
    return raw


async def _closed(raw: Raw, within: float = 20.0) -> bytes:
    """Everything the server sent until it closed the connection."""
    reader, writer = raw
    try:
        async with asyncio.timeout(within):
            return await reader.read()
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def _forged_frame(size: int = 80) -> bytes:
    """A well-formed frame of a session nobody has."""
    return Frame(os.urandom(16), 1, 0, True, os.urandom(16), os.urandom(size - 45)).encode()


def _abort(answer: bytes) -> tuple[grpc.StatusCode, str]:
    size, kind = HEADER.unpack_from(answer)
    assert kind == ABORT and len(answer) == HEADER.size + size
    code, message = decode_abort(answer[HEADER.size:])
    return {c.value[0]: c for c in grpc.StatusCode}[code], message


def test_the_limit_fits_the_largest_valid_handshake() -> None:
    assert largest_handshake_request() == 191
    assert largest_handshake_request() < PRE_AUTH_MAX_PAYLOAD < 1024


@pytest.mark.parametrize(("kind", "size"), [
    (CALL, MAX_PAYLOAD), (STREAM, 64 * 2**20), (HANDSHAKE, 64 * 2**20),
    (HANDSHAKE, PRE_AUTH_MAX_PAYLOAD + 1), (CALL, 48 * 2**20),
], ids=["call-max", "stream-64MiB", "handshake-64MiB", "handshake-limit+1", "call-48MiB"])
async def test_a_large_message_before_authentication_is_refused_unread(
        big_buffers: list[int], pool: ChannelPool, kind: int, size: int) -> None:
    """Only the header and 16 bytes are sent: the ABORT and the server's EOF come without the
    body, and no payload buffer was allocated for it (before: a 64 MiB buffer, then a wait of
    up to 5 minutes for bytes that never come)."""
    async with Server(PreAuthPolicy(deadline_s=60.0)) as server:
        raw = await _connect(server)
        raw[1].write(HEADER.pack(size, kind) + os.urandom(16))
        answer = await _closed(raw)
        code, message = _abort(answer)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "before authentication" in message
        assert server.listener.pending.refused == 1
        assert big_buffers == []
        peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
        assert await peer.unary("test.Len", b"x" * 100_000) == (100_000).to_bytes(8, "big")
        assert len(big_buffers) == 1 and 100_000 < big_buffers[0] < 101_000   # the honest frame


async def test_connections_that_never_authenticate_are_closed_at_the_deadline(
        pool: ChannelPool) -> None:
    """Silent, trickling a handshake, or sending only refused frames: each is closed at the
    pending deadline (before: at the 5-minute idle timeout, or never while it trickles)."""
    async with Server(PreAuthPolicy(deadline_s=1.0)) as server:
        peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
        assert await peer.unary("test.Len", b"abc") == (3).to_bytes(8, "big")
        silent = await _connect(server)
        trickle = await _connect(server)
        trickle[1].write(HEADER.pack(191, HANDSHAKE) + b"\x08")
        unknown = await _connect(server)
        unknown[1].write(HEADER.pack(80, CALL) + _forged_frame())
        answers = await asyncio.gather(_closed(silent), _closed(trickle), _closed(unknown))
        assert answers[:2] == [b"", b""]
        assert _abort(answers[2])[0] == grpc.StatusCode.UNAUTHENTICATED
        assert server.listener.pending.expired == 3
        # the honest connection authenticated at its handshake: still there, still used
        assert await peer.unary("test.Len", b"abcd") == (4).to_bytes(8, "big")
        assert server.listener.accepted == 4


async def test_pending_connections_beyond_the_cap_close_the_oldest_not_peers(
        pool: ChannelPool) -> None:
    """Ten silent connections against a cap of four: the six oldest are closed; a peer that
    connected before keeps its connection, and a new peer still connects and calls."""
    async with Server(PreAuthPolicy(max_pending=4, deadline_s=60.0)) as server:
        before = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
        assert await before.unary("test.Len", b"1") == (1).to_bytes(8, "big")
        raws = [await _connect(server) for _ in range(10)]
        assert [await _closed(raw) for raw in raws[:6]] == [b""] * 6
        assert server.listener.pending.evicted == 6
        assert len(server.listener.pending) == 4
        assert await before.unary("test.Len", b"12") == (2).to_bytes(8, "big")
        assert server.listener.accepted == 11             # on its first connection
        other = ChannelPool(Identity.generate())
        try:
            late = other.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
            assert await late.unary("test.Len", b"123") == (3).to_bytes(8, "big")
        finally:
            await other.close()
        assert server.listener.pending.evicted == 7       # it displaced the oldest silent one
        assert len(server.listener.pending) == 3
        for raw in raws[6:]:
            raw[1].close()


async def test_a_48_mib_call_on_a_new_connection_of_a_known_session(
        big_buffers: list[int], pool: ChannelPool) -> None:
    """A client sends frames at once on any new connection of a session it holds: a 48 MiB
    fragment as the first message of a new connection passes (its session is known)."""
    async with Server(PreAuthPolicy()) as server:
        peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
        waiting = asyncio.ensure_future(peer.unary("test.Wait", b"w"))   # holds connection 1
        await _until(lambda: server.waiting == 1)
        size = 48 * 2**20
        assert await peer.unary("test.Len", b"\x00" * size) == size.to_bytes(8, "big")
        assert server.listener.accepted == 2 and server.listener.pending.refused == 0
        server.release.set()
        assert await waiting == b"w"


async def test_a_server_that_lost_the_session_refuses_a_large_first_frame_and_the_client_rekeys(
        pool: ChannelPool) -> None:
    """As after a restart: the client's new connection starts with a 4 MiB frame of a session
    the server no longer has. It is refused unread with UNAUTHENTICATED, and the client
    re-keys and sends it again."""
    async with Server(PreAuthPolicy()) as server:
        peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
        assert await peer.unary("test.Len", b"1") == (1).to_bytes(8, "big")
        server.channel._sessions.clear()
        for conn in list(server.listener._connections):
            conn.transport.abort()
        size = 4 * 2**20
        assert await peer.unary("test.Len", b"\x00" * size) == size.to_bytes(8, "big")
        assert server.listener.pending.refused == 1


async def test_raw_bytes_within_the_limit_are_still_answered(pool: ChannelPool) -> None:
    """A small frame of an unknown session still gets its UNAUTHENTICATED answer (and may be
    followed by a handshake on the same connection)."""
    async with Server(PreAuthPolicy()) as server:
        reader, writer = await _connect(server)
        writer.write(HEADER.pack(80, STREAM) + _forged_frame())
        async with asyncio.timeout(20):
            header = await reader.readexactly(HEADER.size)
            body = await reader.readexactly(HEADER.unpack(header)[0])
        assert _abort(header + body)[0] == grpc.StatusCode.UNAUTHENTICATED
        writer.close()

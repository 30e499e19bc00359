"""The peer channel on real servers over loopback, on both transports (gRPC and plain TCP),
including a hostile relay on each."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator

import grpc
import pytest

from mesh.channel import Caller, ChannelPool, ChannelServer, PeerChannel, SessionPolicy
from mesh.channel.frames import NONCE_BYTES, Frame
from mesh.channel.tcp_server import TcpListener
from mesh.errors import (
    FrameError,
    HandshakeError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from mesh.identity import Identity
from proto import peer_pb2
from tests.support.relay import Relay
from tests.support.tcp_relay import TcpRelay

TRANSPORTS = ["grpc", "tcp"]


class Node:
    """A ChannelServer on a real grpc.aio server and a TCP listener, plus a client pool;
    ``address`` is the one of the node's ``transport``."""

    def __init__(self, policy: SessionPolicy | None = None, transport: str = "grpc") -> None:
        self.transport = transport
        self.identity = Identity.generate()
        self.channel = ChannelServer(self.identity, policy=policy)
        self.pool = ChannelPool(self.identity, policy=policy)
        self.seen: list[bytes] = []
        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                               ("grpc.max_send_message_length", 64 << 20)])
        self.channel.add_to(self.server)
        self.listener = TcpListener(self.channel)
        self.channel.handle("test.Echo", self._echo)
        self.channel.handle("test.Fail", self._fail)
        self.channel.handle_stream("test.Sum", self._sum)
        self.address = ""

    async def _echo(self, caller: Caller, body: bytes) -> bytes:
        self.seen.append(body)
        return caller.node_id + body

    async def _fail(self, caller: Caller, body: bytes) -> bytes:
        raise InvalidArgumentError("bad things")

    async def _sum(self, caller: Caller, header: bytes,
                   chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        total = 0
        async for chunk in chunks:
            total += len(chunk)
            self.seen.append(chunk[:8])
        for _ in range(int(header or b"1")):
            yield total.to_bytes(8, "big") + b"x" * (1 << 20)

    async def start(self) -> None:
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        if self.transport == "tcp":
            port = await self.listener.start("127.0.0.1")
        self.address = f"127.0.0.1:{port}"

    def peer(self, node_id: bytes, address: str) -> PeerChannel:
        """The channel from this node to ``address`` over this node's transport."""
        port = int(address.rsplit(":", 1)[1]) if self.transport == "tcp" else 0
        return self.pool.peer(node_id, address, port)

    async def stop(self) -> None:
        await self.pool.close()
        await self.listener.stop()
        await self.server.stop(None)


AnyRelay = Relay | TcpRelay


@pytest.fixture
async def relays() -> AsyncIterator[list[AnyRelay]]:
    made: list[AnyRelay] = []
    yield made
    for relay in made:
        await relay.stop()


async def _relay(relays: list[AnyRelay], target: Node,
                 mutate: object = None) -> tuple[AnyRelay, str]:
    """A hostile relay in front of ``target`` on its transport."""
    cls = TcpRelay if target.transport == "tcp" else Relay
    relay = cls(target.address, mutate)  # type: ignore[arg-type]
    relays.append(relay)
    return relay, await relay.start()


@pytest.fixture(params=TRANSPORTS)
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Node, Node]]:
    a, b = Node(transport=request.param), Node(transport=request.param)
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


async def test_unary_roundtrip_authenticates_caller(pair: tuple[Node, Node]) -> None:
    a, b = pair
    out = await a.peer(b.identity.node_id, b.address).unary("test.Echo", b"hi")
    assert out == a.identity.node_id + b"hi"


async def test_errors_map_to_status(pair: tuple[Node, Node]) -> None:
    a, b = pair
    peer = a.peer(b.identity.node_id, b.address)
    with pytest.raises(InvalidArgumentError, match="bad things"):
        await peer.unary("test.Fail", b"")
    with pytest.raises(NotFoundError):
        await peer.unary("no.Such", b"")


async def test_stream_large_payload(pair: tuple[Node, Node]) -> None:
    a, b = pair
    peer = a.peer(b.identity.node_id, b.address)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(20):
            yield bytes([i]) * (1 << 20)

    replies = [r async for r in peer.stream("test.Sum", b"3", chunks())]
    assert len(replies) == 3
    assert all(int.from_bytes(r[:8], "big") == 20 << 20 for r in replies)


async def test_impostor_key_refused(pair: tuple[Node, Node]) -> None:
    a, b = pair
    someone_else = Identity.generate().node_id
    with pytest.raises(HandshakeError, match="another node id"):
        await a.peer(someone_else, b.address).unary("test.Echo", b"x")
    assert b.seen == []


@pytest.mark.parametrize("channel_port", [0, 1])
async def test_unreachable_peer_is_unavailable(channel_port: int) -> None:
    reported: list[bytes] = []
    pool = ChannelPool(Identity.generate(), on_unreachable=reported.append)
    target = Identity.generate().node_id
    with pytest.raises(UnavailableError):
        await pool.peer(target, "127.0.0.1:1", channel_port).unary("test.Echo", b"x")
    assert reported == [target]
    await pool.close()


async def test_tampered_frame_refused_then_recovers(pair: tuple[Node, Node], relays: list[AnyRelay]) -> None:
    a, b = pair
    flip = {"on": False}

    def mutate(method: str, direction: str, msg: bytes) -> bytes:
        if flip["on"] and method == "Call" and direction == "req":
            flip["on"] = False
            frame = Frame.decode(msg)
            ct = bytearray(frame.ciphertext)
            ct[len(ct) // 2] ^= 0x01
            return dataclasses.replace(frame, ciphertext=bytes(ct)).encode()
        return msg

    relay, address = await _relay(relays, b, mutate)
    peer = a.peer(b.identity.node_id, address)
    assert await peer.unary("test.Echo", b"one")
    flip["on"] = True
    with pytest.raises(FrameError):
        await peer.unary("test.Echo", b"two")
    assert b"two" not in b.seen and b.channel.refused_frames == 1
    assert await peer.unary("test.Echo", b"three")     # the session survives


@pytest.mark.parametrize("field", ["index", "call_id", "final", "nonce", "session_id"])
async def test_frame_header_tamper_refused(pair: tuple[Node, Node], field: str, relays: list[AnyRelay]) -> None:
    a, b = pair
    armed = {"on": False}

    def mutate(method: str, direction: str, msg: bytes) -> bytes:
        if armed["on"] and method == "Call" and direction == "req":
            armed["on"] = False
            frame = Frame.decode(msg)
            if field == "final":
                frame = dataclasses.replace(frame, final=not frame.final)
            elif field in ("nonce", "session_id"):
                value = bytearray(getattr(frame, field))
                value[0] ^= 1
                frame = dataclasses.replace(frame, **{field: bytes(value)})
            else:
                frame = dataclasses.replace(frame, **{field: getattr(frame, field) + 1})
            return frame.encode()
        return msg

    relay, address = await _relay(relays, b, mutate)
    peer = a.peer(b.identity.node_id, address)
    await peer.unary("test.Echo", b"warmup")
    armed["on"] = True
    if field == "session_id":
        # The server does not know that session: it refuses the frame unopened; the client
        # re-keys and sends a fresh frame, which is the only one the handler ever sees.
        await peer.unary("test.Echo", b"evil")
        assert b.seen.count(b"evil") == 1
        assert sum(1 for m, d, _ in relay.log if m == "Handshake" and d == "req") == 2
        return
    with pytest.raises(FrameError):
        await peer.unary("test.Echo", b"evil")
    assert b"evil" not in b.seen


async def test_replayed_frame_refused(pair: tuple[Node, Node], relays: list[AnyRelay]) -> None:
    a, b = pair
    relay, address = await _relay(relays, b)
    peer = a.peer(b.identity.node_id, address)
    await peer.unary("test.Echo", b"pay 10")
    captured = next(msg for m, d, msg in relay.log if m == "Call" and d == "req")
    assert await relay.replay_status("Call", captured) == grpc.StatusCode.DATA_LOSS
    assert b.seen.count(b"pay 10") == 1


async def test_reordered_stream_frames_refused(pair: tuple[Node, Node], relays: list[AnyRelay]) -> None:
    a, b = pair
    held: list[bytes] = []

    def mutate(method: str, direction: str, msg: bytes) -> bytes:
        if method == "Stream" and direction == "req":
            frame = Frame.decode(msg)
            if frame.index == 1:          # swap frames 1 and 2
                held.append(msg)
                return Frame(frame.session_id, frame.call_id, 2, False, bytes(NONCE_BYTES), b"").encode()
        return msg

    relay, address = await _relay(relays, b, mutate)
    peer = a.peer(b.identity.node_id, address)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            yield bytes([i]) * 100

    with pytest.raises(FrameError):
        _ = [r async for r in peer.stream("test.Sum", b"1", chunks())]


async def test_truncated_request_stream_refused(pair: tuple[Node, Node], relays: list[AnyRelay]) -> None:
    a, b = pair

    def mutate(method: str, direction: str, msg: bytes) -> bytes:
        if method == "Stream" and direction == "req":
            frame = Frame.decode(msg)
            if frame.final and frame.index > 0:       # drop the final marker: truncation
                return dataclasses.replace(frame, final=False, index=10**6).encode()
        return msg

    relay, address = await _relay(relays, b, mutate)
    peer = a.peer(b.identity.node_id, address)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"abc"

    with pytest.raises(FrameError):
        _ = [r async for r in peer.stream("test.Sum", b"1", chunks())]


@pytest.mark.parametrize("side", ["client", "server"])
async def test_ephemeral_key_swap_mitm_fails(pair: tuple[Node, Node], side: str, relays: list[AnyRelay]) -> None:
    a, b = pair
    mitm_key = os.urandom(32)

    def mutate(method: str, direction: str, msg: bytes) -> bytes:
        if method != "Handshake":
            return msg
        if side == "client" and direction == "req":
            req = peer_pb2.HandshakeRequest.FromString(msg)
            req.client_ephemeral = mitm_key
            return req.SerializeToString()
        if side == "server" and direction == "resp":
            resp = peer_pb2.HandshakeResponse.FromString(msg)
            resp.server_ephemeral = mitm_key
            return resp.SerializeToString()
        return msg

    relay, address = await _relay(relays, b, mutate)
    peer = a.peer(b.identity.node_id, address)
    with pytest.raises(HandshakeError, match="signature"):
        await peer.unary("test.Echo", b"secret")
    assert b.seen == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_session_rekeys_after_frame_limit(relays: list[AnyRelay], transport: str) -> None:
    policy = SessionPolicy(max_frames=6)
    a, b = Node(policy, transport), Node(policy, transport)
    await a.start()
    await b.start()
    relay, address = await _relay(relays, b)
    peer = a.peer(b.identity.node_id, address)
    for i in range(10):
        assert await peer.unary("test.Echo", bytes([i])) == a.identity.node_id + bytes([i])
    handshakes = sum(1 for m, d, _ in relay.log if m == "Handshake" and d == "req")
    assert handshakes >= 3
    await a.stop()
    await b.stop()


async def test_server_restart_forgets_session_client_rekeys(pair: tuple[Node, Node]) -> None:
    a, b = pair
    peer = a.peer(b.identity.node_id, b.address)
    await peer.unary("test.Echo", b"1")
    b.channel._sessions.clear()          # as after a restart
    assert await peer.unary("test.Echo", b"2") == a.identity.node_id + b"2"

"""Fuzz of the channel's plain-TCP transport (tcp_server.py) on a real listener on loopback.

Three kinds of hostile input reach a TcpListener serving a ChannelServer with an echo unary
handler and a collecting stream handler:

- garbage before any handshake: random bytes, valid headers with random kinds and lengths (up
  to the limit, only a prefix sent), truncated messages, many connections opened and dropped;
- real sealed CALL/STREAM messages captured by a relay (tests/support/tcp_relay.py) after the
  server served them, replayed on raw sockets with bit flips, truncations, extensions, header
  changes, across connections and reordered: every call id is spent, so only ABORTs may come;
- fresh frames sealed with a real client session and never delivered, mutated the same ways
  (and, for streams, with frames dropped, duplicated, swapped, cut or spliced from another
  call): a handler may only ever see authentic bodies, a mutated call never gets an OK reply,
  and a refused unary or stream header does not burn its call id (the pristine frames are
  accepted afterwards, once).

After every batch a legitimate client on the same pool still gets served, the listener's
connections drain back to the pool's, and the event loop reported no unhandled exception.
Seeded (TW_FUZZ_SEED); TW_TCP_FUZZ_SCALE multiplies the number of inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from mesh.channel import Caller, ChannelPool, ChannelServer
from mesh.channel.frames import HEADER as FRAME_HEADER
from mesh.channel.frames import Frame, decode_reply, encode_envelope
from mesh.channel.handshake import ClientHandshake
from mesh.channel.session import Session
from mesh.channel.tcp_client import TcpLink
from mesh.channel.tcp_server import TcpListener
from mesh.channel.tcp_wire import (
    ABORT,
    CALL,
    HANDSHAKE,
    MAX_PAYLOAD,
    STREAM,
    decode_abort,
    read_message,
)
from mesh.channel.tcp_wire import HEADER as WIRE_HEADER
from mesh.errors import FrameError
from mesh.identity import Identity
from tests.support.tcp_relay import TcpRelay

SEED = int(os.environ.get("TW_FUZZ_SEED", "20261128"))
SCALE = int(os.environ.get("TW_TCP_FUZZ_SCALE", "1"))
ECHO, COLLECT = "fuzz.Echo", "fuzz.Collect"
OK = grpc.StatusCode.OK.value[0]
_CODES = {code.value[0]: code for code in grpc.StatusCode}
FINAL_AT = 16 + 8 + 4                  # offset of the final flag in a frame's header
NON_CANONICAL = [0]    # mutations left out: same frame, other bytes (a final byte other than 1)


# -- the fuzzed server ---------------------------------------------------------------------------
class FuzzServer:
    """A ChannelServer behind a TcpListener whose handlers log every body they are given."""

    def __init__(self, idle_timeout: float = 300.0) -> None:
        self.identity = Identity.generate()
        self.channel = ChannelServer(self.identity)
        self.listener = TcpListener(self.channel, idle_timeout=idle_timeout)
        self.channel.handle(ECHO, self._echo)
        self.channel.handle_stream(COLLECT, self._collect)
        self.port = 0
        self.unary_seen: list[bytes] = []
        self.stream_started: list[bytes] = []            # headers
        self.stream_chunks: dict[bytes, list[bytes]] = {}
        self.stream_done: list[bytes] = []                # headers of cleanly ended inputs

    async def _echo(self, caller: Caller, body: bytes) -> bytes:
        self.unary_seen.append(bytes(body))
        return b"echo:" + body

    async def _collect(self, caller: Caller, header: bytes,
                       chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        header = bytes(header)
        self.stream_started.append(header)
        got = self.stream_chunks.setdefault(header, [])
        async for chunk in chunks:
            got.append(bytes(chunk))
        self.stream_done.append(header)
        yield b"collected:" + header + b":" + str(len(got)).encode()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Whatever the event loop's exception handler is called with (an exception escaping a
    connection's callback, a task's exception never retrieved): must stay empty."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(previous)
    assert errors == [], [{k: repr(v) for k, v in e.items()} for e in errors]


@pytest.fixture
async def server(loop_errors: list[dict[str, Any]],
                 caplog: pytest.LogCaptureFixture) -> AsyncIterator[FuzzServer]:
    caplog.set_level(logging.WARNING, logger="mesh.channel")
    s = FuzzServer()
    s.port = await s.listener.start("127.0.0.1")
    yield s
    await s.listener.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]   # a handler or the server raised
    assert loop_errors == [], loop_errors


@pytest.fixture
async def pool() -> AsyncIterator[ChannelPool]:
    p = ChannelPool(Identity.generate())
    yield p
    await p.close()


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    return random.Random(f"{SEED}:{request.node.name}")


# -- raw connections -----------------------------------------------------------------------------
def message(kind: int, payload: bytes) -> bytes:
    return WIRE_HEADER.pack(len(payload), kind) + payload


@dataclass
class Outcome:
    """What the server sent on one raw connection before it closed it (or we gave up)."""

    messages: list[tuple[int, bytes]] = field(default_factory=list)
    closed: bool = False

    def kinds(self) -> list[int]:
        return [kind for kind, _ in self.messages]

    def abort_codes(self) -> list[grpc.StatusCode]:
        return [_CODES[decode_abort(p)[0]] for k, p in self.messages if k == ABORT]


async def exchange(port: int, data: bytes, *, timeout: float = 10.0) -> Outcome:
    """Send ``data`` then EOF on a new connection; read every answer until the server closes.

    Whatever we sent, EOF lets the server finish: not closing within ``timeout`` is a hang."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = Outcome()
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
            writer.write_eof()
        async with asyncio.timeout(timeout):
            while True:
                try:
                    out.messages.append(await read_message(reader))
                except (asyncio.IncompleteReadError, ConnectionError):
                    out.closed = True
                    return out
    finally:
        writer.transport.abort()


def pooled_connections(pool: ChannelPool) -> int:
    """TCP connections the pool holds (each is one the listener serves, directly or relayed)."""
    links = [p._link for p in pool._peers.values()]
    return sum(len(link._idle) + len(link._busy) for link in links if isinstance(link, TcpLink))


async def drained(listener: TcpListener, at_most: int) -> None:
    """The listener's connections fall back to ``at_most`` (raw sockets were all closed)."""
    try:
        async with asyncio.timeout(5):
            while len(listener._connections) > at_most:  # noqa: ASYNC110  (a plain set)
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"{len(listener._connections)} connections still open on the "
                             f"listener, expected at most {at_most}") from None


class Legit:
    """The legitimate client: checks the server still serves it after each batch."""

    def __init__(self, srv: FuzzServer, pool: ChannelPool, rng: random.Random) -> None:
        self.srv, self.pool, self.rng = srv, pool, rng
        self.peer = pool.peer(srv.identity.node_id, srv.address, srv.port)
        self.unary: list[bytes] = []          # bodies the echo handler must have seen, in order
        self.streams: list[bytes] = []        # headers of streams that must have completed
        self.checks = 0

    async def check(self, tag: str, *, extra_connections: int = 0) -> None:
        self.checks += 1
        tag = f"{tag}-{self.checks}"
        body = f"legit-{tag}-".encode() + self.rng.randbytes(self.rng.randrange(64))
        assert await self.peer.unary(ECHO, body) == b"echo:" + body
        self.unary.append(body)
        header = f"legit-stream-{tag}".encode()

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"{tag}/{i}".encode()

        assert [r async for r in self.peer.stream(COLLECT, header, chunks())] == [
            b"collected:" + header + b":3"]
        self.streams.append(header)
        await drained(self.srv.listener, pooled_connections(self.pool) + extra_connections)


# -- mutations -----------------------------------------------------------------------------------
def _flip(data: bytes, rng: random.Random, bits: int) -> bytes:
    out = bytearray(data)
    for _ in range(bits):
        pos = rng.randrange(len(out) * 8)
        out[pos // 8] ^= 1 << (pos % 8)
    return bytes(out)


def _field_change(payload: bytes, rng: random.Random) -> tuple[str, bytes]:
    session_id, call_id, index, final, nonce = FRAME_HEADER.unpack_from(payload)
    name = rng.choice(["session_id", "call_id", "index", "final", "nonce"])
    if name == "session_id":
        session_id = rng.choice([rng.randbytes(16), _flip(session_id, rng, 1)])
    elif name == "call_id":
        call_id = rng.choice([0, call_id + 1, max(call_id - 1, 0), rng.getrandbits(64),
                              call_id ^ (1 << rng.randrange(64))])
    elif name == "index":
        index = rng.choice([index + 1, max(index - 1, 0), rng.getrandbits(32), index ^ 1])
    elif name == "final":
        final = not final
    else:
        nonce = rng.choice([rng.randbytes(16), bytes(16), _flip(nonce, rng, 1)])
    return (f"field:{name}",
            FRAME_HEADER.pack(session_id, call_id, index, final, nonce) + payload[FRAME_HEADER.size:])


def mutate_frame(payload: bytes, rng: random.Random) -> tuple[str, bytes]:
    """A changed copy of a sealed frame's bytes, and the name of the change."""
    while True:
        how = rng.choice(["bitflip", "bitflip", "tag", "truncate", "extend", "splice",
                          "field", "field", "empty", "header-only"])
        if how == "bitflip":
            out = _flip(payload, rng, rng.randint(1, 4))
        elif how == "tag":                  # the authentication tag itself
            out = payload[:-32] + _flip(payload[-32:], rng, 1)
        elif how == "truncate":
            out = payload[:rng.randrange(len(payload))]
        elif how == "extend":
            out = payload + rng.randbytes(rng.randint(1, 64))
        elif how == "splice":
            start = rng.randrange(len(payload))
            end = min(len(payload), start + rng.randint(1, 16))
            out = payload[:start] + rng.randbytes(end - start) + payload[end:]
        elif how == "empty":
            out = b""
        elif how == "header-only":
            out = payload[:FRAME_HEADER.size]
        else:
            how, out = _field_change(payload, rng)
        if out == payload:
            continue
        if equivalent(payload, out):   # see test_final_flag_byte_is_canonical
            NON_CANONICAL[0] += 1
            continue
        return how, out


def equivalent(a: bytes, b: bytes) -> bool:
    """Different bytes that decode to the same frame (none since frames.py refuses a final
    byte other than 0 or 1; kept as a guard)."""
    if len(a) != len(b) or len(a) < FRAME_HEADER.size:
        return False
    try:
        fa, fb = Frame.decode(a), Frame.decode(b)
    except FrameError:
        return False
    return ((fa.session_id, fa.call_id, fa.index, fa.final, fa.nonce, bytes(fa.ciphertext))
            == (fb.session_id, fb.call_id, fb.index, fb.final, fb.nonce, bytes(fb.ciphertext)))


def mutate_message(kind: int, payload: bytes, rng: random.Random) -> tuple[str, bytes]:
    """A whole wire message with a changed frame, or a changed kind or length field."""
    roll = rng.random()
    if roll < 0.7:
        how, out = mutate_frame(payload, rng)
        return how, message(kind, out)
    if roll < 0.85:
        new_kind = rng.choice([k for k in (0, HANDSHAKE, CALL, STREAM, ABORT, 5, 255) if k != kind])
        return f"kind:{new_kind}", WIRE_HEADER.pack(len(payload), new_kind) + payload
    size = rng.choice([len(payload) + rng.randint(1, 100), rng.randrange(len(payload)),
                       MAX_PAYLOAD, MAX_PAYLOAD + 1, 2**32 - 1])
    return "length", WIRE_HEADER.pack(size, kind) + payload


def opened_reply(session: Session, frame_bytes: bytes, call_id: int, index: int
                 ) -> tuple[int, bytes]:
    """(status code, body) of a sealed reply frame the server sent our client session."""
    frame = Frame.decode(frame_bytes)
    assert frame.final
    code, _, body = decode_reply(session.open(frame, call_id, index))
    return code, bytes(body)


# -- 1. before any handshake ---------------------------------------------------------------------
async def test_garbage_before_the_handshake(server: FuzzServer, pool: ChannelPool,
                                            rng: random.Random) -> None:
    legit = Legit(server, pool, rng)
    await legit.check("start")
    counts: dict[str, int] = {}
    sent = 0

    async def run(category: str, data: bytes) -> Outcome:
        nonlocal sent
        sent += len(data)
        counts[category] = counts.get(category, 0) + 1
        out = await exchange(server.port, data)
        # nothing unauthenticated gets more than a handshake answer or an abort
        assert set(out.kinds()) <= {HANDSHAKE, ABORT}, (category, data[:64], out)
        assert out.closed
        return out

    async def batch(category: str, inputs: list[bytes]) -> None:
        for i in range(0, len(inputs), 25):            # 25 connections at a time
            await asyncio.gather(*(run(category, d) for d in inputs[i:i + 25]))
        await legit.check(category)

    n = 400 * SCALE
    await batch("random-bytes", [rng.randbytes(rng.choice([0, 1, 4, 5, 6, rng.randrange(4096)]))
                                 for _ in range(n)])

    def header_with_random_kind_and_length() -> bytes:
        size = rng.choice([0, 1, rng.randrange(64), rng.randrange(1 << 16),
                           rng.randrange(MAX_PAYLOAD + 1), MAX_PAYLOAD, MAX_PAYLOAD + 1,
                           rng.randrange(MAX_PAYLOAD, 2**32)])
        kind = rng.choice([HANDSHAKE, CALL, STREAM, ABORT, rng.randrange(256)])
        return WIRE_HEADER.pack(size, kind) + rng.randbytes(min(size, rng.randrange(4096)))

    await batch("random-header", [header_with_random_kind_and_length() for _ in range(n)])

    def well_framed() -> bytes:                   # whole messages, random contents, in a row
        return b"".join(message(rng.choice([HANDSHAKE, CALL, STREAM, ABORT]),
                                rng.randbytes(rng.choice([0, 44, 45, 77, rng.randrange(512)])))
                        for _ in range(rng.randint(1, 4)))

    await batch("well-framed-random", [well_framed() for _ in range(n)])

    # real handshake requests, whole, cut short or with bits flipped: a session at most
    def handshake_request() -> bytes:
        target = server.identity.node_id if rng.random() < 0.8 else Identity.generate().node_id
        req = ClientHandshake(Identity.generate(), target).request.SerializeToString()
        roll = rng.random()
        if roll < 0.3:
            return message(HANDSHAKE, req)
        if roll < 0.6:
            return message(HANDSHAKE, _flip(req, rng, rng.randint(1, 3)))
        return message(HANDSHAKE, req)[:rng.randrange(5 + len(req))]   # truncated

    answered = 0
    hs_inputs = [handshake_request() for _ in range(n // 2)]
    for data in hs_inputs:
        out = await run("handshake", data)
        answered += out.kinds().count(HANDSHAKE)
    await legit.check("handshake")
    assert 0 < answered < len(hs_inputs)

    # truncated messages: a real frame or message cut anywhere, then EOF: closed, no answer
    session = await legit.peer._ensure_session()
    truncated = []
    for _ in range(n):
        frame = session.seal(session.new_call_id(), 0, True,
                             encode_envelope(ECHO, b"never-" + rng.randbytes(16))).encode()
        whole = message(rng.choice([CALL, STREAM]), frame)
        truncated.append(whole[:rng.randrange(len(whole))])
    for data in truncated:
        out = await run("truncated", data)
        assert out.messages == [] and out.closed
    await legit.check("truncated")

    # many connections opened and dropped in every way, 100 at a time
    async def drop(style: int) -> None:
        counts["dropped-connection"] = counts.get("dropped-connection", 0) + 1
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        if style == 1:
            writer.write(WIRE_HEADER.pack(100, CALL)[:rng.randint(1, 4)])
        elif style == 2:
            writer.write(WIRE_HEADER.pack(1000, CALL) + b"x" * rng.randrange(1000))
        elif style == 3:
            writer.write(WIRE_HEADER.pack(MAX_PAYLOAD, STREAM) + rng.randbytes(4096))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        await asyncio.sleep(rng.random() * 0.02)
        if rng.random() < 0.5:
            writer.transport.abort()                   # RST
        else:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    for _ in range(5 * SCALE):
        await asyncio.gather(*(drop(rng.randrange(4)) for _ in range(200)))
        await legit.check("dropped")

    assert server.listener.refused_connections == 0
    assert server.unary_seen == legit.unary
    assert server.stream_started == server.stream_done == legit.streams
    assert sent < 8 * 2**20 * SCALE
    print(f"tcp fuzz, before the handshake: {counts}, {sent} bytes, "
          f"{answered}/{len(hs_inputs)} handshakes answered")
    await pool.close()
    await drained(server.listener, 0)


# -- 2. replays of served (spent) messages --------------------------------------------------------
async def test_mutated_replays_of_captured_messages(server: FuzzServer, pool: ChannelPool,
                                                    rng: random.Random) -> None:
    relay = TcpRelay(server.address)
    relay_address = await relay.start()
    relay_port = int(relay_address.rsplit(":", 1)[1])
    try:
        legit = Legit(server, pool, rng)
        captured_peer = pool.peer(server.identity.node_id, relay_address, relay_port)
        # real traffic through the relay: unary calls and streams, all served
        for i in range(8):
            body = f"captured-{i}-".encode() + rng.randbytes(rng.randrange(200))
            assert await captured_peer.unary(ECHO, body) == b"echo:" + body
            legit.unary.append(body)
        for i in range(6):
            header = f"captured-stream-{i}".encode()
            parts = [rng.randbytes(rng.randrange(1, 300)) for _ in range(rng.randint(0, 4))]

            async def chunks(parts: list[bytes] = parts) -> AsyncIterator[bytes]:
                for p in parts:
                    yield p

            got = [r async for r in captured_peer.stream(COLLECT, header, chunks())]
            assert got == [b"collected:" + header + b":" + str(len(parts)).encode()]
            legit.streams.append(header)
        await legit.check("captured", extra_connections=0)

        calls = [p for m, d, p in relay.log if m == "Call" and d == "req"]
        handshakes = [p for m, d, p in relay.log if m == "Handshake" and d == "req"]
        streams: dict[int, list[bytes]] = {}
        for m, d, p in relay.log:
            if m == "Stream" and d == "req":
                streams.setdefault(Frame.decode(p).call_id, []).append(p)
        assert len(calls) == 8 and len(streams) == 6
        stream_list = list(streams.values())
        all_frames = [(CALL, p) for p in calls] + [(STREAM, p) for s in stream_list for p in s]

        counts: dict[str, int] = {}

        def replay_input() -> tuple[str, bytes]:
            roll = rng.random()
            if roll < 0.15:                         # exact replay of one message
                kind, p = rng.choice(all_frames)
                return "exact", message(kind, p)
            if roll < 0.55:                         # one mutated message
                kind, p = rng.choice(all_frames)
                return mutate_message(kind, p, rng)
            if roll < 0.7:                          # a whole stream again, reordered
                frames = list(rng.choice(stream_list))
                rng.shuffle(frames)
                return "stream-reordered", b"".join(message(STREAM, p) for p in frames)
            if roll < 0.85:                         # frames of several calls, mixed
                picks = [rng.choice(all_frames) for _ in range(rng.randint(2, 6))]
                return "cross-call", b"".join(message(k, p) for k, p in picks)
            frames = list(rng.choice(stream_list))  # a stream with one frame mutated
            i = rng.randrange(len(frames))
            frames[i] = mutate_frame(frames[i], rng)[1]
            return "stream-one-mutated", b"".join(message(STREAM, p) for p in frames)

        n = 500 * SCALE
        for batch in range(4):
            inputs = [replay_input() for _ in range(n)]
            for i in range(0, n, 20):
                outs = await asyncio.gather(*(exchange(server.port, data)
                                              for _, data in inputs[i:i + 20]))
                for (how, _), out in zip(inputs[i:i + 20], outs, strict=True):
                    counts[how.split(":")[0]] = counts.get(how.split(":")[0], 0) + 1
                    # every call id is spent: nothing but refusals
                    assert set(out.kinds()) <= {ABORT}, (how, out)
                    assert out.closed
                    assert set(out.abort_codes()) <= {grpc.StatusCode.DATA_LOSS,
                                                      grpc.StatusCode.UNAUTHENTICATED}, (how, out)
            # a replayed handshake is refused at the replay cache: no second session for it
            for hs in rng.sample(handshakes, min(2, len(handshakes))):
                out = await exchange(server.port, message(HANDSHAKE, hs))
                assert out.kinds() == [ABORT]
                assert out.abort_codes() == [grpc.StatusCode.UNAUTHENTICATED]
                counts["handshake-replay"] = counts.get("handshake-replay", 0) + 1
            await legit.check(f"replay-{batch}")
            # the captured peer's own session still works through the relay too
            body = f"after-{batch}".encode()
            assert await captured_peer.unary(ECHO, body) == b"echo:" + body
            legit.unary.append(body)

        assert server.unary_seen == legit.unary
        assert server.stream_started == server.stream_done == legit.streams
        print(f"tcp fuzz, spent replays: {sum(counts.values())} inputs, {counts}")
    finally:
        await relay.stop()
    await pool.close()
    await drained(server.listener, 0)


# -- 3. mutations of fresh (never delivered) frames -----------------------------------------------
async def test_mutated_fresh_unary_frames(server: FuzzServer, pool: ChannelPool,
                                          rng: random.Random) -> None:
    legit = Legit(server, pool, rng)
    await legit.check("start")
    other = pool.peer(server.identity.node_id, server.address + "#other", server.port)
    session = await legit.peer._ensure_session()
    other_session = await other._ensure_session()
    counts: dict[str, int] = {}
    NON_CANONICAL[0] = 0

    async def one_case(case: int) -> None:
        body = f"fresh-{case}-".encode() + rng.randbytes(rng.randrange(300))
        call_id = session.new_call_id()
        pristine = session.seal(call_id, 0, True, encode_envelope(ECHO, body)).encode()
        others = [other_session.seal(other_session.new_call_id(), 0, True,
                                     encode_envelope(ECHO, b"x")).encode()]
        # mutated copies, several per connection: a refused CALL leaves the connection open
        # unless its framing was broken, so a mix of refusals precedes the pristine frame
        mutated: list[tuple[str, bytes]] = []
        for _ in range(rng.randint(1, 6)):
            roll = rng.random()
            if roll < 0.1:                          # sealed for another session, ids swapped in
                how, data = "cross-session", FRAME_HEADER.pack(
                    session.session_id, call_id, 0, True, Frame.decode(others[0]).nonce
                ) + others[0][FRAME_HEADER.size:]
                mutated.append((how, message(CALL, data)))
                continue
            if roll < 0.8:
                how, data = mutate_frame(pristine, rng)
                mutated.append((how, message(CALL, data)))
            else:
                how, wire = mutate_message(CALL, pristine, rng)
                if how == f"kind:{STREAM}":         # checked in test_unary_frame_as_a_stream
                    continue
                mutated.append((how, wire))
        for how, _ in mutated:
            counts[how.split(":")[0]] = counts.get(how.split(":")[0], 0) + 1
        seen_before = len(server.unary_seen)
        out = await exchange(server.port, b"".join(w for _, w in mutated)
                             + message(CALL, pristine))
        assert len(server.unary_seen) <= seen_before + 1
        replies = [p for k, p in out.messages if k == CALL]
        assert len(replies) <= 1 and set(out.kinds()) <= {ABORT, CALL}, (mutated, out)
        if replies:       # only the pristine frame, last, may be answered
            assert out.kinds()[-1] == CALL, (mutated, out)
            assert opened_reply(session, replies[0], call_id, 0) == (OK, b"echo:" + body)
        else:             # a broken frame closed the connection before the pristine one
            assert out.closed and len(server.unary_seen) == seen_before
            again = await exchange(server.port, message(CALL, pristine))
            assert again.kinds() == [CALL], (mutated, out, again)
            assert opened_reply(session, again.messages[0][1], call_id, 0) == (OK, b"echo:" + body)
        assert server.unary_seen[seen_before:] == [body]
        legit.unary.append(body)
        replay = await exchange(server.port, message(CALL, pristine))    # now it is spent
        assert replay.abort_codes() == [grpc.StatusCode.DATA_LOSS]

    n = 300 * SCALE
    for batch in range(3):
        for case in range(batch * n, (batch + 1) * n):
            await one_case(case)
        await legit.check(f"fresh-{batch}")
        assert server.unary_seen == legit.unary
    print(f"tcp fuzz, fresh unary: {3 * n} calls, {sum(counts.values())} mutated inputs, "
          f"{counts}, {NON_CANONICAL[0]} non-canonical copies left out")
    assert server.stream_started == server.stream_done == legit.streams
    await pool.close()
    await drained(server.listener, 0)


async def test_mutated_fresh_streams(server: FuzzServer, pool: ChannelPool,
                                     rng: random.Random) -> None:
    legit = Legit(server, pool, rng)
    await legit.check("start")
    session = await legit.peer._ensure_session()
    counts: dict[str, int] = {}

    def sealed_stream(header: bytes, parts: list[bytes]) -> tuple[int, list[bytes]]:
        call_id = session.new_call_id()
        frames = [session.seal(call_id, 0, False, encode_envelope(COLLECT, header)).encode()]
        frames += [session.seal(call_id, i + 1, False, p).encode() for i, p in enumerate(parts)]
        frames.append(session.seal(call_id, len(parts) + 1, True, b"").encode())
        return call_id, frames

    def mutated_stream(frames: list[bytes]) -> tuple[str, bytes, bool]:
        """(how, wire bytes, whether the first frame is untouched and first)."""
        msgs = [message(STREAM, f) for f in frames]
        how = rng.choice(["frame", "frame", "message", "drop", "duplicate", "swap", "cut",
                          "foreign", "call-inside", "shuffle"])
        k = rng.randrange(len(frames))
        if how == "frame":
            name, data = mutate_frame(frames[k], rng)
            msgs[k] = message(STREAM, data)
            how = name
        elif how == "message":
            how, msgs[k] = mutate_message(STREAM, frames[k], rng)
        elif how == "drop":
            k = rng.randrange(1, len(frames))
            del msgs[k]
        elif how == "duplicate":                     # (a final frame again is a next call)
            k = rng.randrange(len(frames) - 1)
            msgs.insert(k, msgs[k])
        elif how == "swap":
            i, k = sorted(rng.sample(range(len(frames)), 2))
            msgs[i], msgs[k] = msgs[k], msgs[i]
        elif how == "cut":
            k = rng.randrange(1, len(frames))
            msgs = msgs[:k]
            if rng.random() < 0.5:                   # and half of the next message
                nxt = message(STREAM, frames[k])
                msgs.append(nxt[:rng.randrange(len(nxt))])
        elif how == "foreign":                       # a frame of another fresh call
            _, foreign = sealed_stream(b"foreign", [b"f1", b"f2"])
            k = rng.randrange(1, len(frames))
            msgs[k] = message(STREAM, foreign[min(k, len(foreign) - 1)])
        elif how == "call-inside":                   # a unary request inside the stream
            k = rng.randrange(1, len(frames))
            unary = session.seal(session.new_call_id(), 0, True, encode_envelope(ECHO, b"in"))
            msgs.insert(k, message(CALL, unary.encode()))
        else:
            while True:
                order = list(range(len(msgs)))
                rng.shuffle(order)
                if order != sorted(order):
                    break
            msgs = [msgs[i] for i in order]
        first_intact = msgs[0] == message(STREAM, frames[0])
        return how, b"".join(msgs), first_intact

    async def one_case(case: int) -> None:
        header = f"stream-{case}".encode()
        parts = [f"{case}/{i}/".encode() + rng.randbytes(rng.randrange(200))
                 for i in range(rng.randint(1, 4))]
        call_id, frames = sealed_stream(header, parts)
        how, data, first_intact = mutated_stream(frames)
        counts[how.split(":")[0]] = counts.get(how.split(":")[0], 0) + 1
        out = await exchange(server.port, data)
        assert out.closed
        assert header not in server.stream_done, how          # a mutated input never completes
        got = server.stream_chunks.get(header, [])
        assert got == parts[:len(got)], how     # only authentic chunks, in order
        assert set(out.kinds()) <= {ABORT, STREAM}, (how, out)
        streamed = [p for k, p in out.messages if k == STREAM]
        assert first_intact == (header in server.stream_started), how
        if first_intact:
            # the handler started: one sealed refusal (it yields only after all its input)
            assert len(streamed) <= 1
            if streamed:
                code, _ = opened_reply(session, streamed[0], call_id, 0)
                assert code != OK, how
            return
        assert streamed == [], (how, out)       # no handler, no stream answer
        # refused before any handler ran: the call id is not spent, the pristine one works
        pristine = await exchange(server.port, b"".join(message(STREAM, f) for f in frames))
        assert pristine.kinds() == [STREAM, STREAM], (how, pristine)   # the output, the reply
        output = Frame.decode(pristine.messages[0][1])
        assert session.open(output, call_id, 0) == (
            b"collected:" + header + b":" + str(len(parts)).encode())
        assert opened_reply(session, pristine.messages[1][1], call_id, 1) == (OK, b"")
        assert server.stream_chunks[header] == parts
        legit.streams.append(header)

    n = 500 * SCALE
    for batch in range(3):
        for case in range(batch * n, (batch + 1) * n):
            await one_case(case)
        await legit.check(f"stream-{batch}")
        assert server.stream_done == legit.streams
        assert server.unary_seen == legit.unary
    print(f"tcp fuzz, fresh streams: {3 * n} mutated streams, {counts}")
    await pool.close()
    await drained(server.listener, 0)


async def test_unary_frame_as_a_stream_runs_no_handler(server: FuzzServer, pool: ChannelPool,
                                                       rng: random.Random) -> None:
    """A unary frame is also a valid one-frame stream (the AD does not bind the call type): sent
    as STREAM it is refused for want of a stream handler of that name, never served as a call."""
    legit = Legit(server, pool, rng)
    session = await legit.peer._ensure_session()
    for i in range(10):
        call_id = session.new_call_id()
        frame = session.seal(call_id, 0, True, encode_envelope(ECHO, f"{i}".encode())).encode()
        out = await exchange(server.port, message(STREAM, frame))
        assert out.kinds() == [STREAM]
        code, _ = opened_reply(session, out.messages[0][1], call_id, 0)
        assert code == grpc.StatusCode.NOT_FOUND.value[0]
    assert server.unary_seen == [] and server.stream_started == []
    await legit.check("after")
    await pool.close()
    await drained(server.listener, 0)


# -- bugs found ----------------------------------------------------------------------------------
async def test_final_flag_byte_is_canonical(server: FuzzServer, pool: ChannelPool,
                                            rng: random.Random) -> None:
    legit = Legit(server, pool, rng)
    session = await legit.peer._ensure_session()
    frame = bytearray(session.seal(session.new_call_id(), 0, True,
                                   encode_envelope(ECHO, b"tampered")).encode())
    assert frame[FINAL_AT] == 1
    frame[FINAL_AT] = 0x80                   # a tampered byte, same decoded flag
    out = await exchange(server.port, message(CALL, bytes(frame)))
    await pool.close()
    assert server.unary_seen == [], "the handler ran for a tampered frame"
    assert out.kinds() == [ABORT]


async def test_stalled_stream_is_closed_after_the_idle_timeout(
        loop_errors: list[dict[str, Any]], pool: ChannelPool) -> None:
    srv = FuzzServer(idle_timeout=0.2)
    srv.port = await srv.listener.start("127.0.0.1")
    try:
        legit = Legit(srv, pool, random.Random(SEED))
        session = await legit.peer._ensure_session()
        first = session.seal(session.new_call_id(), 0, False, encode_envelope(COLLECT, b"stall"))
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(message(STREAM, first.encode()))    # then nothing, for 5 idle timeouts
        await writer.drain()
        try:
            async with asyncio.timeout(1.0):
                with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                    while True:
                        await read_message(reader)
            closed = True
        except TimeoutError:
            closed = False
        finally:
            writer.transport.abort()
        await pool.close()
        await drained(srv.listener, 0)
        assert srv.stream_started == [b"stall"]
        assert closed, "the server still holds the stalled stream's connection"
    finally:
        await srv.listener.stop()


async def test_one_fresh_frame_on_many_connections_at_once(server: FuzzServer, pool: ChannelPool,
                                                           rng: random.Random) -> None:
    """Cross-connection replays racing the original: the replay window lets exactly one in."""
    legit = Legit(server, pool, rng)
    session = await legit.peer._ensure_session()
    for case in range(20):
        body = f"race-{case}".encode()
        call_id = session.new_call_id()
        if case % 2:
            frame = session.seal(call_id, 0, True, encode_envelope(ECHO, body)).encode()
            data = message(CALL, frame)
        else:
            frames = [session.seal(call_id, 0, False, encode_envelope(COLLECT, body)).encode(),
                      session.seal(call_id, 1, False, b"chunk").encode(),
                      session.seal(call_id, 2, True, b"").encode()]
            data = b"".join(message(STREAM, f) for f in frames)
        outs = await asyncio.gather(*(exchange(server.port, data) for _ in range(16)))
        served = [out for out in outs if ABORT not in out.kinds()]
        assert len(served) == 1, outs
        assert all(out.abort_codes() == [grpc.StatusCode.DATA_LOSS]
                   for out in outs if out is not served[0])
        if case % 2:
            legit.unary.append(body)
        else:
            legit.streams.append(body)
    assert server.unary_seen == legit.unary
    assert server.stream_started == server.stream_done == legit.streams
    await legit.check("after")
    await pool.close()
    await drained(server.listener, 0)


async def test_stopping_with_open_connections_reports_no_loop_error(pool: ChannelPool) -> None:
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        srv = FuzzServer()
        srv.port = await srv.listener.start("127.0.0.1")
        peer = pool.peer(srv.identity.node_id, srv.address, srv.port)
        assert await peer.unary(ECHO, b"pooled") == b"echo:pooled"   # an idle pooled connection
        _, writer = await asyncio.open_connection("127.0.0.1", srv.port)  # and a silent one
        await asyncio.sleep(0.05)
        assert len(srv.listener._connections) == 2
        await srv.listener.stop()
        await asyncio.sleep(0.05)
        writer.transport.abort()
        assert srv.listener._connections == set()
        assert [c["message"] for c in errors] == []
    finally:
        loop.set_exception_handler(previous)

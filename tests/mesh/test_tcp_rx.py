"""The TCP transport's receiver (mesh/channel/tcp_rx.py), driven as the transport drives it:
``get_buffer``, bytes written into it (as ``recv_into`` would), ``buffer_updated``. It must
agree with tcp_wire.read_message, the reference reader, however the bytes are cut."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl._sodium import ffi

from mesh.channel.tcp_rx import (
    GATE_PEEK,
    OWN_BUFFER_ABOVE,
    QUEUE_BYTES,
    QUEUE_MESSAGES,
    QUEUE_SMALL_BYTES,
    MessageReceiver,
)
from mesh.channel.tcp_wire import (
    ABORT,
    CALL,
    HANDSHAKE,
    HEADER,
    KINDS,
    MAX_PAYLOAD,
    STREAM,
    read_message,
)
from mesh.errors import FrameError

Message = tuple[int, bytes]


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def receiver() -> tuple[MessageReceiver, FakeTransport]:
    rx, transport = MessageReceiver(), FakeTransport()
    rx.connection_made(transport)
    return rx, transport


def wire(*messages: Message) -> bytes:
    return b"".join(HEADER.pack(len(p), kind) + p for kind, p in messages)


def feed(rx: MessageReceiver, data: bytes, cuts: list[int] | None = None) -> int:
    """Deliver ``data`` in pieces ending at ``cuts``, each piece as the transport would (as
    many recv_into calls as the offered buffers need); returns the number of calls."""
    pos = calls = 0
    for end in [*(cuts or []), len(data)]:
        while pos < end:
            buf = rx.get_buffer(-1)
            assert len(buf) > 0
            n = min(len(buf), end - pos)
            buf[:n] = data[pos:pos + n]
            rx.buffer_updated(n)
            pos, calls = pos + n, calls + 1
    return calls


def read_now(rx: MessageReceiver) -> Message:
    """``rx.read()`` when it has no need to wait (a message or the end is there)."""
    coro = rx.read()
    try:
        coro.send(None)
    except StopIteration as done:
        result: Message = done.value
        return result
    coro.close()
    raise AssertionError("read() would have waited")


def read_all(rx: MessageReceiver) -> tuple[list[Message], BaseException]:
    """Every message, then what ended the connection."""
    got: list[Message] = []
    while True:
        try:
            got.append(read_now(rx))
        except (asyncio.IncompleteReadError, ConnectionError, FrameError) as exc:
            return got, exc


async def reference(data: bytes) -> tuple[list[Message], BaseException]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    got: list[Message] = []
    while True:
        try:
            got.append(await read_message(reader))
        except (asyncio.IncompleteReadError, FrameError) as exc:
            return got, exc


def same_end(a: BaseException, b: BaseException) -> None:
    assert type(a) is type(b)
    if isinstance(a, asyncio.IncompleteReadError):
        assert isinstance(b, asyncio.IncompleteReadError)
        assert (a.partial, a.expected) == (b.partial, b.expected)
    else:
        assert str(a) == str(b)


MIXED = [(CALL, b"abc"), (STREAM, os.urandom(OWN_BUFFER_ABOVE + 1000)), (HANDSHAKE, b""),
         (ABORT, os.urandom(100)), (CALL, b"x")]


async def test_messages_split_at_every_byte_boundary() -> None:
    data = wire(*MIXED)
    expected = await reference(data)
    for cut in range(len(data) + 1):
        rx, _ = receiver()
        feed(rx, data, [cut])
        rx.eof_received()
        got, end = read_all(rx)
        assert got == MIXED == expected[0], cut
        same_end(end, expected[1])
    rx, _ = receiver()                       # and one byte at a time
    feed(rx, data, list(range(len(data))))
    rx.eof_received()
    assert read_all(rx)[0] == MIXED


def test_many_small_messages_take_one_recv() -> None:
    messages = [(CALL, b"%d" % i) for i in range(1000)]
    data = wire(*messages)
    rx, _ = receiver()
    assert feed(rx, data) == 1
    assert [read_now(rx) for _ in messages] == messages


def test_partial_messages_are_moved_down_as_the_staging_buffer_fills() -> None:
    rng = random.Random(7)
    messages = [(CALL, rng.randbytes(rng.randrange(OWN_BUFFER_ABOVE + 1))) for _ in range(200)]
    data = wire(*messages)
    rx, _ = receiver()
    feed(rx, data, list(range(7001, len(data), 7001)))   # pieces that straddle messages
    assert [read_now(rx) for _ in messages] == messages


def test_a_large_payload_lands_in_place() -> None:
    """Past the header's recv, each recv goes straight into the payload the reader gets."""
    payload = os.urandom(2**20)
    data = wire((STREAM, payload))
    rx, _ = receiver()
    first = 1000
    feed(rx, data[:first])
    pos = first
    while pos < len(data):
        buf = rx.get_buffer(-1)
        assert len(buf) == len(data) - pos          # never past the message's end
        n = min(len(buf), 100_000)
        buf[:n] = data[pos:pos + n]
        rx.buffer_updated(n)
        pos += n
    kind, got = read_now(rx)
    assert (kind, got) == (STREAM, payload) and isinstance(got, bytes)
    address = int(ffi.cast("uintptr_t", ffi.from_buffer(got)))
    assert int(ffi.cast("uintptr_t", ffi.from_buffer(buf))) == address + len(got) - len(buf)


@pytest.mark.parametrize(("header", "error"), [
    (HEADER.pack(MAX_PAYLOAD + 1, CALL), "exceeds"),
    (HEADER.pack(2**32 - 1, STREAM), "exceeds"),
    (HEADER.pack(3, 0), "unknown message kind 0"),
    (HEADER.pack(3, max(KINDS) + 1), "unknown message kind"),
    (HEADER.pack(0, 255), "unknown message kind 255"),
])
def test_a_bad_header_fails_after_the_messages_before_it(header: bytes, error: str) -> None:
    rx, _ = receiver()
    feed(rx, wire((CALL, b"ok")) + header + b"abc" + wire((CALL, b"never")))
    assert read_now(rx) == (CALL, b"ok")
    for _ in range(2):                        # it stays failed
        with pytest.raises(FrameError, match=error):
            read_now(rx)
    feed(rx, wire((CALL, b"late")))          # whatever else arrives is dropped
    rx.eof_received()
    with pytest.raises(FrameError):
        read_now(rx)


@pytest.mark.parametrize(("sent", "partial", "expected"), [
    (b"", b"", HEADER.size),
    (HEADER.pack(10, CALL)[:3], HEADER.pack(10, CALL)[:3], HEADER.size),
    (HEADER.pack(10, CALL) + b"12345", b"12345", 10),
    (HEADER.pack(10 * OWN_BUFFER_ABOVE, STREAM) + b"x" * 9999, b"x" * 9999, 10 * OWN_BUFFER_ABOVE),
])
async def test_eof_mid_message_is_an_incomplete_read(sent: bytes, partial: bytes,
                                                     expected: int) -> None:
    rx, _ = receiver()
    feed(rx, wire((CALL, b"whole")) + sent)
    assert rx.eof_received() is True          # half-closed: the other way stays open
    got, end = read_all(rx)
    assert got == [(CALL, b"whole")]
    assert isinstance(end, asyncio.IncompleteReadError)
    assert (end.partial, end.expected) == (partial, expected)
    same_end(end, (await reference(wire((CALL, b"whole")) + sent))[1])
    assert rx.at_eof()


def test_a_lost_connection_raises_its_error_after_what_arrived() -> None:
    rx, _ = receiver()
    feed(rx, wire((CALL, b"one")) + HEADER.pack(99_999, STREAM) + b"part")
    rx.connection_lost(ConnectionResetError("reset"))
    assert read_now(rx) == (CALL, b"one")
    with pytest.raises(ConnectionResetError, match="reset"):
        read_now(rx)
    rx, _ = receiver()
    rx.connection_lost(None)                  # closed by us (abort): an EOF to the reader
    with pytest.raises(asyncio.IncompleteReadError):
        read_now(rx)


async def test_a_waiting_reader_gets_the_message_or_the_end() -> None:
    rx, _ = receiver()
    waiting = asyncio.create_task(rx.read())
    await asyncio.sleep(0)
    data = wire((STREAM, os.urandom(3 * OWN_BUFFER_ABOVE)))
    feed(rx, data[:10])
    await asyncio.sleep(0)
    assert not waiting.done()
    feed(rx, data[10:])
    assert await waiting == (STREAM, data[HEADER.size:])
    waiting = asyncio.create_task(rx.read())
    await asyncio.sleep(0)
    rx.eof_received()
    with pytest.raises(asyncio.IncompleteReadError):
        await waiting


@pytest.mark.parametrize(("size", "count"), [(10, QUEUE_MESSAGES * 2),
                                             (OWN_BUFFER_ABOVE * 8, QUEUE_BYTES // 2**16)])
def test_unread_messages_pause_reading_until_read(size: int, count: int) -> None:
    rx, transport = receiver()
    message = (CALL, os.urandom(size))
    data, pos = wire(*[message] * count), 0
    for _ in range(count):
        while pos < len(data) and transport.calls[-1:] != ["pause"]:   # as a transport reads
            buf = rx.get_buffer(-1)
            n = min(len(buf), len(data) - pos)
            buf[:n] = data[pos:pos + n]
            rx.buffer_updated(n)
            pos += n
        assert rx._queued <= max(QUEUE_BYTES, QUEUE_SMALL_BYTES + 2**16) + size
        assert read_now(rx) == message
    assert pos == len(data) and transport.calls[:2] == ["pause", "resume"]
    assert transport.calls == ["pause", "resume"] * (len(transport.calls) // 2)


def test_no_payload_buffer_is_allocated_while_the_queue_is_full() -> None:
    """A large message's header that arrives while reading is paused waits in staging: its
    buffer is allocated once the reader has made room (a transport may deliver what it had)."""
    rx, transport = receiver()
    big = (CALL, os.urandom(OWN_BUFFER_ABOVE * 2))
    feed(rx, wire(*[(CALL, os.urandom(2**20))] * 5) + wire(big)[:HEADER.size + 100])
    assert transport.calls == ["pause"] and rx._big is None
    for _ in range(4):
        read_now(rx)
    assert transport.calls == ["pause", "resume"] and rx._big is not None
    feed(rx, wire(big)[HEADER.size + 100:])
    assert len(read_now(rx)[1]) == 2**20
    assert read_now(rx) == big


@st.composite
def streams(draw: Any) -> tuple[bytes, list[int]]:
    sizes = st.one_of(st.integers(0, 40), st.integers(0, OWN_BUFFER_ABOVE + 8),
                      st.integers(OWN_BUFFER_ABOVE - 8, 3 * 2**16))
    messages = draw(st.lists(st.tuples(st.sampled_from(sorted(KINDS)), sizes), max_size=16))
    data = b"".join(HEADER.pack(n, k) + random.Random(n).randbytes(n) for k, n in messages)
    data += draw(st.sampled_from([b"", b"\x00\x00", HEADER.pack(5, 9), HEADER.pack(7, 1)]))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=24)))
    return data, cuts


@given(streams())
@settings(max_examples=60, deadline=None)
def test_any_cut_of_any_stream_reads_as_the_reference_reader_does(
        stream: tuple[bytes, list[int]]) -> None:
    data, cuts = stream
    rx, _ = receiver()
    feed(rx, data, cuts)
    rx.eof_received()
    got, end = read_all(rx)
    want, want_end = asyncio.run(reference(data))
    assert got == want
    same_end(end, want_end)


class GateLog:
    def __init__(self) -> None:
        self.seen: list[tuple[int, int, bytes]] = []

    def __call__(self, kind: int, size: int, head: bytes) -> None:
        self.seen.append((kind, size, head))


def test_a_gate_sees_each_header_once_with_its_first_bytes_however_cut() -> None:
    """The gate (tcp_preauth.py) runs once per message, before the message is buffered, with
    the payload's first GATE_PEEK bytes; cut anywhere, the messages read the same."""
    data = wire(*MIXED)
    expected = [(kind, len(p), p[:GATE_PEEK]) for kind, p in MIXED]
    for cut in range(len(data) + 1):
        rx, _ = receiver()
        gate = GateLog()
        rx.gate = gate
        feed(rx, data, [cut])
        assert gate.seen == expected, cut
        assert [read_now(rx) for _ in MIXED] == MIXED


def test_a_gate_refusal_ends_the_connection_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused at its header: no payload buffer is allocated, the bytes after it are dropped,
    and the peer's EOF then closes the transport (nothing is left to answer)."""
    allocated: list[int] = []

    def no_buffer(size: int) -> tuple[bytes, memoryview]:
        allocated.append(size)
        raise AssertionError("a payload buffer was allocated")
    monkeypatch.setattr("mesh.channel.tcp_rx._writable_bytes", no_buffer)

    def gate(kind: int, size: int, head: bytes) -> None:
        if size > 1000:
            raise FrameError("too large before authentication")
    rx, _ = receiver()
    rx.gate = gate
    feed(rx, wire((CALL, b"small")) + HEADER.pack(64 * 2**20, CALL) + os.urandom(GATE_PEEK))
    feed(rx, os.urandom(100_000))
    assert read_now(rx) == (CALL, b"small")
    with pytest.raises(FrameError, match="too large"):
        read_now(rx)
    assert allocated == []
    assert rx.eof_received() is False

"""Message framing of the channel's TCP transport (docs/channel.md, "Transports").

The same handshake messages and sealed frames as the gRPC transport, each in a length-prefixed
message on a plain TCP connection:

    message = length(u32, of payload) | kind(u8) | payload

    HANDSHAKE  HandshakeRequest (client) / HandshakeResponse (server), protobuf
    CALL       a unary request frame (client) / its reply frame (server), frames.py layout
    STREAM     any frame of a stream call, either direction
    ABORT      code(u32) | message (utf-8): the server refused the call before any handler ran
               (unknown session, refused frame, malformed message), as gRPC's status would

A connection carries one call at a time; a client keeps idle connections for the next call.
Nothing here is trusted: frames authenticate themselves (session.py), and a message longer
than ``MAX_PAYLOAD`` or of an unknown kind ends the connection.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Protocol

from mesh.errors import FrameError

HANDSHAKE, CALL, STREAM, ABORT = 1, 2, 3, 4
KINDS = {HANDSHAKE: "Handshake", CALL: "Call", STREAM: "Stream", ABORT: "Abort"}
HEADER = struct.Struct(">IB")
_ABORT = struct.Struct(">I")
MAX_PAYLOAD = 64 * 2**20 + 4096        # the gRPC transport's message limit, plus frame headers
_JOIN_BELOW = 64 * 1024                # smaller payloads go out in one write with their header


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...


async def read_message(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next (kind, payload); IncompleteReadError at EOF, FrameError on a bad header.

    The reference reader, kept for tests' raw peers and relays; the transport itself reads
    with tcp_rx.MessageReceiver (no copies), which must agree with it."""
    size, kind = HEADER.unpack(await reader.readexactly(HEADER.size))
    if kind not in KINDS:
        raise FrameError(f"unknown message kind {kind}")
    if size > MAX_PAYLOAD:
        raise FrameError(f"message of {size} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    return kind, await reader.readexactly(size)


def write_message(writer: Writer, kind: int, payload: bytes) -> None:
    """Queue one message (the caller drains); ``writer``: a tcp_conn.Connection or StreamWriter."""
    header = HEADER.pack(len(payload), kind)
    if len(payload) < _JOIN_BELOW:
        writer.write(header + payload)
    else:                               # no copy of a large payload to prepend 5 bytes
        writer.write(header)
        writer.write(payload)


def encode_abort(code: int, message: str) -> bytes:
    return _ABORT.pack(code) + message.encode()[:4096]


def decode_abort(payload: bytes) -> tuple[int, str]:
    if len(payload) < _ABORT.size:
        raise FrameError("abort message too short")
    (code,) = _ABORT.unpack_from(payload)
    return code, payload[_ABORT.size:].decode(errors="replace")

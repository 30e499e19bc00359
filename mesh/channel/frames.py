"""Binary layouts of what the channel's Call and Stream RPCs carry (docs/channel.md).

Frames, envelopes and replies are fixed-layout byte strings rather than protobuf messages:
with 1 MiB bodies every protobuf wrap/unwrap is a full copy, and removing four of them per
direction cut the channel's CPU per MiB by ~40% (measured: 2.2 → 1.3 ms, AEGIS being ~1 ms).

    frame     = session_id(16) | call_id(u64) | index(u32) | final(u8) | nonce(32) | ciphertext
    envelope  = len(method)(u16) | method (utf-8) | body            (request plaintext)
    reply     = code(u32) | len(message)(u32) | message (utf-8) | body   (response plaintext)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mesh.errors import FrameError

_FRAME = struct.Struct(">16sQI?32s")
_ENVELOPE = struct.Struct(">H")
_REPLY = struct.Struct(">II")
MAX_METHOD = 200


@dataclass(frozen=True, slots=True)
class Frame:
    session_id: bytes
    call_id: int
    index: int
    final: bool
    nonce: bytes
    ciphertext: bytes

    def encode(self) -> bytes:
        return b"".join((_FRAME.pack(self.session_id, self.call_id, self.index, self.final,
                                     self.nonce), self.ciphertext))

    @classmethod
    def decode(cls, data: bytes) -> Frame:
        if len(data) < _FRAME.size:
            raise FrameError(f"frame of {len(data)} bytes is shorter than its header")
        session_id, call_id, index, final, nonce = _FRAME.unpack_from(data)
        return cls(session_id, call_id, index, final, nonce, data[_FRAME.size:])


def encode_envelope(method: str, body: bytes) -> bytes:
    name = method.encode()
    if len(name) > MAX_METHOD:
        raise ValueError(f"method name longer than {MAX_METHOD} bytes")
    return b"".join((_ENVELOPE.pack(len(name)), name, body))


def decode_envelope(plaintext: bytes) -> tuple[str, bytes]:
    if len(plaintext) < _ENVELOPE.size:
        raise FrameError("envelope too short")
    (n,) = _ENVELOPE.unpack_from(plaintext)
    end = _ENVELOPE.size + n
    if n > MAX_METHOD or end > len(plaintext):
        raise FrameError("malformed envelope")
    try:
        method = plaintext[_ENVELOPE.size:end].decode()
    except UnicodeDecodeError as exc:
        raise FrameError("method name is not utf-8") from exc
    return method, plaintext[end:]


def encode_reply(code: int, message: str = "", body: bytes = b"") -> bytes:
    text = message.encode()
    return b"".join((_REPLY.pack(code, len(text)), text, body))


def decode_reply(plaintext: bytes) -> tuple[int, str, bytes]:
    if len(plaintext) < _REPLY.size:
        raise FrameError("reply too short")
    code, n = _REPLY.unpack_from(plaintext)
    end = _REPLY.size + n
    if end > len(plaintext):
        raise FrameError("malformed reply")
    return code, plaintext[_REPLY.size:end].decode(errors="replace"), plaintext[end:]

"""Length-prefixed JSON frames: the only format that crosses the sandbox boundary.

Stdlib only: imported by the host, the zygote and the sandboxed worker. Never pickle.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 2**20


class FrameError(Exception):
    """Malformed, oversized or truncated frame."""


class ConnectionClosed(FrameError):
    def __init__(self) -> None:
        super().__init__("connection closed")


class FrameTooLarge(FrameError):
    def __init__(self, size: int, cap: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the cap of {cap} bytes")
        self.size = size
        self.cap = cap


def _reject_constant(name: str) -> Any:
    raise FrameError(f"non-JSON constant {name}")


# Built once: json.dumps/loads with options construct a new encoder/decoder per call, and
# in a fresh worker every object that costs is a page of copy-on-write faults.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def dumps(obj: Any) -> bytes:
    """Strict JSON (no NaN/Infinity); raises TypeError/ValueError for non-JSON values."""
    return _ENCODER.encode(obj).encode()


def loads(data: bytes | str) -> Any:
    try:
        text = data if isinstance(data, str) else (  # as json.loads decodes bytes
            data.decode(json.detect_encoding(data), "surrogatepass"))
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"invalid JSON frame: {type(exc).__name__}") from None


def encode(obj: Any) -> bytes:
    body = dumps(obj)
    return HEADER.pack(len(body)) + body


def encode_body(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def write_frame(fd: int, obj: Any) -> None:
    """Blocking write of one frame (sandbox side)."""
    write_all(fd, encode(obj))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise ConnectionClosed
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, cap: int = MAX_FRAME) -> Any:
    """Blocking read of one frame (sandbox side)."""
    (size,) = HEADER.unpack(_read_exact(fd, HEADER.size))
    if size > cap:
        raise FrameTooLarge(size, cap)
    return loads(_read_exact(fd, size))

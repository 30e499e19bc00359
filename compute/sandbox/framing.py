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


# The C scanner and encoder behind them, called directly: JSONDecoder.decode/raw_decode,
# detect_encoding and JSONEncoder.encode/iterencode are Python layers that build a new C
# encoder per call and walk more code, and a fresh worker pays a copy-on-write fault for
# every page it writes (~35 per worker less this way). Frames are compact UTF-8 JSON with
# nothing around the value (dumps writes exactly that); anything else is refused.
_SCAN: Any = _DECODER.scan_once  # type: ignore[attr-defined]  # set by JSONDecoder.__init__
# markers=None: no circular-reference check (a cycle ends in RecursionError instead).
_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE = _make_encoder(None, _ENCODER.default, json.encoder.encode_basestring, None, ":",
                          ",", False, False, False) if _make_encoder else None


def dumps(obj: Any) -> bytes:
    """Strict JSON (no NaN/Infinity); raises TypeError/ValueError (RecursionError for a
    cycle or too deep a value) for non-JSON values."""
    if _C_ENCODE is None:
        return _ENCODER.encode(obj).encode()
    return "".join(_C_ENCODE(obj, 0)).encode()


def loads(data: bytes | str) -> Any:
    try:
        text = data if isinstance(data, str) else data.decode()  # strict UTF-8
        value, end = _SCAN(text, 0)
    except (ValueError, RecursionError, StopIteration) as exc:
        raise FrameError(f"invalid JSON frame: {type(exc).__name__}") from None
    if end != len(text):
        raise FrameError("invalid JSON frame: data after the value")
    return value


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

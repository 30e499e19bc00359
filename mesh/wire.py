"""Protobuf bodies that came from a peer: bounded, parsed, or refused with a status code.

``split_bytes_field`` takes one large ``bytes`` field out of an encoded message as a view, so a
1 MiB fragment is not copied by the parser into its arena and again into a ``bytes`` object on
every read of the field (python-upb does both); the rest of the message is parsed as usual.
``bytes_field_key`` is the other direction: the key and length that put such a field, sent
from its own buffer as a separate part, at the end of an encoded message.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from mesh.errors import InvalidArgumentError, ResourceExhaustedError

M = TypeVar("M", bound=Message)
Buffer = bytes | bytearray | memoryview


def parse_message(cls: type[M], body: Buffer, limit: int | None = None) -> M:
    """``body`` as a ``cls``: RESOURCE_EXHAUSTED over ``limit`` bytes (checked before any
    parsing), INVALID_ARGUMENT if it is not a valid encoding."""
    if limit is not None and len(body) > limit:
        raise ResourceExhaustedError(f"request of {len(body)} bytes exceeds {limit}")
    msg = cls()
    try:
        msg.ParseFromString(body)  # type: ignore[arg-type]  # upb parses any buffer
    except DecodeError as exc:
        raise InvalidArgumentError(f"malformed {cls.__name__}") from exc
    return msg


def _varint(view: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(view) or shift > 63:
            raise InvalidArgumentError("malformed message: truncated varint")
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def bytes_field_key(number: int, size: int) -> bytes:
    """The key and length varint of a length-delimited field ``number`` of ``size`` bytes:
    followed by those bytes, a valid encoding of the field (to append after the others)."""
    out = bytearray()
    for value in ((number << 3) | 2, size):
        while True:
            out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
            value >>= 7
            if not value:
                break
    return bytes(out)


def split_bytes_field(body: Buffer, number: int) -> tuple[bytes, memoryview]:
    """(the message without field ``number``, that field's bytes as a view into ``body``).

    Walks the top-level fields by their wire types only; a second occurrence of the field (a
    conforming encoder writes a singular field once) or a group is refused as malformed.
    """
    view = memoryview(body)
    rest: list[memoryview] = []
    found: memoryview | None = None
    pos = 0
    while pos < len(view):
        start = pos
        key, pos = _varint(view, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(view, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(view, pos)
            if key >> 3 == number:
                if found is not None:
                    raise InvalidArgumentError(f"malformed message: field {number} twice")
                if pos + size > len(view):
                    raise InvalidArgumentError("malformed message: truncated field")
                found = view[pos:pos + size]
                pos += size
                continue
            pos += size
        else:
            raise InvalidArgumentError(f"malformed message: wire type {wire}")
        if pos > len(view):
            raise InvalidArgumentError("malformed message: truncated field")
        rest.append(view[start:pos])
    return b"".join(rest), found if found is not None else memoryview(b"")

"""Protobuf bodies that came from a peer: bounded, parsed, or refused with a status code."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from mesh.errors import InvalidArgumentError, ResourceExhaustedError

M = TypeVar("M", bound=Message)


def parse_message(cls: type[M], body: bytes, limit: int | None = None) -> M:
    """``body`` as a ``cls``: RESOURCE_EXHAUSTED over ``limit`` bytes (checked before any
    parsing), INVALID_ARGUMENT if it is not a valid encoding."""
    if limit is not None and len(body) > limit:
        raise ResourceExhaustedError(f"request of {len(body)} bytes exceeds {limit}")
    msg = cls()
    try:
        msg.ParseFromString(body)
    except DecodeError as exc:
        raise InvalidArgumentError(f"malformed {cls.__name__}") from exc
    return msg

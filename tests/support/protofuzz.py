"""Hypothesis strategies for arbitrary protobuf messages, built from their descriptors.

``known`` maps a field name (``file_id``, ``version``, ``function_name``, ...) to values that
really exist on the fuzzed node; such a field takes one of them two times in three. Random text
alone is refused by input validation almost always, so without them the handlers' deeper code
would hardly be reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import descriptor, message, message_factory
from hypothesis import strategies as st

FD = descriptor.FieldDescriptor
TRICKY_TEXT = ["", "../../etc/passwd", "/etc/shadow", "..", "a/../../b", "\x00", "%2e%2e%2f",
               "ｆｉｌｅ.txt", "\u202ename.exe", "CON", "x" * 300, "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
               "default", "root", "hello", "*", "\ud7ff", "😀" * 10]


JSONISH = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(),
                    st.text(max_size=20))


def _filled(cls: Any, values: Any) -> message.Message:
    msg: Any = cls()
    (msg.update if isinstance(values, dict) else msg.extend)(values)
    return msg  # type: ignore[no-any-return]


Known = Mapping[str, tuple[str | bytes, ...]]
# Status codes a handler answers bad input with on purpose (INTERNAL/UNKNOWN never are).
DELIBERATE = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.DEADLINE_EXCEEDED})


def _text(pool: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    choices = st.one_of(st.text(max_size=40), st.sampled_from(TRICKY_TEXT))
    return st.one_of(st.sampled_from(pool), st.sampled_from(pool), choices) if pool else choices


def _scalar(field: FD, known: Known) -> st.SearchStrategy[Any]:
    t = field.type
    pool = known.get(field.name, ())
    if t == FD.TYPE_STRING:
        return _text(tuple(v for v in pool if isinstance(v, str)))
    if t == FD.TYPE_BYTES:
        raw = st.one_of(st.binary(max_size=300), st.sampled_from([b"", b"\x00" * 20, b"\xff" * 32]))
        real = tuple(v for v in pool if isinstance(v, bytes))
        return st.one_of(st.sampled_from(real), st.sampled_from(real), raw) if real else raw
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if t == FD.TYPE_FLOAT else 64)
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return st.one_of(st.integers(0, 16), st.integers(0, 2**32 - 1))
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return st.one_of(st.integers(0, 16), st.integers(0, 2**64 - 1))
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32, FD.TYPE_ENUM):
        return st.integers(-(2**31), 2**31 - 1)
    return st.integers(-(2**63), 2**63 - 1)


def messages(desc: descriptor.Descriptor, depth: int = 0, known: Known | None = None
             ) -> st.SearchStrategy[message.Message]:
    """Messages of type ``desc`` with random fields (nested up to depth 2)."""
    known = known or {}
    cls = message_factory.GetMessageClass(desc)
    if desc.full_name == "google.protobuf.ListValue":        # function args, JSON-like
        return st.lists(JSONISH, max_size=4).map(lambda xs: _filled(cls, xs))
    if desc.full_name == "google.protobuf.Struct":           # function kwargs
        return st.dictionaries(_text(), JSONISH, max_size=3).map(lambda d: _filled(cls, d))
    if desc.full_name == "google.protobuf.Value" or depth > 2:
        return st.just(cls())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_f, val_f = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            if val_f.message_type is None:
                fields[field.name] = st.dictionaries(_scalar(key_f, known), _scalar(val_f, known),
                                                     max_size=3)
            continue
        if field.message_type is not None:
            inner = messages(field.message_type, depth + 1, known)
            strategy: st.SearchStrategy[Any] = (st.lists(inner, max_size=2)
                                                if field.is_repeated else inner)
        else:
            strategy = (st.lists(_scalar(field, known), max_size=3) if field.is_repeated
                        else _scalar(field, known))
        fields[field.name] = strategy

    @st.composite
    def build(draw: st.DrawFn) -> message.Message:
        msg = cls()
        for name, strategy in fields.items():
            if not draw(st.booleans()):
                continue
            value = draw(strategy)
            field = desc.fields_by_name[name]
            if field.message_type is not None and not isinstance(value, dict):
                if field.is_repeated:
                    getattr(msg, name).extend(value)
                else:
                    getattr(msg, name).CopyFrom(value)
            elif isinstance(value, dict):
                getattr(msg, name).update(value)
            elif field.is_repeated:
                getattr(msg, name).extend(value)
            else:
                setattr(msg, name, value)
        return msg

    return build()

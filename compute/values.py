"""JSON-compatible values on the wire: protobuf Value/Struct/ListValue <-> Python.

Never pickle. What crosses: None, bool, int (|i| <= 2**53, exactly representable as the
double that protobuf's Value carries), float (finite), str, list/tuple (sent as a list) and
dict with str keys. Integral floats within 2**53 come back as int (JSON semantics: 2.0 == 2).
Everything else (bytes, sets, NaN/Infinity, huge ints, other key types, objects) is refused
with ``WireValueError`` (INVALID_ARGUMENT). Depth and encoded size are capped.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2

from mesh.errors import InvalidArgumentError

JSON = Any
MAX_INT = 2**53
MAX_DEPTH = 64                 # protobuf's own recursion limit is 100
MAX_VALUE_BYTES = 4 * 2**20    # encoded args+kwargs or result


class WireValueError(InvalidArgumentError):
    """A value cannot travel as JSON (or exceeds the limits)."""


def _check_int(value: int) -> float:
    if abs(value) > MAX_INT:
        raise WireValueError(f"integer {value} is beyond ±2**53 and cannot travel exactly "
                             "(send it as a string)")
    return float(value)


def to_value(obj: JSON, out: struct_pb2.Value | None = None, *, _depth: int = 0
             ) -> struct_pb2.Value:
    """Python -> protobuf Value (raises WireValueError)."""
    if _depth > MAX_DEPTH:
        raise WireValueError(f"value nested deeper than {MAX_DEPTH} levels")
    value = struct_pb2.Value() if out is None else out
    if obj is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(obj, bool):
        value.bool_value = obj
    elif isinstance(obj, int):
        value.number_value = _check_int(obj)
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            raise WireValueError(f"{obj!r} is not a JSON number")
        value.number_value = obj
    elif isinstance(obj, str):
        value.string_value = obj
    elif isinstance(obj, list | tuple):
        value.list_value.SetInParent()     # an empty list is still a list, not null
        _fill_list(obj, value.list_value, _depth + 1)
    elif isinstance(obj, dict):
        value.struct_value.SetInParent()
        _fill_struct(obj, value.struct_value, _depth + 1)
    else:
        raise WireValueError(f"a {type(obj).__name__} is not JSON-compatible "
                             "(use None, bool, int, float, str, list, dict)")
    return value


def _fill_list(items: list[JSON] | tuple[JSON, ...], out: struct_pb2.ListValue,
               depth: int) -> None:
    for item in items:
        to_value(item, out.values.add(), _depth=depth)


def _fill_struct(mapping: dict[Any, JSON], out: struct_pb2.Struct, depth: int) -> None:
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise WireValueError(f"dict key {key!r} is not a string")
        to_value(item, out.fields[key], _depth=depth)


def to_list(items: list[JSON] | tuple[JSON, ...]) -> struct_pb2.ListValue:
    out = struct_pb2.ListValue()
    _fill_list(items, out, 1)
    return out


def to_struct(mapping: dict[str, JSON]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    _fill_struct(mapping, out, 1)
    return out


def from_value(value: struct_pb2.Value, *, _depth: int = 0) -> JSON:
    """protobuf Value -> Python (raises WireValueError on NaN/Infinity or excess depth)."""
    if _depth > MAX_DEPTH:
        raise WireValueError(f"value nested deeper than {MAX_DEPTH} levels")
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "bool_value":
        return value.bool_value
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise WireValueError(f"{number!r} is not a JSON number")
        if number.is_integer() and abs(number) <= MAX_INT:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "list_value":
        return from_list(value.list_value, _depth=_depth + 1)
    return from_struct(value.struct_value, _depth=_depth + 1)


def from_list(items: struct_pb2.ListValue, *, _depth: int = 1) -> list[JSON]:
    return [from_value(v, _depth=_depth) for v in items.values]


def from_struct(mapping: struct_pb2.Struct, *, _depth: int = 1) -> dict[str, JSON]:
    return {k: from_value(v, _depth=_depth) for k, v in mapping.fields.items()}


def check_size(*messages: Any, limit: int = MAX_VALUE_BYTES) -> None:
    """Refuse values whose encoding exceeds ``limit`` bytes."""
    size = sum(m.ByteSize() for m in messages)
    if size > limit:
        raise WireValueError(f"value of {size} bytes exceeds the {limit}-byte limit")


def decode_call_args(args: struct_pb2.ListValue, kwargs: struct_pb2.Struct
                     ) -> tuple[list[JSON], dict[str, JSON]]:
    """Arguments of a call, checked: size, JSON numbers, keyword names are identifiers."""
    check_size(args, kwargs)
    pos = from_list(args)
    kw = from_struct(kwargs)
    bad = [k for k in kw if not k.isidentifier()]
    if bad:
        raise WireValueError(f"keyword argument name {bad[0]!r} is not an identifier")
    return pos, kw

"""compute.values: JSON-compatible values <-> protobuf Value, round trip and refusals."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from compute import values
from compute.values import WireValueError

json_scalars = (st.none() | st.booleans()
                | st.integers(min_value=-(2**53), max_value=2**53)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text())
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(b, int | float) and (a == b or (math.isclose(a, b)))
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(json_values)
@settings(max_examples=150, deadline=None)
def test_round_trip_through_wire_bytes(value: Any) -> None:
    wire = values.to_value(value).SerializeToString()
    back = struct_pb2.Value()
    back.ParseFromString(wire)
    assert _same(value, values.from_value(back))


@given(st.lists(json_values, max_size=4), st.dictionaries(
    st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), json_values, max_size=4))
@settings(max_examples=60, deadline=None)
def test_call_arguments_round_trip(args: list[Any], kwargs: dict[str, Any]) -> None:
    pos, kw = values.decode_call_args(values.to_list(args), values.to_struct(kwargs))
    assert _same(args, pos) and _same(kwargs, kw)


def test_ints_stay_ints_and_tuples_become_lists() -> None:
    out = values.from_value(values.to_value({"n": 3, "t": (1, 2.5), "f": 2.0}))
    assert out == {"n": 3, "t": [1, 2.5], "f": 2}
    assert type(out["n"]) is int


@pytest.mark.parametrize("bad", [
    b"bytes", {1, 2}, float("nan"), float("inf"), 2**60, {1: "int key"}, object(),
    complex(1, 2), [b"nested"]])
def test_non_json_values_are_refused(bad: Any) -> None:
    with pytest.raises(WireValueError) as info:
        values.to_value(bad)
    assert info.value.code.name == "INVALID_ARGUMENT"


def test_depth_and_size_limits() -> None:
    deep: Any = 1
    for _ in range(values.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(WireValueError, match="deeper"):
        values.to_value(deep)
    big = values.to_list(["x" * 2**20] * 5)
    with pytest.raises(WireValueError, match="exceeds"):
        values.decode_call_args(big, struct_pb2.Struct())


def test_bad_keyword_names_and_wire_nan_are_refused() -> None:
    kwargs = struct_pb2.Struct()
    kwargs.fields["not a name"].number_value = 1
    with pytest.raises(WireValueError, match="identifier"):
        values.decode_call_args(struct_pb2.ListValue(), kwargs)
    nan = struct_pb2.Value(number_value=float("nan"))
    with pytest.raises(WireValueError):
        values.from_value(nan)

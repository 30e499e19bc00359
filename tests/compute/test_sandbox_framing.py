"""The frame codec shared by the host, the zygote and the workers (compute/sandbox/framing.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compute.sandbox import framing

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(JSON_VALUES)
def test_round_trip_matches_the_json_module(value: Any) -> None:
    data = framing.dumps(value)
    assert data == json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode()
    assert framing.loads(data) == value
    assert framing.loads(data.decode()) == value


def test_dumps_refuses_non_json() -> None:
    for bad in (float("nan"), float("inf"), {1, 2}, b"x", {(1,): 2}):
        with pytest.raises((TypeError, ValueError)):
            framing.dumps(bad)
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises((ValueError, RecursionError)):
        framing.dumps(cycle)


@pytest.mark.parametrize("data", [
    b"", b" ", b'{"a":1} ', b' {"a":1}', b'{"a":1}{}', b"[1,]", b"NaN", b"[Infinity]",
    b'"\xff"', "[1]".encode("utf-16"), b"[" * 100_000 + b"]" * 100_000, b"'a'",
])
def test_loads_refuses_anything_but_one_compact_value(data: bytes) -> None:
    with pytest.raises(framing.FrameError):
        framing.loads(data)


def test_frames() -> None:
    assert framing.encode({"op": "x"}) == b'\x00\x00\x00\n{"op":"x"}'
    assert framing.encode_body(b"ab") == b"\x00\x00\x00\x02ab"

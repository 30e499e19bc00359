"""mesh/wire.py's split_bytes_field: a large bytes field taken out of an encoded message as a
view, the rest parsed by protobuf; malformed encodings are refused, never mis-split."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.errors import InvalidArgumentError
from mesh.wire import split_bytes_field
from proto import storage_pb2


@given(st.text(max_size=40), st.integers(0, 2**32 - 1), st.binary(max_size=40),
       st.binary(max_size=3000))
def test_split_agrees_with_protobuf(file: str, index: int, digest: bytes, data: bytes) -> None:
    msg = storage_pb2.StoreFragmentRequest(file=file, index=index, hash=digest, data=data)
    head, view = split_bytes_field(msg.SerializeToString(), 4)
    assert bytes(view) == data
    rest = storage_pb2.StoreFragmentRequest.FromString(head)
    assert (rest.file, rest.index, rest.hash, rest.data) == (file, index, digest, b"")


def test_the_view_is_into_the_body_not_a_copy() -> None:
    body = bytearray(storage_pb2.StoreFragmentRequest(data=os.urandom(1000)).SerializeToString())
    _, view = split_bytes_field(body, 4)
    body[-1] ^= 0xFF
    assert view[-1] == body[-1]


@pytest.mark.parametrize("body", [
    b"\x22\x05abc",                 # field 4 longer than the message
    b"\x22\x01a\x22\x01b",          # field 4 twice
    b"\x08\xff\xff",                # truncated varint
    b"\x0b\x0c",                    # a group (wire type 3)
    b"\x0d\x01\x02",                # fixed32 cut short
    b"\x12\x09abc",                 # another length-delimited field cut short
])
def test_malformed_encodings_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match="malformed"):
        split_bytes_field(body, 4)

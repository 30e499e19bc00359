"""CIDs: cross-checked against the independent ``multiformats`` implementation."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiformats import CID, multihash

from storage.cid import CidError, CidHasher, cid_for, cid_from_digest, is_cid, parse_cid

EMPTY = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def reference(data: bytes) -> str:
    return str(CID("base32", 1, "raw", multihash.digest(data, "sha2-256")))


@pytest.mark.parametrize(
    "data", [b"", b"a", b"hello world\n", bytes(range(256)), os.urandom(1 << 20)]
)
def test_matches_multiformats(data: bytes) -> None:
    cid = cid_for(data)
    assert cid == reference(data)
    assert cid.startswith("bafkrei")
    decoded = CID.decode(cid)
    assert decoded.version == 1 and decoded.codec.name == "raw"
    assert decoded.hashfun.name == "sha2-256"
    assert parse_cid(cid) == hashlib.sha256(data).digest() == decoded.raw_digest


def test_empty_is_the_well_known_cid() -> None:
    assert cid_for(b"") == EMPTY


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_hasher_streams_to_the_same_cid(pieces: list[bytes]) -> None:
    h = CidHasher()
    for p in pieces:
        h.update(memoryview(p))
    whole = b"".join(pieces)
    assert h.cid() == cid_for(whole) == reference(whole)
    assert h.hexdigest() == hashlib.sha256(whole).hexdigest()
    assert h.size == len(whole)
    assert cid_from_digest(h.digest()) == h.cid()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "bafkrei",
        EMPTY.upper(),
        "B" + EMPTY[1:],
        EMPTY[:-1] + "1",  # '1' is not base32
        EMPTY + "a",
        "../../etc/passwd",
        str(CID("base58btc", 1, "raw", multihash.digest(b"", "sha2-256"))),
        str(CID("base32", 1, "dag-pb", multihash.digest(b"", "sha2-256"))),
        str(CID("base32", 1, "raw", multihash.digest(b"", "sha2-512")))[:59],
        EMPTY[:-1] + "v",  # non-canonical trailing bits
    ],
)
def test_invalid_cids_rejected(bad: str) -> None:
    assert not is_cid(bad)
    with pytest.raises(CidError):
        parse_cid(bad)
    with pytest.raises(ValueError):  # CidError is also a ValueError
        parse_cid(bad)


def test_non_string_is_not_a_cid() -> None:
    assert not is_cid(None)
    assert not is_cid(EMPTY.encode())


def test_digest_length_checked() -> None:
    with pytest.raises(CidError):
        cid_from_digest(b"\x00" * 31)

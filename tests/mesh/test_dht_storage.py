"""RecordStorage: signed values only, newest per owner, expiry, size cap."""

from __future__ import annotations

import time

import pytest

from mesh.dht.storage import MAX_SET_BYTES, RecordStorage, decode_set, encode_set
from mesh.errors import RecordError
from mesh.identity import Identity
from mesh.records import record_key, sign_record


def key_for(name: bytes = b"fn") -> bytes:
    return record_key("provider", Identity.generate().public_key, name)


def test_newest_per_owner_and_stale_refused() -> None:
    store = RecordStorage()
    a, b = Identity.generate(), Identity.generate()
    key = key_for()
    assert store.put(key, sign_record(a, "provider", b"1", name=b"fn", seq=1))
    assert store.put(key, sign_record(b, "provider", b"1", name=b"fn", seq=1))
    assert store.put(key, sign_record(a, "provider", b"2", name=b"fn", seq=2))
    assert not store.put(key, sign_record(a, "provider", b"0", name=b"fn", seq=0))
    assert not store.put(key, sign_record(a, "provider", b"x", name=b"fn", seq=2))  # same seq
    held = decode_set(store[key])
    assert sorted((r.owner_key == a.public_key, r.payload) for r in held) == [
        (False, b"1"), (True, b"2")]
    assert [k for k, _ in store] == [key]


def test_wrong_key_and_forgery_raise() -> None:
    store = RecordStorage()
    owner = Identity.generate()
    rec = sign_record(owner, "provider", b"v", name=b"fn")
    with pytest.raises(RecordError, match="key"):
        store.put(key_for(b"other"), rec)
    rec.payload = b"w"
    with pytest.raises(RecordError):
        store.put(key_for(), rec)
    assert not store.put_set(key_for(), encode_set([rec]))
    with pytest.raises(RecordError):
        store.put_set(key_for(), b"\xff\xff")


def test_records_expire() -> None:
    store = RecordStorage()
    owner = Identity.generate()
    key = key_for()
    assert store.put(key, sign_record(owner, "provider", b"v", name=b"fn", ttl_s=0.2))
    assert store.get(key) is not None
    time.sleep(0.25)
    assert store.get(key) is None and store.records(key) == [] and len(store) == 0


def test_set_stays_under_a_datagram() -> None:
    store = RecordStorage()
    key = key_for()
    for i in range(60):
        store.put(key, sign_record(Identity.generate(), "provider", bytes(300), name=b"fn",
                                   ttl_s=100 + i))
    held = store[key]
    assert len(held) <= MAX_SET_BYTES
    assert len(decode_set(held)) >= 10

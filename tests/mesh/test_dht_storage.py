"""RecordStorage: signed values only, newest per owner, expiry, size cap."""

from __future__ import annotations

import time

import pytest

from mesh.dht.storage import (
    MAX_RECORDS_PER_KEY,
    MAX_SET_BYTES,
    MAX_TTL_S,
    RecordStorage,
    decode_set,
    encode_set,
    merge_verified,
)
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


def test_a_record_never_displaces_another_owner_s() -> None:
    """Found in the DHT review: a full key evicted the records expiring soonest, so records
    signed by fresh keys with a far expiry pushed a function's owner claim (or providers) out."""
    store = RecordStorage()
    key = key_for()
    owner = Identity.generate()
    assert store.put(key, sign_record(owner, "provider", b"mine", name=b"fn", ttl_s=30))
    far = MAX_TTL_S - 60
    stored = sum(store.put(key, sign_record(Identity.generate(), "provider", bytes(i % 300),
                                            name=b"fn", ttl_s=far)) for i in range(80))
    assert 0 < stored < MAX_RECORDS_PER_KEY
    held = decode_set(store[key])
    assert owner.public_key in {r.owner_key for r in held}
    assert store.put(key, sign_record(owner, "provider", b"mine", name=b"fn", ttl_s=30))
    assert b"mine" in {r.payload for r in decode_set(store[key])}


def test_a_record_s_lifetime_is_capped() -> None:
    store = RecordStorage()
    key = key_for()
    forever = sign_record(Identity.generate(), "provider", b"v", name=b"fn",
                          ttl_s=MAX_TTL_S + 3600)
    with pytest.raises(RecordError, match="lifetime"):
        store.put(key, forever)
    assert merge_verified(key, [forever]) == []
    assert store.put(key, sign_record(Identity.generate(), "provider", b"v", name=b"fn",
                                      ttl_s=7 * 86400))


def test_all_keys_together_stay_within_the_budget() -> None:
    """Found in the DHT review: every key a STORE named took memory until its records expired,
    and a record chose its own expiry, so a member could grow a node without bound."""
    store = RecordStorage(max_bytes=20_000)
    signer = Identity.generate()
    accepted = [store.put(record_key("junk", signer.public_key, b"%d" % i),
                          sign_record(signer, "junk", bytes(900), name=b"%d" % i, ttl_s=0.3))
                for i in range(60)]
    assert accepted[0] and not accepted[-1]
    assert store.stored_bytes <= 20_000
    held_now = sum(len(v) for _, v in store)
    assert store.stored_bytes == held_now
    # Updates of a held key that do not grow it still go in; expired records make room.
    owner = Identity.generate()
    key = key_for()
    time.sleep(0.35)
    assert store.put(key, sign_record(owner, "provider", b"v", name=b"fn", seq=1))
    assert store.put(key, sign_record(owner, "provider", b"w", name=b"fn", seq=2))
    held_now = sum(len(v) for _, v in store)        # (reading drops the expired keys)
    assert store.stored_bytes == held_now == len(store[key])


def test_a_sender_is_charged_for_what_it_brings_until_its_signer_stores_it() -> None:
    """quota.py: records of signers that are not live peers count against their sender (4 of
    a key, 1/8 of the budget); the signer's own newer record moves the charge; expiry frees
    it; this node's own puts are charged to nobody."""
    store = RecordStorage(max_bytes=80_000)
    sender, live = Identity.generate(), Identity.generate()
    store.is_peer = {live.node_id}.__contains__
    key = record_key("note", b"", b"k")
    strangers = [Identity.generate() for _ in range(5)]
    kept = []
    for who in strangers:
        try:
            kept.append(store.put(key, sign_record(who, "note", b"x", name=b"k", ttl_s=0.3),
                                  sender.node_id))
        except RecordError:
            kept.append(False)
    assert kept == [True] * 4 + [False]
    assert store.put(key, sign_record(live, "note", b"x", name=b"k"), sender.node_id)
    # The first stranger stores its own newer record: the sender is charged one fewer.
    assert store.put(key, sign_record(strangers[0], "note", b"y", name=b"k", seq=2**62),
                     strangers[0].node_id)
    assert store.put(key, sign_record(strangers[4], "note", b"x", name=b"k"), sender.node_id)
    with pytest.raises(RecordError, match="provider"):
        store.put(record_key("provider", b"", b"fn"),
                  sign_record(strangers[1], "provider", b"p", name=b"fn"), sender.node_id)
    # Budget: 1/8 of 80 KB per account; this node's own puts are not charged.
    big = [sign_record(sender, "note", bytes(3500), name=b"%d" % i, ttl_s=0.3)
           for i in range(6)]
    stored = []
    for record in big:
        try:
            stored.append(store.put(record_key("note", b"", record.name), record,
                                    sender.node_id))
        except RecordError:
            stored.append(False)
    assert stored == [True, True, False, False, False, False]     # 10 KB: ~0.7 KB in `key`, 2 more
    assert all(store.put(record_key("note", b"", r.name), r) for r in big[2:])
    time.sleep(1.05)    # expiry frees the charges (a purge, at most once a second, when an
    # account looks full)
    assert store.put(record_key("note", b"", b"again"), sign_record(
        sender, "note", bytes(3500), name=b"again"), sender.node_id)

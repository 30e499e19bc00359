"""Revocations list the revoked writer's records the owner saw; nothing it signs later counts.

The hole these close: a revocation used to admit every record of the writer whose vector was
≤ the revocation's, so the revoked writer could still sign new records at counters it had used
(an equivocation) or skipped, on old bases, and every replica accepted them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from mesh.identity import Identity
from proto import versions_pb2
from storage.cid import cid_for
from storage.versions import grants
from storage.versions.errors import MalformedRecordError, RevokedWriterError
from storage.versions.grants import sign_revocation
from storage.versions.records import (
    GRANT_DOMAIN,
    MAX_KEPT,
    decode_grant,
    encode,
    grant_id,
    new_binding,
    record_id,
    sign_grant,
    sign_version,
    vector_of,
    verify_grant,
    writer_id,
)
from storage.versions.store import VersionStore
from storage.versions.vset import VersionSet

OWNER = Identity.from_seed(b"owner")
ALICE = Identity.from_seed(b"alice")
OW, A = writer_id(OWNER.public_key), writer_id(ALICE.public_key)


def revise(vs: VersionSet, who: Identity, binding: versions_pb2.FileBinding, data: bytes,
           parents: list[bytes] | None = None, floor: int = 0) -> versions_pb2.VersionRecord:
    parents = [h.id for h in vs.heads()] if parents is None else parents
    record = sign_version(who, binding, cid_for(data), vs.next_vector(who.public_key, parents,
                                                                      floor), parents)
    assert vs.add(record)
    return record


def twin(record: versions_pb2.VersionRecord, data: bytes) -> versions_pb2.VersionRecord:
    """The same writer, parents and vector, other content: an equivocation at an old counter."""
    return sign_version(ALICE, record.file, cid_for(data), vector_of(record.vector),
                        list(record.parents))


def history() -> tuple[VersionSet, versions_pb2.FileBinding, list[versions_pb2.VersionRecord]]:
    """Owner g, Alice a1, owner o2, Alice a3 (her counter skips 2): all seen by the owner."""
    binding = new_binding(OWNER.public_key)
    vs = VersionSet(binding.file_id)
    vs.add_grant(sign_grant(OWNER, binding, ALICE.public_key, seq=1))
    g = revise(vs, OWNER, binding, b"g")
    a1 = revise(vs, ALICE, binding, b"a1")
    o2 = revise(vs, OWNER, binding, b"o2")
    a3 = revise(vs, ALICE, binding, b"a3", floor=2)
    assert vector_of(a3.vector) == {OW: 2, A: 3}
    return vs, binding, [g, a1, o2, a3]


def test_a_revoked_writer_cannot_sign_at_old_counters() -> None:
    vs, binding, (g, a1, o2, a3) = history()
    before = vs.copy()                 # a replica the revocation has not reached yet
    revocation = sign_revocation(OWNER, vs, ALICE.public_key, 2)
    assert list(revocation.kept) == sorted([record_id(a1), record_id(a3)])
    assert revocation.HasField("kept_floor") and revocation.kept_floor == 0
    heads = [h.id for h in vs.heads()]
    # re-signed at counters she used, and at the counter she skipped on an old base: all ≤ the
    # revocation's vector {owner: 2, alice: 3}, which is all the old rule asked
    skipped = sign_version(ALICE, binding, cid_for(b"skipped"), {OW: 2, A: 2}, [record_id(o2)])
    late = [twin(a1, b"late a1"), twin(a3, b"late a3"), skipped]
    vs.add_grant(revocation)
    for rec in late:
        with pytest.raises(RevokedWriterError, match="keeps"):
            vs.add(rec)
        assert before.add(rec)         # accepted while Alice was still granted there...
    assert len(before.heads()) > 1
    before.add_grant(revocation)       # ...and invalid there as soon as the revocation arrives
    assert before.fingerprint() == vs.fingerprint()
    assert [h.id for h in before.heads()] == heads == [record_id(a3)]
    assert {record_id(r) for r in (g, a1, o2, a3)} == vs.valid_ids()
    # the old rule (a revocation without a list, as signed before it) admitted all three
    legacy = VersionSet(binding.file_id)
    legacy.add_many([sign_grant(OWNER, binding, ALICE.public_key, revoke=True, seq=2,
                                vector=vs.vector())], [g, a1, o2, a3, *late])
    assert all(record_id(r) in legacy.valid_ids() for r in late)


def test_every_arrival_order_converges() -> None:
    """Validity is a function of the union: kept records arriving after the revocation are
    valid, re-signed ones are not, whether they came before or after it."""
    vs, binding, (g, a1, o2, a3) = history()
    revocation = sign_revocation(OWNER, vs, ALICE.public_key, 2)
    late = twin(a1, b"late")
    grant = vs.grants()[0]
    want = frozenset(record_id(r) for r in (g, a1, o2, a3))
    seen = set()
    for order in itertools.permutations([a1, o2, a3, late, revocation]):
        if order.index(a1) > order.index(o2) or order.index(o2) > order.index(a3):
            continue                   # a record after its parents, as replicas send them
        other = VersionSet(binding.file_id)
        other.add_grant(grant)
        other.add(g)
        for item in order:
            try:
                if isinstance(item, versions_pb2.GrantRecord):
                    other.add_grant(item)
                else:
                    other.add(item)
            except RevokedWriterError:
                assert item is late
        assert other.fingerprint() == (want, frozenset({grant_id(grant),
                                                        grant_id(revocation)}))
        assert [h.id for h in other.heads()] == [record_id(a3)]
        seen.add(record_id(late) in other)      # stored if it came first, refused if after
    assert seen == {True, False}


def test_a_regrant_restores_and_a_new_revocation_lists_anew(tmp_path: Path) -> None:
    vs, binding, (g, a1, o2, a3) = history()
    store = VersionStore(tmp_path, durable=False)
    store.ingest(binding.file_id, vs.grants(), [g, a1, o2, a3])
    store.add_grant(sign_revocation(OWNER, store.get(binding.file_id), ALICE.public_key, 2))
    late = twin(a3, b"late")
    store.close()
    store = VersionStore(tmp_path, durable=False)      # the list survives a restart
    with pytest.raises(RevokedWriterError):
        store.add(late)
    store.add_grant(sign_grant(OWNER, binding, ALICE.public_key, seq=3))
    assert store.add(late)                              # granted again: as today
    a4 = store.revise(ALICE, binding, cid_for(b"a4"), [record_id(a3)])
    again = sign_revocation(OWNER, store.get(binding.file_id), ALICE.public_key, 4)
    assert set(again.kept) == {record_id(r) for r in (a1, a3, late, a4)}
    store.add_grant(again)
    assert {record_id(late), record_id(a4)} <= store.get(binding.file_id).valid_ids()
    store.close()


def test_past_max_kept_the_oldest_keep_the_vector_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """A revocation lists at most MAX_KEPT ids (4096, a 152 KiB grant); a writer with more
    records keeps the older ones through kept_floor: nothing is lost, and the old hole stays
    open only at those older counters."""
    monkeypatch.setattr(grants, "MAX_KEPT", 2)
    vs, binding, (g, a1, o2, a3) = history()
    a4 = revise(vs, ALICE, binding, b"a4")
    a5 = revise(vs, ALICE, binding, b"a5")
    revocation = sign_revocation(OWNER, vs, ALICE.public_key, 2)
    assert list(revocation.kept) == sorted([record_id(a4), record_id(a5)])
    assert revocation.kept_floor == 3
    valid = vs.valid_ids()
    vs.add_grant(revocation)
    assert vs.valid_ids() == valid                    # a1, a3 by the floor, a4, a5 listed
    with pytest.raises(RevokedWriterError, match="keeps"):
        vs.add(twin(a4, b"late a4"))
    assert vs.add(twin(a3, b"late a3"))               # at or below the floor: the old rule


def _signed(grant: versions_pb2.GrantRecord) -> versions_pb2.GrantRecord:
    grant.signature = b""
    grant.signature = OWNER.sign(GRANT_DOMAIN + grant.SerializeToString(deterministic=True))
    return grant


def test_malformed_lists_refused() -> None:
    vs, binding, _ = history()
    good = sign_revocation(OWNER, vs, ALICE.public_key, 2)
    verify_grant(good)
    ids = list(good.kept)
    cases = {
        "unsorted": ids[::-1],
        "duplicate": [ids[0], ids[0]],
        "short id": [ids[0][:16]],
        "too many": [i.to_bytes(32, "big") for i in range(MAX_KEPT + 1)],
    }
    for name, kept in cases.items():
        bad = versions_pb2.GrantRecord()
        bad.CopyFrom(good)
        del bad.kept[:]
        bad.kept.extend(kept)
        with pytest.raises(MalformedRecordError):
            verify_grant(_signed(bad))
            pytest.fail(name)
    not_revoke = versions_pb2.GrantRecord()
    not_revoke.CopyFrom(good)
    not_revoke.revoke = False
    with pytest.raises(MalformedRecordError, match="only a revocation"):
        verify_grant(_signed(not_revoke))
    # a full list fits the grant size limit
    full = sign_grant(OWNER, binding, ALICE.public_key, revoke=True, seq=3, vector=vs.vector(),
                      kept=[i.to_bytes(32, "big") for i in range(MAX_KEPT)])
    verify_grant(decode_grant(encode(full)))

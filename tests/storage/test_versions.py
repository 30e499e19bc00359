"""Version records and sets: every rule refused with its own error, heads, conflicts, store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mesh.identity import Identity
from proto import versions_pb2
from storage.cid import cid_for
from storage.versions.errors import (
    ClaimedCounterError,
    ForgedSignatureError,
    FutureRecordError,
    MalformedRecordError,
    MissingParentError,
    NotNewerError,
    RevokedWriterError,
    UnauthorizedWriterError,
)
from storage.versions.records import (
    GRANT_DOMAIN,
    VERSION_DOMAIN,
    decode_version,
    dominates,
    encode,
    file_id_for,
    new_binding,
    now_ms,
    record_id,
    sign_grant,
    sign_version,
    vector_entries,
    writer_id,
)
from storage.versions.store import VersionStore
from storage.versions.vset import VersionSet

OWNER = Identity.from_seed(b"owner")
ALICE = Identity.from_seed(b"alice")
MALLORY = Identity.from_seed(b"mallory")
OW, A, M = (writer_id(i.public_key) for i in (OWNER, ALICE, MALLORY))


def fresh() -> tuple[VersionSet, versions_pb2.FileBinding]:
    binding = new_binding(OWNER.public_key)
    return VersionSet(binding.file_id), binding


def revise(vs: VersionSet, who: Identity, binding: versions_pb2.FileBinding, data: bytes,
           parents: list[bytes] | None = None) -> versions_pb2.VersionRecord:
    parents = [h.id for h in vs.heads()] if parents is None else parents
    vector = vs.next_vector(who.public_key, parents)
    record = sign_version(who, binding, cid_for(data), vector, parents, size=len(data))
    assert vs.add(record)
    return record


def test_genesis_revise_heads_and_history() -> None:
    vs, b = fresh()
    g = revise(vs, OWNER, b, b"v1")
    assert [h.id for h in vs.heads()] == [record_id(g)]
    r2 = revise(vs, OWNER, b, b"v2")
    assert [h.cid for h in vs.heads()] == [cid_for(b"v2")]
    assert len(vs.valid()) == 2 and not vs.conflict
    assert dominates(vs.get(record_id(r2)).vector, vs.get(record_id(g)).vector)  # type: ignore[union-attr]


def test_file_id_is_bound_to_owner() -> None:
    b = new_binding(OWNER.public_key)
    assert b.file_id == file_id_for(OWNER.public_key, b.nonce)
    # Mallory claims Owner's file_id with her own key: the binding does not hold.
    stolen = versions_pb2.FileBinding(file_id=b.file_id, owner_key=MALLORY.public_key,
                                      nonce=b.nonce)
    vs = VersionSet(b.file_id)
    rec = sign_version(MALLORY, stolen, cid_for(b"x"), {M: 1}, [])
    with pytest.raises(MalformedRecordError, match="not bound"):
        vs.add(rec)


def test_forged_signature_refused() -> None:
    vs, b = fresh()
    rec = sign_version(OWNER, b, cid_for(b"v1"), {OW: 1}, [])
    rec.cid = cid_for(b"evil")                      # tampered after signing
    with pytest.raises(ForgedSignatureError):
        vs.add(rec)
    # signed by Mallory but naming Owner's key
    rec2 = sign_version(MALLORY, b, cid_for(b"v1"), {OW: 1}, [])
    rec2.writer_key = OWNER.public_key
    with pytest.raises(ForgedSignatureError):
        vs.add(rec2)
    assert len(vs) == 0


def test_domain_separation() -> None:
    """A grant signature can never pass as a version signature (different domain tags)."""
    assert VERSION_DOMAIN != GRANT_DOMAIN
    vs, b = fresh()
    g = sign_grant(OWNER, b, ALICE.public_key)
    rec = versions_pb2.VersionRecord(writer_key=OWNER.public_key, cid=cid_for(b"x"),
                                     vector=vector_entries({OW: 1}), signature=g.signature)
    rec.file.CopyFrom(b)
    with pytest.raises(ForgedSignatureError):
        vs.add(rec)


def test_unauthorized_writer_refused_then_granted() -> None:
    vs, b = fresh()
    g = revise(vs, OWNER, b, b"v1")
    rec = sign_version(MALLORY, b, cid_for(b"m"), {OW: 1, M: 1}, [record_id(g)])
    with pytest.raises(UnauthorizedWriterError):
        vs.add(rec)
    with pytest.raises(UnauthorizedWriterError):  # only the owner starts a file
        vs.add(sign_version(MALLORY, b, cid_for(b"m"), {M: 1}, []))
    # a grant signed by anyone but the owner is refused
    with pytest.raises(ForgedSignatureError):
        fake = sign_grant(MALLORY, b, MALLORY.public_key)
        vs.add_grant(fake)
    assert vs.add_grant(sign_grant(OWNER, b, ALICE.public_key))
    revise(vs, ALICE, b, b"alice")
    assert vs.heads()[0].writer == A


def test_claimed_counter_refused() -> None:
    vs, b = fresh()
    vs.add_grant(sign_grant(OWNER, b, ALICE.public_key))
    g = revise(vs, OWNER, b, b"v1")
    # Alice raises the owner's entry as well as hers
    rec = sign_version(ALICE, b, cid_for(b"a"), {OW: 2, A: 1}, [record_id(g)])
    with pytest.raises(ClaimedCounterError):
        vs.add(rec)
    # Alice invents an entry for Mallory
    rec = sign_version(ALICE, b, cid_for(b"a"), {OW: 1, A: 1, M: 5}, [record_id(g)])
    with pytest.raises(ClaimedCounterError):
        vs.add(rec)
    # a genesis carrying someone else's entry
    vs2, b2 = fresh()
    with pytest.raises(ClaimedCounterError):
        vs2.add(sign_version(OWNER, b2, cid_for(b"x"), {OW: 1, A: 3}, []))


def test_not_newer_and_replay() -> None:
    vs, b = fresh()
    g = revise(vs, OWNER, b, b"v1")
    r2 = revise(vs, OWNER, b, b"v2")
    # exact replay of an old record: same id, a duplicate, heads unchanged
    assert not vs.add(decode_version(encode(g)))
    assert [h.id for h in vs.heads()] == [record_id(r2)]
    # the old content re-signed with an old vector on top of v2: does not dominate its parent
    with pytest.raises(NotNewerError):
        vs.add(sign_version(OWNER, b, cid_for(b"v1"), {OW: 2}, [record_id(r2)]))
    with pytest.raises(NotNewerError):
        vs.add(sign_version(OWNER, b, cid_for(b"v1"), {OW: 1}, [record_id(r2)]))
    # a child that drops an entry its parent had
    vs.add_grant(sign_grant(OWNER, b, ALICE.public_key))
    ra = revise(vs, ALICE, b, b"a")
    with pytest.raises(NotNewerError):
        vs.add(sign_version(OWNER, b, cid_for(b"o"), {OW: 3}, [record_id(ra)]))


def test_missing_parent_and_future() -> None:
    vs, b = fresh()
    with pytest.raises(MissingParentError):
        vs.add(sign_version(OWNER, b, cid_for(b"x"), {OW: 2}, [os.urandom(32)]))
    with pytest.raises(FutureRecordError):
        vs.add(sign_version(OWNER, b, cid_for(b"x"), {OW: 1}, [], time_ms=now_ms() + 10**7))


def test_malformed_refused() -> None:
    vs, b = fresh()
    rec = sign_version(OWNER, b, "not-a-cid", {OW: 1}, [])
    with pytest.raises(MalformedRecordError):
        vs.add(rec)
    with pytest.raises(MalformedRecordError):
        decode_version(b"\xff" * 10)
    other = new_binding(OWNER.public_key)
    with pytest.raises(MalformedRecordError, match="another file"):
        vs.add(sign_version(OWNER, other, cid_for(b"x"), {OW: 1}, []))


def test_revoked_writer() -> None:
    vs, b = fresh()
    vs.add_grant(sign_grant(OWNER, b, ALICE.public_key, seq=1))
    revise(vs, OWNER, b, b"v1")
    before = revise(vs, ALICE, b, b"a1")                       # seen by the owner
    view = vs.vector()
    revoke = sign_grant(OWNER, b, ALICE.public_key, revoke=True, seq=2, vector=view)
    # a replica that does not have the revocation yet accepts a later Alice record
    other = vs.copy()
    late = revise(other, ALICE, b, b"a2")
    assert vs.add_grant(revoke)
    with pytest.raises(RevokedWriterError):
        vs.add(late)
    assert record_id(before) in vs.valid_ids()                 # what the owner saw stays
    # when the revocation reaches the other replica, the late record stops counting there too
    other.add_grant(revoke)
    assert record_id(late) not in other.valid_ids()
    assert other.fingerprint() == vs.fingerprint()
    # a new grant (higher seq) restores Alice
    vs.add_grant(sign_grant(OWNER, b, ALICE.public_key, seq=3))
    assert vs.add(late)
    assert vs.heads()[0].id == record_id(late)


def test_conflict_and_merge_resolves() -> None:
    vs, b = fresh()
    vs.add_grant(sign_grant(OWNER, b, ALICE.public_key))
    g = revise(vs, OWNER, b, b"v1")
    left, right = vs.copy(), vs.copy()
    revise(left, OWNER, b, b"owner edit")
    revise(right, ALICE, b, b"alice edit")
    merged = left.copy()
    merged.merge(right)
    assert merged.conflict
    assert {h.cid for h in merged.heads()} == {cid_for(b"owner edit"), cid_for(b"alice edit")}
    assert record_id(g) in merged.valid_ids() and len(merged.valid()) == 3
    m = revise(merged, ALICE, b, b"merged")
    assert len(m.parents) == 2 and not merged.conflict
    assert merged.heads()[0].vector == {OW: 2, A: 2}


def test_equivocation_kept_and_flagged() -> None:
    vs, b = fresh()
    g = revise(vs, OWNER, b, b"v1")
    x = sign_version(OWNER, b, cid_for(b"x"), {OW: 2}, [record_id(g)])
    y = sign_version(OWNER, b, cid_for(b"y"), {OW: 2}, [record_id(g)])
    assert vs.add(x) and vs.add(y)
    assert vs.conflict and len(vs.heads()) == 2
    ((w, c, ids),) = vs.equivocations()
    assert w == OW and c == 2 and set(ids) == {record_id(x), record_id(y)}
    # next_vector never reuses a counter
    assert vs.next_vector(OWNER.public_key, [record_id(g)])[OW] == 3


def test_store_survives_restart(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    b = new_binding(OWNER.public_key)
    vs = store.get(b.file_id)
    store.add_grant(sign_grant(OWNER, b, ALICE.public_key))
    g = sign_version(OWNER, b, cid_for(b"1"), vs.next_vector(OWNER.public_key, []), [])
    store.add(g)
    store.reserve_counter(b.file_id, OW, 7)
    a = sign_version(ALICE, b, cid_for(b"2"), vs.next_vector(ALICE.public_key, [record_id(g)]),
                     [record_id(g)])
    result = store.ingest(b.file_id, [], [a])
    assert result.accepted == 1
    store.note_seen(b.file_id, {OW: 1, A: 1})
    store.close()
    again = VersionStore(tmp_path)
    vs2 = again.get(b.file_id)
    assert vs2.fingerprint() == vs.fingerprint()
    assert [h.id for h in vs2.heads()] == [record_id(a)]
    assert again.counter(b.file_id, OW) == 7 and again.seen(b.file_id) == {OW: 1, A: 1}
    assert again.files() == [b.file_id]
    again.close()


def test_revoked_record_survives_restart_and_regrant(tmp_path: Path) -> None:
    """Found by the property test: a record a revocation made invalid stays stored across a
    restart, so a later re-grant makes it valid again (it must not be dropped on load)."""
    store = VersionStore(tmp_path, durable=False)
    b = new_binding(OWNER.public_key)
    store.revise(OWNER, b, cid_for(b"1"))
    store.add_grant(sign_grant(OWNER, b, ALICE.public_key, seq=1))
    late = store.revise(ALICE, b, cid_for(b"a"))
    store.add_grant(sign_grant(OWNER, b, ALICE.public_key, revoke=True, seq=2, vector={OW: 1}))
    assert record_id(late) not in store.get(b.file_id).valid_ids()
    store.close()
    store = VersionStore(tmp_path, durable=False)
    vs = store.get(b.file_id)
    assert record_id(late) in vs and record_id(late) not in vs.valid_ids()
    store.add_grant(sign_grant(OWNER, b, ALICE.public_key, seq=3))
    assert [h.id for h in store.get(b.file_id).heads()] == [record_id(late)]
    assert record_id(late) in vs.copy().valid_ids()
    store.close()


def test_reserved_counter_is_never_reused(tmp_path: Path) -> None:
    """The node's Revise reserves the counter (on disk) before the content is stored, signs once
    it is, and commits the record while replicating it: a crash anywhere in between never makes
    the writer sign another record with the same counter."""
    store = VersionStore(tmp_path)
    b = new_binding(OWNER.public_key)
    g = store.revise(OWNER, b, cid_for(b"1"))
    vector = store.reserve(OWNER, b, [record_id(g)])
    assert vector == {OW: 2} and store.counter(b.file_id, OW) == 2
    with pytest.raises(ValueError, match="reserve"):          # a vector nobody reserved
        store.sign(OWNER, b, cid_for(b"x"), [record_id(g)], {OW: 3})
    store.close()
    # crash after the reservation, before the content was stored: the counter stays burnt
    store = VersionStore(tmp_path)
    again = store.reserve(OWNER, b, [record_id(g)])
    assert again == {OW: 3}
    rec = store.sign(OWNER, b, cid_for(b"2"), [record_id(g)], again)
    assert [h.id for h in store.get(b.file_id).heads()] == [record_id(rec)]
    store.commit(rec)
    store.close()
    store = VersionStore(tmp_path)
    vs = store.get(b.file_id)
    assert [h.id for h in vs.heads()] == [record_id(rec)] and not vs.equivocations()
    # an unauthorized writer cannot even reserve
    with pytest.raises(UnauthorizedWriterError):
        store.reserve(ALICE, b, [record_id(rec)])
    store.close()

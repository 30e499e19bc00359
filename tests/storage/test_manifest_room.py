"""A full CID budget makes room for an owner-proven manifest (storage/record_handlers.py):
which kept manifests go, which stay, and how many owner lookups that costs. The document
records are a stand-in mapping here (pure logic); tests/system/test_manifest_budget.py runs it
on real nodes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from mesh.errors import NotFoundError, ResourceExhaustedError
from proto import storage_pb2
from storage import manifest_signed, manifest_store
from storage import record_handlers as handlers_mod
from storage.documents import DocumentStore, new_file_id, sign_document
from storage.manifest import ManifestStore, sign_manifest, verify_answer, verify_manifest
from storage.record_handlers import RecordHandlers
from tests.storage.test_manifest import _body

Key = nacl.signing.SigningKey


class Owners:
    """file_id -> owner key, as the document records would answer; counts the lookups."""

    def __init__(self) -> None:
        self.known: dict[str, bytes] = {}
        self.asked: list[str] = []

    async def __call__(self, file_id: str) -> bytes:
        self.asked.append(file_id)
        if file_id not in self.known:
            raise NotFoundError("no document record")
        return self.known[file_id]


def _signed(key: Key, size: int, owners: Owners | None = None) -> storage_pb2.SignedManifest:
    body = _body(key)
    body.filename_sealed = bytes(size)
    if owners is not None:
        owners.known[body.file_id] = bytes(key.verify_key)
    return sign_manifest(body, key)


async def _store(h: RecordHandlers, signed: storage_pb2.SignedManifest) -> bytes:
    return await h.store_manifest(storage_pb2.StoreManifestRequest(manifest=signed).SerializeToString())


def _kept(h: RecordHandlers) -> set[str]:
    return {verify_manifest(s).file_id for s in h.manifests.get(_body(Key.generate()).cid)}


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[RecordHandlers, Owners]:
    monkeypatch.setattr(manifest_store, "CID_BUDGET", 10_000)
    owners = Owners()
    return RecordHandlers(ManifestStore(tmp_path), DocumentStore(tmp_path), None,
                          owner_of=owners), owners


async def test_an_owner_proven_manifest_drops_only_unproven_ones(
        handlers: tuple[RecordHandlers, Owners]) -> None:
    h, owners = handlers
    member, honest, owner = Key.generate(), Key.generate(), Key.generate()
    small_junk, big_junk = _signed(member, 1000), _signed(member, 4000)
    kept_other = _signed(honest, 3000, owners)      # another owner's proven upload: stays
    for s in (small_junk, big_junk, kept_other):
        await _store(h, s)
    with pytest.raises(ResourceExhaustedError):       # a member's own cannot make room
        await _store(h, _signed(member, 2500))
    mine = _signed(owner, 2500, owners)
    await _store(h, mine)
    assert _kept(h) == {verify_manifest(s).file_id for s in (small_junk, kept_other, mine)}
    # the answers are cached: storing again asks nobody
    asked = len(owners.asked)
    await _store(h, mine)
    assert len(owners.asked) == asked


async def test_proven_manifests_are_never_dropped(handlers: tuple[RecordHandlers, Owners]
                                                  ) -> None:
    h, owners = handlers
    a, b, owner = Key.generate(), Key.generate(), Key.generate()
    await _store(h, _signed(a, 5000, owners))
    await _store(h, _signed(b, 4000, owners))
    before = _kept(h)
    with pytest.raises(ResourceExhaustedError, match="no room"):
        await _store(h, _signed(owner, 2000, owners))
    assert _kept(h) == before


async def test_owner_lookups_per_store_are_capped(handlers: tuple[RecordHandlers, Owners],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    h, owners = handlers
    monkeypatch.setattr(handlers_mod, "MAX_LOOKUPS", 3)
    for _ in range(10):                               # proven small ones fill the budget
        await _store(h, _signed(Key.generate(), 700, owners))
    owner = Key.generate()
    mine = _signed(owner, 3000, owners)
    owners.asked.clear()
    with pytest.raises(ResourceExhaustedError):
        await _store(h, mine)
    assert len(owners.asked) == 1 + 3                 # its own owner, then at most 3 others


async def test_many_manifests_are_verified_off_the_event_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CID's budget holds thousands of small manifests (~70 µs of Ed25519 each): the
    replica's FetchManifests and the reader's check of the answer verify them on worker
    threads (counted by thread), a CID's usual one or two on the loop."""
    loop_thread = threading.get_ident()
    on_loop, off_loop = [0], [0]
    real = manifest_signed.verify_signature

    def counted(*args: Any) -> bool:
        (on_loop if threading.get_ident() == loop_thread else off_loop)[0] += 1
        return bool(real(*args))

    store = ManifestStore(tmp_path)
    h = RecordHandlers(store, DocumentStore(tmp_path), None)
    key = Key.generate()
    for _ in range(200):
        store.put(_signed(key, 10))
    monkeypatch.setattr(manifest_signed, "verify_signature", counted)
    cid = _body(key).cid
    answer = storage_pb2.FetchManifestsReply.FromString(await h.fetch_manifests(
        storage_pb2.FetchManifestsRequest(cid=cid).SerializeToString())).manifests
    assert len(answer) == 200 and (on_loop[0], off_loop[0]) == (0, 200)
    assert all(m is not None for m in await verify_answer(list(answer), cid))
    assert (on_loop[0], off_loop[0]) == (0, 400)
    assert len(await verify_answer(list(answer[:2]), cid)) == 2       # small: inline
    assert (on_loop[0], off_loop[0]) == (2, 400)


async def test_a_new_upload_s_document_record_proves_its_owner(
        handlers: tuple[RecordHandlers, Owners]) -> None:
    """A Push stores the manifest with its document record in one call, before the document
    replicas may have it: the record sent along (owner-signed, binding the file_id) proves
    the owner without a lookup."""
    h, owners = handlers
    junk = _signed(Key.generate(), 9000)                       # a member's junk fills it
    await _store(h, junk)
    owner = Key.generate()
    body = _body(owner)
    body.filename_sealed = bytes(2000)
    file_id, nonce = new_file_id(bytes(owner.verify_key))
    body.file_id = file_id
    req = storage_pb2.StoreManifestRequest(
        manifest=sign_manifest(body, owner),
        document=sign_document(file_id, nonce, body.cid, owner))
    owners.asked.clear()
    reply = storage_pb2.StoreManifestReply.FromString(
        await h.store_manifest(req.SerializeToString()))
    assert reply.stored and reply.document_stored
    assert _kept(h) == {file_id}
    assert owners.asked == [verify_manifest(junk).file_id]    # only the junk's owner

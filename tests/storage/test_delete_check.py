"""storage/delete_check.py: a DeleteFragment sent with an older manifest of the file cannot
drop the copy the newest manifest records at the holder.

The rules run on hand-made manifests (``check_newest``, ``DeleteGuard`` with a fake replica
source); the attack runs on in-process nodes with real stores and real signed manifests: a
one-stripe Push around a frozen holder signs an early manifest and a corrected one naming the
spare, and the early one is sent to the spare (tests/system/test_delete_newest.py does the
same on real node processes).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import nacl.signing
import pytest

from mesh.errors import (
    FailedPreconditionError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from proto import storage_pb2
from storage import push as push_mod
from storage.cid import cid_for
from storage.delete_check import DeleteGuard, check_newest
from storage.documents import DocumentStore, new_file_id, sign_document
from storage.files import FileStore, PushOptions
from storage.manifest import Manifest, ManifestStore, sign_manifest, verify_manifest
from storage.placement import placement_key
from tests.storage.test_late_copies import FrozenNetwork
from tests.storage.test_store_batch import _remote

HERE, ELSEWHERE, SPARE = (bytes([i]) * 20 for i in range(1, 4))
H = bytes([7]) * 32
OWNER = nacl.signing.SigningKey.generate()


def _m(created: int, holder: bytes, file_id: str = "f" + "0" * 32,
       owner: nacl.signing.SigningKey = OWNER) -> Manifest:
    """A manifest recording fragment H (alone in its stripe) at ``holder``."""
    body = storage_pb2.ManifestBody(file_id=file_id, owner_key=bytes(owner.verify_key),
                                    created_ms=created, holders=[holder], stripes=[
        storage_pb2.Stripe(fragments=[storage_pb2.Fragment(hash=H, holder=0)])])
    return Manifest(body, sign_manifest(body, owner))


def test_an_older_manifest_cannot_drop_the_copy_a_newer_one_records_here() -> None:
    early, corrected = _m(100, ELSEWHERE), _m(101, HERE)
    with pytest.raises(PermissionDeniedError, match="stays"):
        check_newest(early, H, HERE, [], [early, corrected])
    with pytest.raises(PermissionDeniedError):         # known here only: still certain
        check_newest(early, H, HERE, [corrected], [])
    with pytest.raises(PermissionDeniedError):         # as new, signed apart: not enough
        check_newest(early, H, HERE, [], [early, _m(100, HERE)])


def test_the_newest_manifest_drops_a_copy_an_older_one_recorded_here() -> None:
    """The late-copies case: the holder kept the early manifest (it stored it late), which
    records the fragment here; the newest, sent, does not."""
    early, corrected = _m(100, HERE), _m(101, ELSEWHERE)
    check_newest(corrected, H, HERE, [early], [corrected])


def test_a_superseded_manifest_is_refused_even_if_the_newest_agrees() -> None:
    with pytest.raises(FailedPreconditionError, match="superseded"):
        check_newest(_m(100, ELSEWHERE), H, HERE, [], [_m(101, SPARE)])


def test_nothing_confirmed_by_a_replica_keeps_the_copy() -> None:
    sent = _m(100, ELSEWHERE)
    with pytest.raises(UnavailableError, match="try later"):
        check_newest(sent, H, HERE, [sent], [])          # this node's own copy is not enough
    stranger = nacl.signing.SigningKey.generate()
    other = [_m(200, ELSEWHERE, owner=stranger), _m(200, ELSEWHERE, file_id="f" + "1" * 32)]
    with pytest.raises(UnavailableError):                 # other owners' and files' ignored
        check_newest(sent, H, HERE, [], other)
    check_newest(sent, H, HERE, [], [sent, _m(300, HERE, owner=stranger)])


async def test_the_guard_refuses_without_replicas_or_when_asking_them_fails(
        tmp_path: Path) -> None:
    guard = DeleteGuard(ManifestStore(tmp_path), HERE)
    sent = _m(100, ELSEWHERE)
    body = sent.body
    body.cid = cid_for(b"x")           # the guard reads this node's store by CID
    sent = Manifest(body, sign_manifest(body, OWNER))
    with pytest.raises(UnavailableError):
        await guard.confirm(sent, H)              # no source wired: never delete unsure
    guard.records = _owned_by(OWNER)

    async def down(cid: str) -> list[Manifest]:
        raise UnavailableError("no live storage peer")

    guard.replicas = down
    with pytest.raises(UnavailableError):
        await guard.confirm(sent, H)
    asked: list[str] = []

    async def replicas(cid: str) -> list[Manifest]:
        asked.append(cid)
        return [sent]

    guard.replicas = replicas
    await guard.confirm(sent, H)
    assert asked == [sent.cid]


def _owned_by(owner: nacl.signing.SigningKey
              ) -> Callable[[str], Awaitable[storage_pb2.DocumentBody]]:
    """A document-record source naming ``owner`` for any file_id."""
    async def record(file_id: str) -> storage_pb2.DocumentBody:
        return storage_pb2.DocumentBody(file_id=file_id, owner_key=bytes(owner.verify_key))
    return record


async def test_only_a_manifest_the_file_s_owner_signed_drops_a_copy(tmp_path: Path) -> None:
    """A manifest names its file_id freely: one signed by another key, naming the owner's
    file_id, fragment and a CID whose replicas hold only it, drops nothing; the owner's key
    comes from the file's document record, this node's own first, else the replicas'."""
    stranger = nacl.signing.SigningKey.generate()
    owner_pub = bytes(OWNER.verify_key)
    file_id, nonce = new_file_id(owner_pub)
    body = _m(100, ELSEWHERE, file_id=file_id, owner=stranger).body
    body.cid = cid_for(b"the stranger's")
    forged = Manifest(body, sign_manifest(body, stranger))

    async def replicas(cid: str) -> list[Manifest]:
        return [forged]

    docs = DocumentStore(tmp_path)
    guard = DeleteGuard(ManifestStore(tmp_path), HERE, docs)
    guard.replicas = replicas
    with pytest.raises(UnavailableError, match="who owns"):     # no record anywhere: it stays
        await guard.confirm(forged, H)

    async def nowhere(fid: str) -> storage_pb2.DocumentBody:
        raise NotFoundError(f"no document {fid}")

    guard.records = nowhere
    with pytest.raises(UnavailableError, match="who owns"):
        await guard.confirm(forged, H)
    guard.records = _owned_by(OWNER)                            # the replicas' record
    with pytest.raises(PermissionDeniedError, match="not signed by the file's owner"):
        await guard.confirm(forged, H)
    guard.records = nowhere
    docs.put(sign_document(file_id, nonce, cid_for(b"v1"), OWNER))   # this node's record
    with pytest.raises(PermissionDeniedError, match="not signed by the file's owner"):
        await guard.confirm(forged, H)
    body = _m(100, ELSEWHERE, file_id=file_id).body              # the owner's: allowed
    body.cid = cid_for(b"the owner's")
    mine = Manifest(body, sign_manifest(body, OWNER))

    async def mine_replicas(cid: str) -> list[Manifest]:
        return [mine]

    guard.replicas = mine_replicas
    await guard.confirm(mine, H)


async def test_an_early_push_manifest_cannot_drop_the_spare_s_fragment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """7 in-process nodes, (4,2), one frozen holder: the one-stripe Push signs an early
    manifest naming it and a corrected one naming the spare. Sent with the early one (which
    the pusher, a replica or the late-storing holder keeps), DeleteFragment at the spare is
    refused and the file stays whole; the late copy on the thawed holder goes with the
    corrected one (the late-copies collector's delete)."""
    signed: list[storage_pb2.SignedManifest] = []

    def sign(body: storage_pb2.ManifestBody,
             owner: nacl.signing.SigningKey) -> storage_pb2.SignedManifest:
        signed.append(sign_manifest(body, owner))
        return signed[-1]

    monkeypatch.setattr(push_mod, "sign_manifest", sign)
    net = FrozenNetwork(tmp_path, 7)
    files = FileStore(net)
    alice = nacl.signing.SigningKey.generate()
    data = os.urandom(180_000)
    net.freeze((await net.closest(placement_key("cid", cid_for(data)), 6))[1], monkeypatch)
    try:
        r = await files.push_bytes(data, alice, PushOptions())
    finally:
        net.thawed.set()
        await asyncio.gather(*net.served, return_exceptions=True)   # the late stores land
    assert r.manifest is not None and len(signed) == 2
    assert files.counters["store_spares"] == 1 and net.suspected == [net.frozen]
    early, corrected = (verify_manifest(s) for s in signed)
    assert corrected.body.created_ms > early.body.created_ms
    i = next(i for i in range(6) if early.holder_of(0, i) == net.frozen)
    spare = corrected.holder_of(0, i)
    assert spare is not None and spare != net.frozen
    digest = bytes(corrected.body.stripes[0].fragments[i].hash)
    at_spare = net.handlers[spare]
    with pytest.raises(PermissionDeniedError, match="at least as new"):
        await _remote(at_spare).delete_fragment(digest, r.file_id, early.signed)
    assert at_spare.fragments.get(digest.hex()) is not None
    assert await (await files.open(r.file_id, alice)).read_all() == data
    late = _remote(net.handlers[net.frozen])
    assert await late.has_fragments([digest]) == [True]
    assert await late.delete_fragment(digest, r.file_id, corrected.signed)
    assert await late.has_fragments([digest]) == [False]

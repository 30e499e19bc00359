"""Manifests and document records: signatures, CID binding, on-disk stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import nacl.signing
import pytest

from mesh.errors import InvalidArgumentError, PermissionDeniedError, ResourceExhaustedError
from proto import storage_pb2
from storage import manifest_store
from storage.cid import cid_for
from storage.documents import DocumentStore, new_file_id, sign_document, verify_document
from storage.keyring import Keyring
from storage.manifest import ManifestStore, sign_manifest, verify_manifest


def _body(owner: nacl.signing.SigningKey, data: bytes = b"") -> storage_pb2.ManifestBody:
    return storage_pb2.ManifestBody(format=1, cid=cid_for(data), file_id=new_file_id(
        bytes(owner.verify_key))[0], size=len(data), k=4, m=2, stripe_size=4096, codec_format=1,
        packet_size=32768, matrix="reedsolo", owner_key=bytes(owner.verify_key))


def test_manifest_signature_and_cid_binding(tmp_path: Path) -> None:
    owner = nacl.signing.SigningKey.generate()
    signed = sign_manifest(_body(owner), owner)
    m = verify_manifest(signed, cid_for(b""))
    assert m.cid == cid_for(b"")
    with pytest.raises(InvalidArgumentError):
        verify_manifest(signed, cid_for(b"other"))
    tampered = storage_pb2.SignedManifest(body=signed.body[:-1] + b"\x01",
                                          signature=signed.signature)
    with pytest.raises(InvalidArgumentError):
        verify_manifest(tampered)
    other = nacl.signing.SigningKey.generate()
    with pytest.raises(ValueError):
        sign_manifest(_body(owner), other)
    # a stripe count that does not fit the size is refused
    bad = _body(owner, b"abc")
    with pytest.raises(InvalidArgumentError):
        verify_manifest(sign_manifest(bad, owner))


def test_manifest_store_on_disk_drops_rot(tmp_path: Path) -> None:
    owner = nacl.signing.SigningKey.generate()
    store = ManifestStore(tmp_path)
    signed = sign_manifest(_body(owner), owner)
    store.put(signed)
    store.put(signed)
    assert ManifestStore(tmp_path).get(cid_for(b"")) == [signed]
    with sqlite3.connect(tmp_path / "storage" / "manifests.sqlite3") as db:   # rot one row
        assert db.execute("UPDATE manifests SET signed = substr(signed, 1, length(signed) - 3)"
                          ).rowcount == 1
    assert store.get(cid_for(b"")) == []
    assert store.cids() == []                     # the rotted row was dropped
    with pytest.raises(InvalidArgumentError):
        store.get("../../etc")
    # newest per (cid, file_id) and owner wins; another owner cannot take the file_id over
    body = _body(owner)
    body.created_ms = 1
    store.put(sign_manifest(body, owner))
    body.created_ms = 5
    newer = sign_manifest(body, owner)
    store.put(newer)
    body.created_ms = 3
    store.put(sign_manifest(body, owner))
    assert newer in store.get(cid_for(b""))
    thief = nacl.signing.SigningKey.generate()
    body.owner_key = bytes(thief.verify_key)
    body.created_ms = 9
    with pytest.raises(PermissionDeniedError):
        store.put(sign_manifest(body, thief))
    # ...unless the caller proved its signer owns the file_id (record_handlers.py): a squatter
    # that came first is replaced, even by an older manifest
    stolen = sign_manifest(body, thief)
    store.put(newer, owner_proven=True)                     # the owner's, over no squatter
    squat = ManifestStore(tmp_path / "squat")
    squat.put(stolen)
    squat.put(newer, owner_proven=True)
    assert squat.get(cid_for(b"")) == [newer]


def test_a_cid_s_manifests_stay_within_the_budget(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Manifests of one CID total at most CID_BUDGET bytes here (they all go back in one
    FetchManifests reply); a newer manifest replacing a kept one counts only once."""
    monkeypatch.setattr(manifest_store, "CID_BUDGET", 10_000)
    store = ManifestStore(tmp_path)
    owner, stranger = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    mine = _body(owner)
    mine.filename_sealed = bytes(4000)
    store.put(sign_manifest(mine, owner))
    junk = _body(stranger)
    junk.filename_sealed = bytes(5000)
    store.put(sign_manifest(junk, stranger))
    more = _body(stranger)
    more.filename_sealed = bytes(2000)
    with pytest.raises(ResourceExhaustedError, match="no room"):
        store.put(sign_manifest(more, stranger))
    other = _body(stranger)
    other.cid = cid_for(b"x")
    other.filename_sealed = bytes(5000)
    store.put(sign_manifest(other, stranger))                   # another CID: its own budget
    mine.created_ms += 1                                         # a grant re-signs: replaces
    store.put(sign_manifest(mine, owner))
    kept = {verify_manifest(s).file_id: s for s in store.get(cid_for(b""))}
    assert set(kept) == {mine.file_id, junk.file_id}
    assert verify_manifest(kept[mine.file_id]).body.created_ms == mine.created_ms


def test_documents_owner_bound(tmp_path: Path) -> None:
    alice, mallory = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    file_id, nonce = new_file_id(bytes(alice.verify_key))
    store = DocumentStore(tmp_path)
    assert store.put(sign_document(file_id, nonce, cid_for(b"1"), alice, 1000))
    assert not store.put(sign_document(file_id, nonce, cid_for(b"0"), alice, 999))
    latest = sign_document(file_id, nonce, cid_for(b"2"), alice, 2000)
    assert store.put(latest)
    assert store.put(latest)               # the same record again (a hedged store): held
    assert not store.put(sign_document(file_id, nonce, cid_for(b"3"), alice, 2000))  # a rival
    forged = sign_document(file_id, nonce, cid_for(b"evil"), mallory, 3000)
    with pytest.raises(InvalidArgumentError):
        verify_document(forged)
    with pytest.raises((InvalidArgumentError, PermissionDeniedError)):
        store.put(forged)
    [rec] = store.get(file_id)
    assert verify_document(rec).cid == cid_for(b"2")
    assert DocumentStore(tmp_path).get(file_id) == [rec]        # durable across a reopen
    with sqlite3.connect(tmp_path / "storage" / "documents.sqlite3") as db:
        db.execute("UPDATE documents SET signed = substr(signed, 1, length(signed) - 3)")
    assert store.get(file_id) == []                               # rot is dropped, not served


def test_old_file_layout_is_imported(tmp_path: Path) -> None:
    owner = nacl.signing.SigningKey.generate()
    body = _body(owner)
    signed = sign_manifest(body, owner)
    folder = tmp_path / "storage" / "manifests" / cid_for(b"")
    folder.mkdir(parents=True)
    (folder / f"{body.file_id}.mf").write_bytes(signed.SerializeToString())
    file_id, nonce = new_file_id(bytes(owner.verify_key))
    doc = sign_document(file_id, nonce, cid_for(b"1"), owner, 1000)
    (tmp_path / "storage" / "documents").mkdir()
    (tmp_path / "storage" / "documents" / f"{file_id}.doc").write_bytes(doc.SerializeToString())
    assert ManifestStore(tmp_path).get(cid_for(b"")) == [signed]
    assert DocumentStore(tmp_path).get(file_id) == [doc]
    assert not (tmp_path / "storage" / "manifests").exists()


def test_keyring(tmp_path: Path) -> None:
    ring = Keyring(tmp_path)
    key = ring.create("alice")
    assert (tmp_path / "users" / "alice.key").stat().st_mode & 0o777 == 0o600
    assert Keyring(tmp_path).get("alice").encode() == key.encode()
    ring.user("")
    assert ring.names() == ["alice", "default"]
    for bad in ("../x", ".hidden", "", "a/b", "x" * 65):
        with pytest.raises(InvalidArgumentError):
            ring.create(bad)
    with pytest.raises(InvalidArgumentError):
        ring.create("alice")


def test_user_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from taskworker.cli import main

    assert main(["user", "create", "alice", "--data-dir", str(tmp_path)]) == 0
    name, pub = capsys.readouterr().out.split()
    assert name == "alice" and len(bytes.fromhex(pub)) == 32
    assert main(["user", "create", "alice", "--data-dir", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["user", "list", "--data-dir", str(tmp_path), "--json"]) == 0
    assert '"alice"' in capsys.readouterr().out


def test_join_flags_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from taskworker.cli import main

    for bad in (["--k", "0"], ["--k", "200", "--m", "100"], ["--stripe-mib", "100"],
                ["--late-copy-delay", "0"]):
        assert main(["join", "--data-dir", str(tmp_path), *bad]) == 1
        assert "tw-mesh: error:" in capsys.readouterr().err

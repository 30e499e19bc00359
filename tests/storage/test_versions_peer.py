"""Version peer handlers (no network): Push verifies, Digest/Pull show only valid records, hooks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mesh.errors import InvalidArgumentError, UnavailableError
from mesh.identity import Identity
from proto import storage_pb2, versions_pb2
from storage.cid import cid_for
from storage.manifest import Manifest
from storage.versions.peer import HOOKS_ENV, HOOKS_FILE, FaultHooks, VersionHandlers
from storage.versions.records import encode, new_binding, record_id, sign_grant
from storage.versions.store import VersionStore

OWNER = Identity.from_seed(b"peer-owner")
ALICE = Identity.from_seed(b"peer-alice")


def manifest(data: bytes) -> bytes:
    """A signed manifest of ``data`` (as a Push would make; no fragments behind it)."""
    from storage.documents import new_file_id
    from storage.manifest import sign_manifest
    body = storage_pb2.ManifestBody(
        format=1, cid=cid_for(data), file_id=new_file_id(OWNER.public_key)[0],
        size=len(data), k=4, m=2, stripe_size=4096, codec_format=1, packet_size=32768,
        matrix="reedsolo", owner_key=OWNER.public_key)
    return sign_manifest(body, OWNER.signing_key).SerializeToString()


def handlers(tmp: Path) -> VersionHandlers:
    return VersionHandlers(VersionStore(tmp, durable=False), FaultHooks(tmp))


async def test_push_digest_pull(tmp_path: Path) -> None:
    src = VersionStore(tmp_path / "src", durable=False)
    b = new_binding(OWNER.public_key)
    g = src.revise(OWNER, b, cid_for(b"1"))
    grant = sign_grant(OWNER, b, ALICE.public_key, seq=1)
    src.add_grant(grant)
    a = src.revise(ALICE, b, cid_for(b"2"))
    forged = versions_pb2.VersionRecord()
    forged.CopyFrom(a)
    forged.cid = cid_for(b"evil")
    h = handlers(tmp_path / "dst")
    # children before parents in the bundle: still accepted (causal order is restored)
    bundle = versions_pb2.Bundle(file_id=b.file_id, grants=[encode(grant)],
                                 records=[encode(a), encode(forged), encode(g), b"\xff\x00"])
    reply = versions_pb2.PushReply.FromString(await h.push(bundle.SerializeToString()))
    assert reply.accepted == 3 and reply.duplicate == 0 and len(reply.refused) == 2
    assert any("ForgedSignature" in r for r in reply.refused)
    digest = versions_pb2.Digest.FromString(await h.digest(
        versions_pb2.DigestRequest(file_id=b.file_id).SerializeToString()))
    assert set(digest.record_ids) == {record_id(g), record_id(a)}
    assert list(digest.heads) == [record_id(a)]
    pulled = versions_pb2.Bundle.FromString(await h.pull(versions_pb2.PullRequest(
        file_id=b.file_id, all=True).SerializeToString()))
    assert len(pulled.records) == 2 and record_id(forged) not in {
        record_id(versions_pb2.VersionRecord.FromString(x)) for x in pulled.records}
    # a revocation the owner signs later hides Alice's unseen record from digests and pulls
    revoke = sign_grant(OWNER, b, ALICE.public_key, revoke=True, seq=2, vector={})
    await h.push(versions_pb2.Bundle(file_id=b.file_id, grants=[encode(revoke)])
                 .SerializeToString())
    digest = versions_pb2.Digest.FromString(await h.digest(
        versions_pb2.DigestRequest(file_id=b.file_id).SerializeToString()))
    assert set(digest.record_ids) == {record_id(g)}
    with pytest.raises(InvalidArgumentError):
        await h.digest(versions_pb2.DigestRequest(file_id=b"short").SerializeToString())


async def test_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = handlers(tmp_path)
    assert not h.hooks.enabled
    (tmp_path / HOOKS_FILE).write_text(json.dumps({"block": ["ab"], "withhold": True}))
    h.check_caller(bytes.fromhex("ab" + "00" * 19))        # inert without the env var
    monkeypatch.setenv(HOOKS_ENV, "1")
    h = handlers(tmp_path)
    with pytest.raises(UnavailableError):
        h.check_caller(bytes.fromhex("ab" + "00" * 19))
    h.check_caller(bytes.fromhex("cd" + "00" * 19))
    b = new_binding(OWNER.public_key)
    h.store.revise(OWNER, b, cid_for(b"1"))
    h.store.revise(OWNER, b, cid_for(b"2"))
    digest = versions_pb2.Digest.FromString(await h.digest(
        versions_pb2.DigestRequest(file_id=b.file_id).SerializeToString()))
    assert len(digest.record_ids) == 1                      # withholds all but the first


async def test_digest_carries_head_records_and_read_ahead_is_bounded(tmp_path: Path) -> None:
    """A Digest shows the heads' records; a Get-latest reads a replica's single head ahead, but
    a lying replica's junk is ignored and no Get starts more than two reads."""

    from storage.versions.reads import ReadAhead

    h = handlers(tmp_path)
    b = new_binding(OWNER.public_key)
    h.store.revise(OWNER, b, cid_for(b"1"))
    v2 = h.store.revise(OWNER, b, cid_for(b"2"))
    d = versions_pb2.Digest.FromString(await h.digest(
        versions_pb2.DigestRequest(file_id=b.file_id).SerializeToString()))
    assert list(d.heads) == [record_id(v2)] and list(d.head_records) == [encode(v2)]

    reads: list[str] = []

    class Reader:
        async def read(self, cid: str, user: Any, writer: bytes = b"") -> tuple[bytes, Any]:
            reads.append(cid)
            return cid.encode(), None

    ahead = ReadAhead(Reader(), OWNER.signing_key)  # type: ignore[arg-type]
    ahead.offer(versions_pb2.Digest(head_records=[b"junk"]))            # undecodable: ignored
    ahead.offer(d)
    ahead.offer(d)                                                       # same head: one read
    ahead.start(b"x" * 32, cid_for(b"guess"))
    ahead.start(b"y" * 32, cid_for(b"third"))                            # over the bound
    task = ahead.take(record_id(v2))
    assert task is not None and (await task)[0] == cid_for(b"2").encode()
    await ahead.close()
    assert reads == [cid_for(b"2"), cid_for(b"guess")] and ahead.dropped == 1
    nobody = ReadAhead(Reader(), None)          # type: ignore[arg-type]
    nobody.offer(d)                             # a reader with no key reads nothing ahead
    assert nobody.tasks == {} and len(reads) == 2


async def test_a_unary_read_refuses_more_than_a_unary_get_before_reading() -> None:
    """Every candidate manifest over the limit is skipped unread; with no other, the read is
    INVALID_ARGUMENT (pointing to GetStream), not a fragment fetch of up to 64 MiB."""
    from types import SimpleNamespace

    from storage.reader import FailedManifests, read_first
    from storage.servicer import UNARY_GET_MAX

    read: list[bool] = []

    class Reader:
        manifest = SimpleNamespace(cid="big", body=SimpleNamespace(size=UNARY_GET_MAX + 1))

        async def read_all(self) -> bytes:
            read.append(True)
            return b""

    readers: list[Any] = [Reader(), Reader()]
    with pytest.raises(InvalidArgumentError, match="GetStream"):
        await read_first(readers, FailedManifests(), UNARY_GET_MAX)
    assert read == []


async def test_pushed_manifests_reach_the_sink_only_when_valid_and_pushed(tmp_path: Path) -> None:
    """A Revise's push carries its content's manifest: a replica keeps it (in memory) only if
    its signature verifies and it is the content of a record of that push it accepted."""

    src = VersionStore(tmp_path / "src", durable=False)
    b = new_binding(OWNER.public_key)
    g = src.revise(OWNER, b, cid_for(b""))
    h = handlers(tmp_path / "dst")
    got: list[Manifest] = []
    h.manifest_sink = got.append
    forged = bytearray(manifest(b""))
    forged[-1] ^= 1                                                    # signature broken
    bundle = versions_pb2.Bundle(file_id=b.file_id, records=[encode(g)], manifests=[
        b"junk", bytes(forged), manifest(b"not a head's content"), manifest(b"")])
    reply = versions_pb2.PushReply.FromString(await h.push(bundle.SerializeToString()))
    assert reply.accepted == 1
    assert [m.cid for m in got] == [cid_for(b"")]
    # a valid manifest is not kept beside a record of other content, nor beside a refused one
    other = src.revise(OWNER, b, cid_for(b"x"))
    refused = versions_pb2.VersionRecord()
    refused.CopyFrom(src.revise(OWNER, b, cid_for(b"y")))
    refused.cid = cid_for(b"")                                         # signature no longer holds
    for record in (other, refused):
        await h.push(versions_pb2.Bundle(file_id=b.file_id, records=[encode(record)],
                                         manifests=[manifest(b"")]).SerializeToString())
    assert len(got) == 1 and record_id(other) in h.store.get(b.file_id).valid_ids()


class KeepingReader:
    """A ContentReader stand-in for ReadAhead: keeps what it is handed, reads nothing."""

    def __init__(self) -> None:
        self.kept: dict[str, Manifest] = {}

    def cached(self, cid: str) -> Manifest | None:
        return self.kept.get(cid)

    def remember(self, m: Manifest) -> None:
        self.kept[m.cid] = m

    async def read(self, cid: str, user: Any, writer: bytes = b"") -> tuple[bytes, Any]:
        return b"", None


async def test_digest_hands_a_reader_the_heads_manifest(tmp_path: Path) -> None:
    """A replica holding the manifest of a head's content sends it in its Digest; a reader
    reading that head ahead keeps it if it verifies for that CID (else it fetches its own)."""

    from storage.manifest import verify_manifest
    from storage.versions.reads import ReadAhead

    h = handlers(tmp_path)
    b = new_binding(OWNER.public_key)
    head = h.store.revise(OWNER, b, cid_for(b""))
    good = verify_manifest(storage_pb2.SignedManifest.FromString(manifest(b"")))
    h.manifest_source = {good.cid: good}.get
    d = versions_pb2.Digest.FromString(await h.digest(
        versions_pb2.DigestRequest(file_id=b.file_id).SerializeToString()))
    assert list(d.head_manifests) == [good.signed.SerializeToString()]

    r = KeepingReader()
    ahead = ReadAhead(r, OWNER.signing_key)  # type: ignore[arg-type]
    ahead.offer(d)
    assert list(r.kept) == [cid_for(b"")] and record_id(head) in ahead.tasks
    await ahead.close()
    # a manifest for some other content is not taken for the head's
    lie = versions_pb2.Digest(head_records=d.head_records, head_manifests=[manifest(b"other")])
    r2 = KeepingReader()
    ahead = ReadAhead(r2, OWNER.signing_key)  # type: ignore[arg-type]
    ahead.offer(lie)
    assert r2.kept == {} and record_id(head) in ahead.tasks
    await ahead.close()


def stranger_manifest(data: bytes, size: int | None = None) -> bytes:
    """A manifest of ``data``'s CID signed by a key that wrote no version (any member's)."""
    from storage.documents import new_file_id
    from storage.manifest import sign_manifest
    size = len(data) if size is None else size
    body = storage_pb2.ManifestBody(
        format=1, cid=cid_for(data), file_id=new_file_id(STRANGER.public_key)[0],
        size=size, k=4, m=2, stripe_size=max(size, 1), codec_format=1, packet_size=32768,
        matrix="reedsolo", owner_key=STRANGER.public_key, public_key=bytes(32),
        stripes=[storage_pb2.Stripe(fragments=[storage_pb2.Fragment(hash=bytes(32))] * 6)]
        if size else [])
    return sign_manifest(body, STRANGER.signing_key).SerializeToString()


STRANGER = Identity.from_seed(b"peer-stranger")


async def test_a_content_manifest_is_kept_only_if_the_version_s_writer_signed_it(
        tmp_path: Path) -> None:
    """Any member may push a replica a record it holds already (a replay is a duplicate, not
    refused) with a manifest of that record's content signed by its own key. Before, the
    replica cached it as the content's manifest (replacing the writer's), served it in its
    Digests to every reader reading that head ahead, and its own next Get of the version read
    it first: one declaring a size over the unary Get limit failed that Get outright
    (INVALID_ARGUMENT, before any fallback). Now a pushed or digested manifest is kept only if
    signed by the writer of the version whose content it is."""

    from storage.servicer import UNARY_GET_MAX
    from storage.versions.reads import ReadAhead

    h = handlers(tmp_path)
    b = new_binding(OWNER.public_key)
    g = h.store.revise(OWNER, b, cid_for(b""))
    got: list[Manifest] = []
    h.manifest_sink = got.append
    bundle = versions_pb2.Bundle(file_id=b.file_id, records=[encode(g)], manifests=[
        stranger_manifest(b"", UNARY_GET_MAX + 1), stranger_manifest(b"")])
    reply = versions_pb2.PushReply.FromString(await h.push(bundle.SerializeToString()))
    assert reply.duplicate == 1 and got == []
    await h.push(versions_pb2.Bundle(file_id=b.file_id, records=[encode(g)],
                                     manifests=[manifest(b"")]).SerializeToString())
    assert [m.body.owner_key for m in got] == [OWNER.public_key]

    r = KeepingReader()
    ahead = ReadAhead(r, OWNER.signing_key)  # type: ignore[arg-type]
    ahead.offer(versions_pb2.Digest(head_records=[encode(g)],
                                    head_manifests=[stranger_manifest(b"")]))
    assert r.kept == {}
    await ahead.close()


async def test_file_ids_a_peer_names_do_not_grow_the_replica_s_memory(tmp_path: Path) -> None:
    """Digest, Pull and Push take any 16-byte file_id. Before, each one a peer named, even
    with nothing stored under it (a Digest, or a Push whose records were all refused), left an
    empty set cached for good: a member sending random ids grew the replica without bound."""
    import os

    h = handlers(tmp_path)
    for _ in range(200):
        fid = os.urandom(16)
        await h.digest(versions_pb2.DigestRequest(file_id=fid).SerializeToString())
        await h.pull(versions_pb2.PullRequest(file_id=fid, all=True).SerializeToString())
        await h.push(versions_pb2.Bundle(file_id=fid, records=[b"junk"]).SerializeToString())
    assert h.store._sets == {}
    b = new_binding(OWNER.public_key)
    g = VersionStore(tmp_path / "src", durable=False).revise(OWNER, b, cid_for(b"1"))
    await h.push(versions_pb2.Bundle(file_id=b.file_id, records=[encode(g)]).SerializeToString())
    assert list(h.store._sets) == [b.file_id]                      # a stored set is kept
    d = versions_pb2.Digest.FromString(await h.digest(
        versions_pb2.DigestRequest(file_id=b.file_id).SerializeToString()))
    assert list(d.heads) == [record_id(g)]

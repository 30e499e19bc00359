"""StoreBatch: several stores to one peer in one call, each answered on its own."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nacl.signing
import pytest

from mesh.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
)
from proto import storage_pb2
from storage.cid import cid_for
from storage.documents import DocumentStore
from storage.files import FileStore, PushOptions
from storage.fragstore import FragmentStore
from storage.manifest import ManifestStore
from storage.peer import StorageClient, StorageHandlers, StoreItem
from storage.peer_client import STORE_HEDGE_S
from storage.placement import placement_key
from tests.storage.test_files import FakeNetwork


def _handlers(root: Path) -> StorageHandlers:
    return StorageHandlers(FragmentStore(root), ManifestStore(root), DocumentStore(root))


def _remote(handlers: StorageHandlers) -> StorageClient:
    """A client that serializes every call, as over the channel (not the local fast path)."""
    return StorageClient(b"\x01" * 20, handlers.dispatch)


async def test_items_succeed_or_fail_each_on_its_own(tmp_path: Path) -> None:
    h = _handlers(tmp_path)
    good, bad = os.urandom(5000), os.urandom(3000)
    items = [StoreItem.of_fragment("fa", 0, good, hashlib.sha256(good).digest()),
             StoreItem.of_fragment("fa", 1, bad, hashlib.sha256(b"other").digest()),
             StoreItem.of_records(storage_pb2.SignedManifest(body=b"junk"), None)]
    results = await _remote(h).store_batch(items)
    assert isinstance(results[0], bytes)
    assert storage_pb2.StoreFragmentReply.FromString(results[0]).hash == \
        hashlib.sha256(good).digest()
    assert isinstance(results[1], InvalidArgumentError)
    assert isinstance(results[2], InvalidArgumentError)
    assert h.fragments.get(hashlib.sha256(good).hexdigest()) == good
    assert not h.fragments.has(hashlib.sha256(bad).hexdigest())
    assert not h.fragments.has(hashlib.sha256(b"other").hexdigest())


async def test_local_store_skips_the_rehash_but_keeps_the_bytes(tmp_path: Path) -> None:
    h = _handlers(tmp_path)
    data = os.urandom(70_000)
    digest = hashlib.sha256(data).digest()
    client = StorageClient.local(b"\x02" * 20, h)
    [reply] = await client.store_batch([StoreItem.of_fragment("fb", 3, data, digest)])
    assert not isinstance(reply, Exception)
    assert h.fragments.get(digest.hex()) == data
    assert h.fragments.list("fb")[0].refs == (("fb", 3),)


async def test_malformed_or_oversized_batches_are_refused(tmp_path: Path) -> None:
    h = _handlers(tmp_path)
    with pytest.raises(InvalidArgumentError):
        await h.dispatch("storage.StoreBatch", b"\x01\x00\x00\x10\x00abc")   # length past end
    with pytest.raises(InvalidArgumentError):
        await h.dispatch("storage.StoreBatch", b"\x09\x00\x00\x00\x00")      # unknown kind
    with pytest.raises(InvalidArgumentError):
        await h.dispatch("storage.StoreBatch", b"\x01\x00\x00\x00\x00" * 65)  # too many items
    with pytest.raises(ResourceExhaustedError):
        await h.dispatch("storage.StoreBatch", bytes(57 * 2**20))


async def test_a_peer_without_store_batch_gets_one_call_per_item(tmp_path: Path) -> None:
    h = _handlers(tmp_path)
    seen: list[str] = []

    async def old_peer(method: str, body: bytes) -> bytes:
        seen.append(method)
        if method == "storage.StoreBatch":
            raise NotFoundError("unknown peer method 'storage.StoreBatch'")
        return await h.dispatch(method, body)

    data = os.urandom(1000)
    items = [StoreItem.of_fragment("fc", 0, data, hashlib.sha256(data).digest()),
             StoreItem.of_records(storage_pb2.SignedManifest(body=b"junk"), None)]
    results = await StorageClient(b"\x03" * 20, old_peer).store_batch(items)
    assert seen == ["storage.StoreBatch", "storage.StoreFragment", "storage.StoreManifest"]
    assert not isinstance(results[0], Exception)
    assert isinstance(results[1], InvalidArgumentError)
    assert h.fragments.get(hashlib.sha256(data).hexdigest()) == data


async def test_small_push_moves_a_refused_fragment_to_a_spare(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    net = FakeNetwork(tmp_path, 8)
    files = FileStore(net)
    alice = nacl.signing.SigningKey.generate()
    data = os.urandom(100_000)
    bad = (await net.closest(placement_key("cid", cid_for(data)), 6))[2]

    async def refuse(*args: object) -> None:
        raise ResourceExhaustedError("cannot store the fragment here: disk full")

    monkeypatch.setattr(net.handlers[bad], "store_own_fragment", refuse)
    r = await files.push_bytes(data, alice, PushOptions(stripe_size=65536 * 4))
    assert r.fragments_placed == 6 and r.manifest_replicas == 3
    manifest = (await files.resolve(r.cid, alice))[0]
    assert bad not in {manifest.holder_of(0, i) for i in range(6)}
    assert files.counters["fragment_failures"] == 1
    assert await (await files.open(r.file_id, alice)).read_all() == data


async def test_big_or_many_items_are_split_over_several_calls(tmp_path: Path) -> None:
    h = _handlers(tmp_path)
    calls: list[int] = []

    async def peer(method: str, body: bytes) -> bytes:
        calls.append(len(body))
        return await h.dispatch(method, body)

    blobs = [os.urandom(3 * 2**20) for _ in range(4)] + [os.urandom(100) for _ in range(70)]
    items = [StoreItem.of_fragment("fd", n, b, hashlib.sha256(b).digest())
             for n, b in enumerate(blobs)]
    results = await StorageClient(b"\x04" * 20, peer).store_batch(items)
    assert all(isinstance(r, bytes) for r in results)
    assert len(calls) == 3 and max(calls) < 8 * 2**20 + 4096
    assert h.fragments.stats()[0] == len(blobs)


async def test_delete_drops_only_extra_copies_the_manifest_names(tmp_path: Path) -> None:
    """Any mesh member may call DeleteFragment: it needs the file's owner-signed manifest, the
    fragment must be in it, and the copy the manifest records on this holder stays."""
    net = FakeNetwork(tmp_path, 6)
    r = await FileStore(net).push_bytes(os.urandom(200_000), nacl.signing.SigningKey.generate(),
                                        PushOptions(stripe_size=65536))
    assert r.manifest is not None
    body = r.manifest.body
    frag = body.stripes[0].fragments[0]
    recorded = r.manifest.holder_of(0, 0)
    assert recorded is not None
    here = net.handlers[recorded]
    h = frag.hash.hex()
    client = _remote(here)
    other = next(n for n in net.handlers if n != recorded)
    extra = net.handlers[other]
    extra.fragments.put(here.fragments.get(h) or b"", r.file_id, 0)   # a copy repair left
    with pytest.raises(InvalidArgumentError, match="signed manifest"):
        await client._call("storage.DeleteFragment", storage_pb2.DeleteFragmentRequest(
            hash=frag.hash, file=r.file_id).SerializeToString())
    with pytest.raises(InvalidArgumentError, match="no such fragment"):
        await client.delete_fragment(hashlib.sha256(b"x").digest(), r.file_id, r.manifest.signed)
    forged = storage_pb2.SignedManifest()
    forged.CopyFrom(r.manifest.signed)
    forged.signature = bytes(64)
    with pytest.raises(InvalidArgumentError):
        await client.delete_fragment(frag.hash, r.file_id, forged)
    with pytest.raises(PermissionDeniedError, match="stays"):
        await client.delete_fragment(frag.hash, r.file_id, r.manifest.signed)
    assert here.fragments.get(h) is not None
    assert await _remote(extra).delete_fragment(frag.hash, r.file_id, r.manifest.signed)
    assert extra.fragments.get(h) is None and here.fragments.get(h) is not None


async def test_remote_stores_are_hedged_and_reads_are_not() -> None:
    """StorageClient.remote asks the channel to hedge exactly the idempotent store methods."""
    seen: dict[str, float | None] = {}

    class Channel:
        node_id = b"\x01" * 20

        async def unary_view(self, method: str, body: bytes, *, timeout: float | None = None,
                             hedge_after: float | None = None) -> memoryview:
            seen[method] = hedge_after
            raise UnavailableError("recorded only")

    client = StorageClient.remote(Channel())  # type: ignore[arg-type]
    await client.store_batch([StoreItem.of_fragment("f", 0, b"x", b"\x00" * 32)])
    for call in (client.store_fragment("f", 0, b"x", b"\x00" * 32),
                 client.fetch_fragment(b"\x00" * 32)):
        with pytest.raises(UnavailableError):
            await call
    assert seen == {"storage.StoreBatch": STORE_HEDGE_S, "storage.StoreFragment": STORE_HEDGE_S,
                    "storage.FetchFragment": None}

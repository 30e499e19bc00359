"""Inline small files (storage/inline.py): the sealed file lives in its m+1 manifest replicas."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import nacl.signing
import pytest

from mesh.errors import NotFoundError, UnavailableError
from storage.cid import cid_for
from storage.files import FileStore, PushOptions
from storage.inline import INLINE_MAX
from storage.manifest import manifest_key
from storage.peer import StorageClient
from tests.storage.test_files import FakeNetwork


@pytest.fixture
def net(tmp_path: Path) -> FakeNetwork:
    return FakeNetwork(tmp_path, 6)


def _fragments_stored(net: FakeNetwork) -> int:
    return sum(h.fragments.stats()[0] for h in net.handlers.values())


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.parametrize("size", [0, 1, 1024, INLINE_MAX])
async def test_small_files_go_inline_and_round_trip(net: FakeNetwork, size: int) -> None:
    files = FileStore(net)
    alice = nacl.signing.SigningKey.generate()
    data = os.urandom(size)
    for r in (await files.push_bytes(data, alice, PushOptions(filename="a.txt")),
              await files.push(_one(data), alice, PushOptions(filename="a.txt"))):
        assert r.cid == cid_for(data) and r.fragments_placed == 0 and not r.under_replicated
        reader = await files.open(r.cid, alice)
        assert reader.manifest.body.inline and not reader.manifest.body.stripes
        assert await reader.read_all() == data and reader.filename == "a.txt"
        assert await (await files.open(r.file_id, alice)).read_all() == data
    assert _fragments_stored(net) == 0
    big = await files.push_bytes(os.urandom(INLINE_MAX + 1), alice, PushOptions())
    assert big.fragments_placed == 6 and _fragments_stored(net) == 6


async def test_any_m_replicas_down_still_reads_m_plus_one_is_a_clear_error(
        net: FakeNetwork) -> None:
    files = FileStore(net)
    alice = nacl.signing.SigningKey.generate()
    data = os.urandom(1024)
    r = await files.push_bytes(data, alice, PushOptions())
    replicas = await net.closest(manifest_key(r.cid), 3)
    st = await files.stat(r.cid, alice)
    assert st.health == "healthy" and [f.holder for f in st.fragments] == replicas
    assert all(f.reachable and f.healthy for f in st.fragments)
    assert st.as_dict()["inline"] is True
    reader = FileStore(net)  # never wrote or read it: nothing kept in memory (storage/known.py)
    net.down.update(replicas[:2])
    assert await (await reader.open(r.cid, alice)).read_all() == data
    st = await files.stat(r.cid, alice)
    assert st.health == "degraded"
    net.down.add(replicas[2])
    with pytest.raises(NotFoundError) as info:
        await FileStore(net).open(r.cid, alice)
    assert "no manifest found" in str(info.value)    # dead peers have left the live set
    # the writer and the earlier reader still hold the signed manifest, data inline
    assert await (await files.open(r.cid, alice)).read_all() == data
    assert await (await reader.open(r.cid, alice)).read_all() == data
    net.down.clear()

    async def refuse(node_id: bytes) -> StorageClient:  # down but not yet noticed: named
        raise UnavailableError(f"peer {node_id.hex()[:8]} down")

    net.client = refuse  # type: ignore[method-assign]
    with pytest.raises(NotFoundError) as info:
        await FileStore(net).open(r.cid, alice)
    assert "missing: 6 manifest replica peer(s) unreachable" in str(info.value)


async def test_corrupt_replica_detected_and_read_still_correct(net: FakeNetwork) -> None:
    files = FileStore(net)
    alice = nacl.signing.SigningKey.generate()
    data = os.urandom(2000)
    r = await files.push_bytes(data, alice, PushOptions())
    replicas = await net.closest(manifest_key(r.cid), 3)
    for peer in replicas[:2]:                      # flip a byte inside the sealed payload
        with sqlite3.connect(net.dirs[peer] / "storage" / "manifests.sqlite3") as db:
            [(raw,)] = db.execute("SELECT signed FROM manifests WHERE cid=?", (r.cid,))
            raw = bytearray(raw)
            raw[len(raw) // 2] ^= 0x5A
            db.execute("UPDATE manifests SET signed=? WHERE cid=?", (bytes(raw), r.cid))
    assert await (await files.open(r.cid, alice)).read_all() == data
    for peer in replicas[:2]:                      # the rotted replicas were dropped
        assert net.handlers[peer].manifests.get(r.cid) == []
    st = await files.stat(r.cid, alice)
    assert st.health == "degraded" and sum(f.healthy for f in st.fragments) == 1


async def test_inline_private_and_no_plaintext_on_peers(net: FakeNetwork) -> None:
    files = FileStore(net)
    alice, bob = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    marker = b"INLINE-PLAINTEXT-" + os.urandom(8).hex().encode()
    r = await files.push_bytes(marker * 20, alice, PushOptions(filename="inline-name.txt"))
    for d in net.dirs.values():
        for p in d.rglob("*"):
            if p.is_file():
                blob = p.read_bytes()
                assert marker not in blob and b"inline-name" not in blob, p
    from mesh.errors import PermissionDeniedError
    with pytest.raises(PermissionDeniedError):
        await files.open(r.cid, bob)
    assert await files.grant(r.cid, alice, bytes(bob.verify_key)) == 3
    assert await (await files.open(r.cid, bob)).read_all() == marker * 20


def test_store_fragment_wire_is_plain_protobuf() -> None:
    """StorageClient.store_fragment writes the data field itself (in parts the channel seals
    as one); it must parse as usual, and the holder's zero-copy split must agree."""
    from proto import storage_pb2
    from storage.peer import _with_data
    from storage.peer_wire import _fragment_request

    for n in (0, 1, 127, 128, 16_383, 16_384, 3 << 20):
        data = os.urandom(n)
        head = storage_pb2.StoreFragmentRequest(file="f" * 33, index=513, hash=b"h" * 32)
        wire = b"".join(_with_data(head.SerializeToString(), memoryview(data)))
        req = storage_pb2.StoreFragmentRequest.FromString(wire)
        assert (req.data, req.index, req.file, req.hash) == (data, 513, "f" * 33, b"h" * 32)
        got, view = _fragment_request(memoryview(wire))
        assert (bytes(view), got.index, got.file, got.hash) == (data, 513, "f" * 33, b"h" * 32)
        # a standard encoder's bytes (fields in another order) split the same way
        other = storage_pb2.StoreFragmentRequest(data=data, hash=b"h" * 32, index=513,
                                                 file="f" * 33).SerializeToString()
        assert bytes(_fragment_request(other)[1]) == data


async def test_inline_honours_push_options_for_versions(net: FakeNetwork) -> None:
    """PushOptions.document=False publishes no document record; PushResult.manifest is set."""
    files = FileStore(net)
    alice = nacl.signing.SigningKey.generate()
    r = await files.push_bytes(b"small revision", alice, PushOptions(document=False))
    assert r.manifest is not None and r.manifest.body.inline and r.manifest.cid == r.cid
    assert await (await files.open(r.cid, alice)).read_all() == b"small revision"
    with pytest.raises(NotFoundError):
        await files.open(r.file_id, alice)


async def test_manifest_and_document_share_a_call(net: FakeNetwork) -> None:
    """A peer that keeps both records of a Push gets them in one StoreManifest call."""
    from storage.documents import document_key

    files = FileStore(net)
    alice = nacl.signing.SigningKey.generate()
    before = {n: h.calls for n, h in net.handlers.items()}
    r = await files.push_bytes(b"two records", alice, PushOptions())
    mset = set(await net.closest(manifest_key(r.cid), 3))
    dset = set(await net.closest(document_key(r.file_id), 3))
    assert sum(h.calls - before[n] for n, h in net.handlers.items()) == len(mset | dset)
    for node in dset:
        assert net.handlers[node].documents.get(r.file_id), node.hex()
    assert await (await files.open(r.file_id, alice)).read_all() == b"two records"


async def test_a_remote_peer_lying_about_a_fragment_is_caught() -> None:
    """Only this node's own store is trusted to have re-hashed what it returns."""
    from proto import storage_pb2

    async def liar(method: str, body: bytes) -> bytes:
        return storage_pb2.FetchFragmentReply(data=b"not the fragment").SerializeToString()

    with pytest.raises(NotFoundError, match="corrupt"):
        await StorageClient(b"\x01" * 20, liar).fetch_fragment(b"\x00" * 32)
    assert await StorageClient(b"\x01" * 20, liar, trusted=True).fetch_fragment(
        b"\x00" * 32) == b"not the fragment"

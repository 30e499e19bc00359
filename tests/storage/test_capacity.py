"""Reserved space (storage/capacity.py): sizes, the default, and a holder that keeps it free."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from mesh.errors import ResourceExhaustedError
from proto import storage_pb2
from storage.capacity import (
    DEFAULT_RESERVED,
    FULL_MARGIN,
    RESERVE_ENV,
    Capacity,
    StorageFull,
    default_reserve,
    looks_full,
    parse_size,
)
from storage.documents import DocumentStore
from storage.fragstore import FragmentStore
from storage.manifest import ManifestStore
from storage.peer import StorageClient, StorageHandlers, StoreItem
from storage.peer_wire import _with_data

EVERYTHING = 1 << 62        # more than any disk has free: every store eats into it


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), ("4096", 4096), ("512M", 512 << 20), ("1G", 1 << 30), ("1g", 1 << 30),
    ("1.5GiB", 3 << 29), ("2TB", 2 << 40), (" 10 K ", 10 << 10), ("1P", 1 << 50)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1G", "1X", "G", "1e9", "1GG", "10%"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_default_is_a_gibibyte_or_a_tenth_of_a_small_volume() -> None:
    assert default_reserve(1 << 40) == DEFAULT_RESERVED
    assert default_reserve(8 << 20) == (8 << 20) // 10


def test_the_default_reserve_can_come_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RESERVE_ENV, "3M")
    assert Capacity(tmp_path).reserved == 3 << 20
    assert Capacity(tmp_path, 7).reserved == 7              # the flag wins
    monkeypatch.setenv(RESERVE_ENV, "lots")
    with pytest.raises(ValueError, match="not a size"):
        Capacity(tmp_path)


def test_capacity_checks_against_the_reserve(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESERVE_ENV, raising=False)
    none = Capacity(tmp_path, 0)
    none.check(1 << 30)                              # no reserve: nothing refused here
    assert none.status()["reserved_bytes"] == 0 and none.refused == 0
    cap = Capacity(tmp_path, EVERYTHING)
    with pytest.raises(StorageFull, match="storage full"):
        cap.check(1)
    status = cap.status()
    assert status["full"] is True and status["usable_bytes"] == 0
    assert status["stores_refused_full"] == 1
    assert Capacity(tmp_path).reserved == default_reserve(shutil.disk_usage(tmp_path).total)


def test_a_peer_record_looks_full() -> None:
    assert looks_full(1 << 40, 10 << 30, 10 << 30)
    assert looks_full(1 << 40, FULL_MARGIN - 1, 0)
    assert not looks_full(1 << 40, 2 << 30, 1 << 30)
    assert not looks_full(0, 0, 0)                   # no capacity advertised: unknown, not full


def _handlers(root: Path, reserved: int) -> StorageHandlers:
    return StorageHandlers(FragmentStore(root), ManifestStore(root), DocumentStore(root),
                           capacity=Capacity(root, reserved))


async def test_a_full_holder_refuses_every_new_store_and_writes_nothing(tmp_path: Path) -> None:
    h = _handlers(tmp_path, EVERYTHING)
    data = os.urandom(50_000)
    digest = hashlib.sha256(data).digest()
    head = storage_pb2.StoreFragmentRequest(file="f", index=0, hash=digest).SerializeToString()
    with pytest.raises(ResourceExhaustedError, match="storage full"):
        await h.dispatch("storage.StoreFragment", _with_data(head, data))
    with pytest.raises(ResourceExhaustedError, match="storage full"):
        await h.store_own_fragment("f", 1, data, digest)
    manifest = storage_pb2.StoreManifestRequest(
        manifest=storage_pb2.SignedManifest(body=b"x" * 100)).SerializeToString()
    with pytest.raises(ResourceExhaustedError, match="storage full"):
        await h.dispatch("storage.StoreManifest", manifest)
    document = storage_pb2.StoreDocumentRequest(
        document=storage_pb2.SignedDocument(body=b"y" * 100)).SerializeToString()
    with pytest.raises(ResourceExhaustedError, match="storage full"):
        await h.dispatch("storage.StoreDocument", document)
    results = await StorageClient(b"\x01" * 20, h.dispatch).store_batch(
        [StoreItem.of_fragment("f", 2, data, digest)])
    assert isinstance(results[0], ResourceExhaustedError)
    assert h.fragments.stats() == (0, 0)
    assert h.manifests.cids() == []
    assert h.capacity is not None and h.capacity.refused == 5


async def test_a_fragment_held_already_needs_no_room(tmp_path: Path) -> None:
    """A hedged re-send or a repair re-storing a fragment the holder has is not refused."""
    data = os.urandom(20_000)
    digest = hashlib.sha256(data).digest()
    head = storage_pb2.StoreFragmentRequest(file="f", index=0, hash=digest).SerializeToString()
    roomy = _handlers(tmp_path, 0)
    await roomy.dispatch("storage.StoreFragment", _with_data(head, data))
    roomy.fragments.close()
    full = _handlers(tmp_path, EVERYTHING)
    await full.dispatch("storage.StoreFragment", _with_data(head, data))
    assert full.fragments.get(digest.hex()) == data
    other = os.urandom(20_000)
    with pytest.raises(ResourceExhaustedError):
        await full.store_own_fragment("f", 1, other, hashlib.sha256(other).digest())


async def test_placement_ranks_a_full_peer_last_and_asks_one_more_next_time() -> None:
    """storage/placement.py: a peer whose record shows under FULL_MARGIN usable goes after the
    others (XOR order kept); the next lookup draws one rank further to make up for it."""
    from types import SimpleNamespace

    from storage.placement import MeshNetwork

    peers = [bytes([i]) * 20 for i in range(1, 6)]          # already in XOR order
    asked: list[int] = []

    async def closest_peers(key: bytes, n: int) -> list[SimpleNamespace]:
        asked.append(n)
        return [SimpleNamespace(node_id=p, roles=["storage"], address="x",
                                capacity_bytes=1 << 40, free_bytes=1 << 30,
                                reserved_bytes=(1 << 30) if p == peers[0] else 0)
                for p in peers[:n]]

    ctx = SimpleNamespace(identity=SimpleNamespace(node_id=b"\0" * 20),
                          membership=SimpleNamespace(closest_peers=closest_peers))
    net = MeshNetwork(ctx, SimpleNamespace(dispatch=None))  # type: ignore[arg-type]
    assert await net.closest(b"k", 5) == [*peers[1:], peers[0]]
    assert await net.closest(b"k", 3) == peers[1:4]
    assert asked == [5, 4]

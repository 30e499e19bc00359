"""Fragment store: durability across restarts, corruption detection, index rebuild."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.fragstore import FragmentStore, fragment_hash


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FragmentStore]:
    s = FragmentStore(tmp_path)
    yield s
    s.close()


def blob_path(store: FragmentStore, h: str) -> Path:
    return store.root / h[:2] / h


def test_put_get_has_delete(store: FragmentStore) -> None:
    data = os.urandom(5000)
    h = store.put(data, "bafkreiexample", 3)
    assert h == fragment_hash(data)
    assert blob_path(store, h).read_bytes() == data
    assert store.has(h) and store.get(h) == data
    assert store.stats() == (1, 5000)
    (info,) = store.list()
    assert info.hash == h and info.size == 5000 and info.refs == (("bafkreiexample", 3),)
    assert store.delete(h)
    assert not store.has(h) and store.get(h) is None
    assert store.stats() == (0, 0)
    assert not blob_path(store, h).exists()
    assert not store.delete(h)


def test_put_is_idempotent_and_refs_accumulate(store: FragmentStore) -> None:
    h = store.put(b"same", "file-a", 0)
    assert store.put(b"same", "file-b", 4) == h
    assert store.put(b"same", "file-b", 4) == h
    assert store.stats() == (1, 4)
    assert store.list()[0].refs == (("file-a", 0), ("file-b", 4))
    assert [i.hash for i in store.list("file-b")] == [h]
    assert store.list("file-c") == []
    # Dropping one reference keeps the blob for the other file.
    assert not store.delete(h, "file-a")
    assert store.get(h) == b"same"
    assert store.delete(h, "file-b", 4)
    assert store.get(h) is None


def test_a_delete_for_a_file_drops_only_a_blob_that_file_references(
        store: FragmentStore) -> None:
    """A blob whose references were lost (an index rebuilt without its hints) stays when a
    delete names a file: before, any file's delete (a peer's, for a file of its own whose
    manifest names the hash) dropped it, as "the last reference" was gone already."""
    h = store.put(b"orphan", "file-a", 0)
    with sqlite3.connect(store.db_path) as db:
        db.execute("DELETE FROM refs")
    assert not store.delete(h, "file-b")
    assert store.get(h) == b"orphan"
    assert store.delete(h)                             # no file named: the store's own drop
    h = store.put(b"kept", "file-a", 0)
    assert not store.delete(h, "file-b") and store.list()[0].refs == (("file-a", 0),)


def test_empty_fragment(store: FragmentStore) -> None:
    h = store.put(b"")
    assert store.get(h) == b""


def test_survives_restart(tmp_path: Path) -> None:
    s1 = FragmentStore(tmp_path)
    hashes = [s1.put(os.urandom(100 + i), "f", i) for i in range(5)]
    s1.close()
    s2 = FragmentStore(tmp_path)
    assert s2.stats() == (5, sum(100 + i for i in range(5)))
    assert all(s2.get(h) is not None for h in hashes)
    assert [i.refs for i in s2.list("f")] != []


@pytest.mark.parametrize("damage", ["truncate", "flip", "remove"])
def test_damaged_fragment_is_missing(store: FragmentStore, damage: str) -> None:
    data = os.urandom(4096)
    h = store.put(data, "f", 0)
    path = blob_path(store, h)
    if damage == "truncate":
        path.write_bytes(data[:100])
    elif damage == "flip":
        path.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    else:
        path.unlink()
    assert store.get(h) is None
    assert store.corrupt_count == (0 if damage == "remove" else 1)
    assert not store.has(h)
    assert store.stats() == (0, 0)
    assert store.list() == []
    # A fresh copy can be stored again.
    assert store.put(data, "f", 0) == h and store.get(h) == data


def test_scrub_reports_bad_and_reindexes_orphans(store: FragmentStore) -> None:
    good = store.put(b"good", "f", 0)
    bad = store.put(b"bad", "f", 1)
    blob_path(store, bad).write_bytes(b"rot")
    orphan = fragment_hash(b"orphan")
    (store.root / orphan[:2]).mkdir(exist_ok=True)
    blob_path(store, orphan).write_bytes(b"orphan")
    assert store.scrub() == [bad]
    assert store.get(good) == b"good" and store.get(orphan) == b"orphan"
    assert store.stats() == (2, 10)


@pytest.mark.parametrize("how", ["missing", "garbage"])
def test_index_rebuilt_from_files(tmp_path: Path, how: str) -> None:
    s1 = FragmentStore(tmp_path)
    h1 = s1.put(b"one", "fileX", 2)
    h2 = s1.put(b"two")
    s1.close()
    db = tmp_path / "fragments" / "index.sqlite3"
    for side in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        side.unlink(missing_ok=True)
    if how == "garbage":
        db.write_bytes(b"this is not a sqlite database" * 100)
    s2 = FragmentStore(tmp_path)
    assert s2.stats() == (2, 6)
    assert s2.get(h1) == b"one" and s2.get(h2) == b"two"
    assert [i.refs for i in s2.list("fileX")] == [(("fileX", 2),)]
    sqlite3.connect(db).close()  # the new index is a valid database


def test_rebuild_skips_corrupt_files(tmp_path: Path) -> None:
    s1 = FragmentStore(tmp_path)
    h = s1.put(b"payload")
    s1.close()
    (tmp_path / "fragments" / "index.sqlite3").unlink()
    blob_path(s1, h).write_bytes(b"payloaX")
    s2 = FragmentStore(tmp_path)
    assert s2.stats() == (0, 0) and s2.corrupt_count == 1


@pytest.mark.parametrize("bad", ["../../etc/passwd", "AB" * 32, "a" * 63, "", "g" * 64])
def test_only_hex_hashes_become_paths(store: FragmentStore, bad: str) -> None:
    for op in (store.get, store.has, store.delete):
        with pytest.raises(ValueError, match="fragment hash"):
            op(bad)


def test_leftover_temp_files_cleaned(tmp_path: Path) -> None:
    s1 = FragmentStore(tmp_path)
    h = s1.put(b"x")
    s1.close()
    tmp = blob_path(s1, h).with_name(".tmp-123-1-deadbeef")
    tmp.write_bytes(b"partial")
    FragmentStore(tmp_path)
    assert not tmp.exists()


async def test_concurrent_use_from_threads(store: FragmentStore) -> None:
    blobs = [os.urandom(2000) for _ in range(40)]
    hashes = await asyncio.gather(
        *(asyncio.to_thread(store.put, b, "f", i) for i, b in enumerate(blobs))
    )
    got = await asyncio.gather(*(asyncio.to_thread(store.get, h) for h in hashes))
    assert got == blobs
    assert store.stats() == (40, 80000)

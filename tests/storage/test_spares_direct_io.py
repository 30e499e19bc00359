"""Spare files (no inode allocated while a write waits) and page-cache-free blob I/O."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from storage import direct_io
from storage.durable import write_atomic
from storage.fragstore import FragmentStore
from storage.spares import SparePool


def _wait_for(pool: SparePool, count: int) -> None:
    deadline = time.monotonic() + 20
    while len(pool) < count:
        assert time.monotonic() < deadline, f"pool stuck at {len(pool)} spares"
        time.sleep(0.01)


def test_pool_fills_in_background_and_hands_out_empty_files(tmp_path: Path) -> None:
    pool = SparePool(tmp_path / "spare")
    try:
        assert pool.take() is None  # nothing made yet: the caller makes its own file
        _wait_for(pool, 8)
        spare = pool.take()
        assert spare is not None and spare.parent == tmp_path / "spare"
        assert spare.stat().st_size == 0
        write_atomic(tmp_path / "blob", b"x" * 10_000, tmp=spare)
        assert (tmp_path / "blob").read_bytes() == b"x" * 10_000
        assert not spare.exists()
    finally:
        pool.close()
    assert pool._thread is not None and not pool._thread.is_alive()


def test_a_burst_grows_the_pool(tmp_path: Path) -> None:
    pool = SparePool(tmp_path / "spare")
    try:
        pool.take()
        _wait_for(pool, 16)
        for _ in range(16):
            pool.take()
        _wait_for(pool, 17)  # the refill woke with >= 9 taken: the target grew to >= 18
    finally:
        pool.close()


def test_spares_from_before_a_restart_are_unlinked_not_reused(tmp_path: Path) -> None:
    s1 = FragmentStore(tmp_path)
    h = s1.put(os.urandom(5000), "f", 0)
    data = s1.get(h)
    s1.close()
    spare_dir = tmp_path / "fragments" / ".spare"
    blob = tmp_path / "fragments" / h[:2] / h
    os.link(blob, spare_dir / "123-1")  # a crash can leave a spare's name on a blob's inode
    (spare_dir / "123-2").write_bytes(b"junk")
    s2 = FragmentStore(tmp_path)
    try:
        assert list(spare_dir.iterdir()) == [] and s2.get(h) == data
    finally:
        s2.close()


def test_put_renames_a_spare_into_place(tmp_path: Path) -> None:
    store = FragmentStore(tmp_path)
    try:
        store.put(b"first")
        _wait_for(store.spares, 16)  # the whole first refill: no file is made after this
        inodes = {p.stat().st_ino for p in (tmp_path / "fragments" / ".spare").iterdir()}
        h = store.put(os.urandom(70_000), "file", 1)
        assert (tmp_path / "fragments" / h[:2] / h).stat().st_ino in inodes
    finally:
        store.close()


def test_refs_live_in_an_xattr_and_rebuild_reads_them(tmp_path: Path) -> None:
    store = FragmentStore(tmp_path)
    h = store.put(b"payload", "fileX", 2)
    store.put(b"payload", "fileY", 0)
    blob = tmp_path / "fragments" / h[:2] / h
    try:
        raw = os.getxattr(blob, "user.tw-refs")
    except OSError as exc:
        store.close()
        pytest.skip(f"no user xattrs here: {exc}")
    store.close()
    assert json.loads(raw) == [["fileX", 2], ["fileY", 0]]
    assert not blob.with_suffix(".refs").exists()
    (tmp_path / "fragments" / "index.sqlite3").unlink()
    s2 = FragmentStore(tmp_path)
    try:
        assert s2.list()[0].refs == (("fileX", 2), ("fileY", 0))
    finally:
        s2.close()


def test_rebuild_still_reads_a_refs_side_file(tmp_path: Path) -> None:
    store = FragmentStore(tmp_path)
    h = store.put(b"older layout")
    store.close()
    blob = tmp_path / "fragments" / h[:2] / h
    blob.with_suffix(".refs").write_text(json.dumps([["old-file", 5]]))
    (tmp_path / "fragments" / "index.sqlite3").unlink()
    s2 = FragmentStore(tmp_path)
    try:
        assert s2.list()[0].refs == (("old-file", 5),)
    finally:
        s2.close()


SIZES = [0, 1, 4095, 4096, 4097, 65536, (1 << 20) + 3, 9 << 20]


@pytest.mark.parametrize("size", SIZES)
def test_direct_write_and_read_round_trip(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "blob"
    write_atomic(path, data)
    assert direct_io.read_all(path) == data == path.read_bytes()
    write_atomic(path, data[: size // 2])  # replaced, not overwritten in place
    assert direct_io.read_all(path) == data[: size // 2]


def test_filesystem_without_o_direct_falls_back(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def no_direct(path: Any, flags: int, *args: Any) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setitem(direct_io._state, "ok", True)
    monkeypatch.setattr(os, "open", no_direct)
    data = os.urandom(50_000)
    assert not direct_io.write_durable(tmp_path / "x", data)
    assert direct_io._state["ok"] is False  # remembered: no more failed opens
    write_atomic(tmp_path / "blob", data)
    assert direct_io.read_all(tmp_path / "blob") == data


def test_o_direct_refused_at_the_first_write_falls_back(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real_pwrite = os.pwrite

    def refuse_aligned(fd: int, data: Any, offset: int) -> int:
        if len(data) % 4096 == 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setitem(direct_io._state, "ok", True)
    monkeypatch.setattr(os, "pwrite", refuse_aligned)
    data = os.urandom(3 * 4096 + 5)
    write_atomic(tmp_path / "blob", data)
    assert direct_io._state["ok"] is False
    assert (tmp_path / "blob").read_bytes() == data

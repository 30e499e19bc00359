"""A node's fragment store: content-addressed files on disk, indexed in SQLite.

Layout under DATA/fragments/: ``ab/abcdef…`` holds the fragment whose hex digest is
``abcdef…`` (BLAKE3-256, or SHA-256 for fragments written before; storage/fraghash.py); its
extended attribute ``user.tw-refs`` (or, where the filesystem has no user
xattrs, a side file ``ab/abcdef….refs``) lists the (file, index) references to it as JSON, so
the index can be rebuilt from the files alone; ``index.sqlite3`` is the index. Only validated
hex digests ever become paths (the index: fragindex.py). Blobs are written temp -> fsync -> rename -> fsync(dir), so a
crash leaves either the whole fragment or none; the temp file is a spare made ahead of time
(storage/spares.py: creating a file is the costliest step of a write on this filesystem). Every read re-hashes the bytes: a truncated or rotted file is
counted, removed and reported as missing, and the caller fetches or repairs it elsewhere.

The store is synchronous and thread-safe (one SQLite connection behind a lock; file I/O runs
outside it), meant to be called from asyncio through ``asyncio.to_thread``.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from storage import direct_io
from storage.durable import fsync_dir, write_atomic
from storage.fraghash import fragment_digest, matches
from storage.fragindex import FragmentIndex
from storage.spares import SparePool

_HEX = re.compile(r"[0-9a-f]{64}")
_REFS_XATTR = "user.tw-refs"


class FragmentMismatch(ValueError):
    """Bytes offered under a name they do not hash to."""


@dataclass(frozen=True)
class FragmentInfo:
    """One indexed fragment and the (file, index) pairs that reference it."""

    hash: str
    size: int
    created: float
    refs: tuple[tuple[str, int], ...]


def fragment_hash(data: bytes | bytearray | memoryview) -> str:
    """The name a new fragment is stored under: its BLAKE3-256 hex digest (fraghash.py)."""
    return fragment_digest(data).hex()


def _named(data: bytes | bytearray | memoryview, h: str) -> bool:
    """Whether ``data`` is the fragment named ``h`` (either hash function, fraghash.py)."""
    return matches(data, bytes.fromhex(h))


def _check(h: str) -> str:
    if not isinstance(h, str) or not _HEX.fullmatch(h):
        raise ValueError(f"not a fragment hash (64 lower-case hex digits): {h!r:.80}")
    return h


class FragmentStore:
    """Content-addressed fragment files plus a SQLite index; survives restarts."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir) / "fragments"
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "index.sqlite3"
        self.corrupt_count = 0
        self._lock = threading.Lock()        # of corrupt_count (the index has its own)
        for tmp in self.root.glob("*/.tmp-*"):  # debris of a crash mid-write
            tmp.unlink(missing_ok=True)
        self._make_shards()
        self.spares = SparePool(self.root / ".spare")
        self._xattrs = True  # until the filesystem refuses one
        self.index = FragmentIndex(self.db_path)
        if self.index.fresh:
            self.rebuild_index()

    def _make_shards(self) -> None:
        """Create the 256 shard directories once, up front: a directory created (and made
        durable) inside a Push costs a journal commit each time, ~3x a plain fragment write."""
        made = False
        for b in range(256):
            shard = self.root / f"{b:02x}"
            if not shard.is_dir():
                shard.mkdir(exist_ok=True)
                made = True
        if made:
            fsync_dir(self.root)

    def close(self) -> None:
        self.spares.close()
        self.index.close()

    def _path(self, h: str) -> Path:
        return self.root / h[:2] / h

    def _write_refs(self, h: str) -> None:
        """Mirror the refs of h on its blob, for rebuild_index (not fsynced: hints only)."""
        refs = json.dumps(self.index.refs(h)).encode()
        path = self._path(h)
        if self._xattrs:
            try:
                os.setxattr(path, _REFS_XATTR, refs)
                return
            except FileNotFoundError:
                return
            except OSError as exc:  # no user xattrs here (or too long): the side file
                if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    self._xattrs = False
        if path.exists():
            write_atomic(path.with_suffix(".refs"), refs, False)

    def _read_refs(self, p: Path) -> builtins.list[tuple[str, int]]:
        for source in ("xattr", "file"):
            with contextlib.suppress(OSError, ValueError, TypeError):
                raw = (os.getxattr(p, _REFS_XATTR) if source == "xattr"
                       else p.with_suffix(".refs").read_bytes())
                return [(str(f), int(i)) for f, i in json.loads(raw)]
        return []

    def put(self, data: bytes | bytearray | memoryview, file: str = "", index: int = -1,
            known_hash: str | None = None, expect: str | None = None) -> str:
        """Store a fragment (idempotent) and record that `file` uses it as fragment `index`.

        ``known_hash``: the caller computed the name of exactly these bytes in this process
        (a Push storing its own fragment here), so they are not hashed again. Bytes from
        anywhere else must not pass it: the hash is what makes the store content-addressed.
        ``expect``: the name a peer claims for the bytes; FragmentMismatch (a ValueError) if
        they do not match it. Without either, the bytes are named by BLAKE3-256.
        """
        if not isinstance(file, str) or len(file) > 512 or not isinstance(index, int):
            raise ValueError("file must be a str of at most 512 chars and index an int")
        if known_hash is not None:
            h = _check(known_hash)
        elif expect is not None:
            h = _check(expect)
            if not _named(data, h):
                raise FragmentMismatch(f"fragment bytes do not match their name {h[:16]}")
        else:
            h = fragment_hash(data)
        path = self._path(h)
        size = memoryview(data).nbytes
        if not (self.has(h) and path.stat().st_size == size):
            try:
                write_atomic(path, data, durable=True, tmp=self.spares.take())
            except FileNotFoundError:          # its shard directory was removed under us
                path.parent.mkdir(exist_ok=True)
                write_atomic(path, data, durable=True)
        added = self.index.add(h, size, file, index)
        if file and added:
            self._write_refs(h)
        return h

    def has(self, h: str) -> bool:
        """Indexed and present on disk (not re-hashed; get() does that)."""
        _check(h)
        return self.index.has(h) and self._path(h).is_file()

    def get(self, h: str) -> bytes | None:
        """The fragment's bytes, or None if absent, truncated or corrupt (then it is dropped)."""
        _check(h)
        try:
            data = direct_io.read_all(self._path(h))
        except FileNotFoundError:
            self._forget(h)
            return None
        if not _named(data, h):
            self._count_corrupt()
            self.delete(h)
            return None
        return data

    def _count_corrupt(self) -> None:
        with self._lock:
            self.corrupt_count += 1

    def _forget(self, h: str) -> None:
        self.index.forget(h)

    def delete(self, h: str, file: str | None = None, index: int | None = None) -> bool:
        """Drop a fragment, or just one file's reference to it (the blob goes with its last ref).

        Returns True if the blob was removed from disk. With ``file``, a blob that file does
        not reference stays (another file's copy, or one whose references were lost: a peer's
        delete for a file of its own must not drop it).
        """
        _check(h)
        if file is not None:
            dropped, left = self.index.drop_refs(h, file, index)
            if not dropped:
                return False
            if left:
                self._write_refs(h)
                return False
        self._forget(h)
        self._path(h).with_suffix(".refs").unlink(missing_ok=True)
        try:
            self._path(h).unlink()
        except FileNotFoundError:
            return False
        return True

    def list(self, file: str | None = None) -> list[FragmentInfo]:
        """Indexed fragments, optionally only those referenced by `file`."""
        return [FragmentInfo(h, s, c, tuple(self.index.refs(h)))
                for h, s, c in self.index.blobs(file)]

    def stats(self) -> tuple[int, int]:
        """(number of fragments, total bytes) according to the index."""
        return self.index.stats()

    def scrub(self) -> builtins.list[str]:
        """Re-hash every fragment; drop and return the bad ones; index orphaned good files."""
        bad = [i.hash for i in self.list() if self.get(i.hash) is None]
        self.rebuild_index(keep_existing=True)
        return bad

    def _blob_files(self) -> Iterator[Path]:
        for shard in self.root.iterdir():
            if shard.is_dir() and re.fullmatch(r"[0-9a-f]{2}", shard.name):
                for p in shard.iterdir():
                    if _HEX.fullmatch(p.name) and p.name[:2] == shard.name:
                        yield p

    def rebuild_index(self, keep_existing: bool = False) -> int:
        """Index every blob file on disk whose content matches its name; returns how many."""
        count = 0
        for p in self._blob_files():
            h = p.name
            if keep_existing and self.has(h):
                continue
            data = p.read_bytes()
            if not _named(data, h):
                self._count_corrupt()
                p.unlink(missing_ok=True)
                p.with_suffix(".refs").unlink(missing_ok=True)
                continue
            self.index.index_blob(h, len(data), p.stat().st_mtime, self._read_refs(p))
            count += 1
        return count

"""The SQLite index of a node's fragment store: the blobs it holds and who references them.

Only an index: the fragment files and their refs hints (fragstore.py) are the truth, so it runs
with synchronous=NORMAL, and one that fails its check is set aside (``index.corrupt-<time>``)
and the store rebuilds it from the files. One connection behind a lock: callers are threads.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

from storage.durable import open_sqlite, sqlite_tx

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (hash TEXT PRIMARY KEY, size INTEGER NOT NULL,
                                  created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS refs (hash TEXT NOT NULL, file TEXT NOT NULL, idx INTEGER NOT NULL,
                                 PRIMARY KEY (hash, file, idx));
CREATE INDEX IF NOT EXISTS refs_file ON refs (file);
"""


class FragmentIndex:
    """``fresh`` after opening: the index is new (or was corrupt): rebuild it from the files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.fresh = not path.exists()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError:
            path.replace(path.with_name(f"index.corrupt-{int(time.time())}"))
            for side in ("-wal", "-shm"):
                Path(str(path) + side).unlink(missing_ok=True)
            self._db, self.fresh = self._open(), True

    def _open(self) -> sqlite3.Connection:
        # NORMAL: the index can be rebuilt from the fragment files
        return open_sqlite(self.path, _SCHEMA, synchronous="NORMAL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite_tx(self._db, self._lock)

    def refs(self, h: str) -> list[tuple[str, int]]:
        with self._lock:
            rows = self._db.execute("SELECT file, idx FROM refs WHERE hash=? ORDER BY 1, 2", (h,))
            return [(str(f), int(i)) for f, i in rows]

    def has(self, h: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM blobs WHERE hash=?", (h,)).fetchone() is not None

    def add(self, h: str, size: int, file: str, index: int) -> bool:
        """Index the blob (once) and the reference; whether the reference is new."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?)", (h, size, time.time()))
            added = db.execute("INSERT OR IGNORE INTO refs VALUES (?, ?, ?)", (h, file, index))
        return bool(added.rowcount)

    def forget(self, h: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM blobs WHERE hash=?", (h,))
            db.execute("DELETE FROM refs WHERE hash=?", (h,))

    def drop_refs(self, h: str, file: str, index: int | None) -> tuple[int, bool]:
        """Drop ``file``'s references to h (all of them, or the one at ``index``): (how many
        went, whether any reference is left)."""
        where = "hash=? AND file=?" + ("" if index is None else " AND idx=?")
        args = (h, file) if index is None else (h, file, index)
        with self._tx() as db:
            dropped = db.execute(f"DELETE FROM refs WHERE {where}", args).rowcount
            left = db.execute("SELECT 1 FROM refs WHERE hash=?", (h,)).fetchone()
        return dropped, left is not None

    def blobs(self, file: str | None = None) -> list[tuple[str, int, float]]:
        """(hash, size, created) of every blob, or of those ``file`` references."""
        with self._lock:
            if file is None:
                rows = self._db.execute("SELECT hash, size, created FROM blobs ORDER BY hash")
            else:
                rows = self._db.execute(
                    "SELECT DISTINCT b.hash, b.size, b.created FROM blobs b JOIN refs r "
                    "ON r.hash = b.hash WHERE r.file=? ORDER BY b.hash",
                    (file,),
                )
            return rows.fetchall()

    def stats(self) -> tuple[int, int]:
        with self._lock:
            n, total = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs"
            ).fetchone()
        return int(n), int(total)

    def index_blob(self, h: str, size: int, mtime: float, refs: list[tuple[str, int]]) -> None:
        """Index a blob found on disk with the references its hints give."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO blobs VALUES (?, ?, ?)", (h, size, mtime))
            db.executemany("INSERT OR IGNORE INTO refs VALUES (?, ?, ?)",
                           [(h, f, i) for f, i in refs])

"""Crash-safe file writes: temp file → fsync → rename → fsync of the directory.

The directory fsync is what makes the rename itself durable; without it a crash can leave the
old file (or none) in place even though write() and fsync() returned.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from storage import direct_io

_SQLITE_FULL = 13


def local_failure(exc: BaseException) -> tuple[bool, str] | None:
    """(disk full?, a one-line message) when ``exc`` is this node's own disk or database
    failing — full → RESOURCE_EXHAUSTED, anything else → UNAVAILABLE for the servicers —
    or None when it is not (a refused connection is a peer's problem, not the disk's)."""
    if isinstance(exc, sqlite3.Error):
        full = getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL or "disk is full" in str(exc)
        what, detail = "database", str(exc)
    elif isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        what, detail = "storage", exc.strerror or str(exc)
    else:
        return None
    head = "this node's disk is full" if full else f"this node's {what} failed"
    return full, f"{head} ({detail}); try another node or free space"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | bytearray | memoryview, durable: bool = True,
                 tmp: Path | None = None) -> None:
    """Replace ``path`` with ``data`` all at once; ``durable`` also survives a power cut.

    ``tmp``: an existing file on the same filesystem to write and rename (storage/spares.py);
    by default a new temp file beside ``path``.
    """
    if tmp is None:
        tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}")
    try:
        if not (durable and direct_io.write_durable(tmp, data)):
            with open(tmp, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if durable:
        fsync_dir(path.parent)


def open_sqlite(path: Path, schema: str, *, synchronous: str) -> sqlite3.Connection:
    """A checked WAL database with ``schema`` applied; a corrupt file raises DatabaseError
    (the caller decides whether to rebuild). ``synchronous`` is FULL where a commit must be on
    disk when it returns, NORMAL where the data can be rebuilt."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError(f"{path} failed quick_check")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.executescript(schema)
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


@contextlib.contextmanager
def sqlite_tx(db: sqlite3.Connection, lock: threading.Lock) -> Iterator[sqlite3.Connection]:
    """An immediate transaction under ``lock``: committed on leaving the block (durably when the
    connection runs with synchronous=FULL), rolled back on any exception."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

"""The half of a replica's version store that a peer's calls drive: loading a file's set and
adding a large batch without holding the event loop (storage/versions/precheck.py checks the
signatures on worker threads; this adds the records in steps, writing each step's).

A mixin of VersionStore (store.py), which owns the connection, the lock and the sets.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import TYPE_CHECKING

from proto import versions_pb2
from storage.versions.batch import Added
from storage.versions.precheck import Prepared, prepare
from storage.versions.records import encode, grant_id, record_id
from storage.versions.vset import AddResult, VersionSet


class PeerIngest:
    """``load`` and ``ingest_stepwise`` over VersionStore's state."""

    _lock: threading.RLock
    _db: sqlite3.Connection
    _sets: dict[bytes, VersionSet]

    if TYPE_CHECKING:
        def get(self, file_id: bytes, keep: bool = True) -> VersionSet: ...

    async def load(self, file_id: bytes) -> None:
        """``get``'s first load with the records' signatures checked on worker threads
        (precheck.py): a peer naming a file of a long history after a restart froze the loop
        for its whole re-verification (100,000 records: ~7 s)."""
        if file_id in self._sets:
            return
        grants, records = await asyncio.to_thread(self._rows, file_id)
        if not grants and not records:
            return
        batch = await prepare(grants, records, at_ms=2**62)
        with self._lock:
            if file_id not in self._sets:
                vs = VersionSet(file_id)
                vs.add_many(batch.grants, batch.records, at_ms=2**62, trusted=True,
                            checked=batch.checked)
                self._sets[file_id] = vs

    def _rows(self, file_id: bytes) -> tuple[list[bytes], list[bytes]]:
        with self._lock:
            return ([bytes(r[0]) for r in self._db.execute(
                        "SELECT body FROM grants WHERE file_id=?", (file_id,))],
                    [bytes(r[0]) for r in self._db.execute(
                        "SELECT body FROM records WHERE file_id=?", (file_id,))])

    async def ingest_stepwise(self, file_id: bytes, batch: Prepared) -> AddResult:
        """``ingest_prepared`` giving the event loop a turn every batch.STEP records (a peer's
        large push: ~15-20 µs a record even with its signatures checked already), each
        step's new records written as it ends. The set is shared from the start, so
        concurrent ingests of a new file meet in one set; each step holds the lock (reserve
        runs on a thread)."""
        with self._lock:
            vs = self._sets.setdefault(file_id, self.get(file_id, keep=False))
        result = AddResult()
        steps = vs.add_steps(batch, result)
        try:
            while True:
                with self._lock:
                    new = next(steps, None)
                    if new is None:
                        break
                    self._write(file_id, new)
                await asyncio.sleep(0)
        finally:
            with self._lock:
                if not vs.record_ids() and not vs.grant_ids() \
                        and self._sets.get(file_id) is vs:
                    del self._sets[file_id]         # all refused: not kept (as ingest_bytes)
        return result

    def _write(self, file_id: bytes, new: Added) -> None:
        rows_r = [(file_id, record_id(m), encode(m)) for m in new
                  if isinstance(m, versions_pb2.VersionRecord)]
        rows_g = [(file_id, grant_id(m), encode(m)) for m in new
                  if isinstance(m, versions_pb2.GrantRecord)]
        if rows_r or rows_g:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR IGNORE INTO records VALUES (?,?,?)", rows_r)
                self._db.executemany("INSERT OR IGNORE INTO grants VALUES (?,?,?)", rows_g)

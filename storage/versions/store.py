"""A replica's version records on disk: SQLite (WAL) in the data dir.

Only records and grants that passed VersionSet.add are written, so a restart re-reads and
re-verifies a set it already trusted (a file edited on disk is re-checked, not believed).
Besides them the store keeps, per (file, writer), the highest counter this node has signed with
(persisted before the record leaves the node, so a crash never makes an honest writer reuse a
counter: store_writes.py), and per file the highest vector this node has seen (so a replica
that withholds newer versions is noticed after a restart too).

Thread-safe (one connection behind a lock); call it from asyncio through asyncio.to_thread or
directly for these small writes.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from proto import versions_pb2
from storage.versions.precheck import Prepared, prepare_now
from storage.versions.records import (
    Vector,
    encode,
    grant_id,
    record_id,
    vector_of,
)
from storage.versions.store_async import PeerIngest
from storage.versions.store_writes import OwnWrites
from storage.versions.vset import AddResult, VersionSet

DB_NAME = "versions.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (file_id BLOB NOT NULL, id BLOB NOT NULL, body BLOB NOT NULL,
                                    PRIMARY KEY (file_id, id));
CREATE TABLE IF NOT EXISTS grants (file_id BLOB NOT NULL, id BLOB NOT NULL, body BLOB NOT NULL,
                                   PRIMARY KEY (file_id, id));
CREATE TABLE IF NOT EXISTS counters (file_id BLOB NOT NULL, writer BLOB NOT NULL,
                                     counter INTEGER NOT NULL, PRIMARY KEY (file_id, writer));
CREATE TABLE IF NOT EXISTS seen (file_id BLOB PRIMARY KEY, vector BLOB NOT NULL);
"""


class VersionStore(PeerIngest, OwnWrites):
    """Persistent VersionSets of every file this node replicates (or writes)."""

    def __init__(self, data_dir: Path, *, durable: bool = True) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DB_NAME
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # Records received from peers exist elsewhere too: WAL + synchronous=NORMAL (safe
        # across a process crash; a power cut may drop the last ones, which anti-entropy brings
        # back). What this node signs itself is committed with synchronous=FULL
        # (store_writes.py). durable=False (tests): OFF throughout.
        self.durable = durable
        self._db.execute(f"PRAGMA synchronous={'NORMAL' if durable else 'OFF'}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._sets: dict[bytes, VersionSet] = {}
        self._seen: dict[bytes, Vector] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def files(self) -> list[bytes]:
        with self._lock:
            rows = self._db.execute(
                "SELECT file_id FROM records UNION SELECT file_id FROM grants").fetchall()
        return sorted(bytes(r[0]) for r in rows)

    def get(self, file_id: bytes, keep: bool = True) -> VersionSet:
        """The file's set (loaded from disk and re-verified on first use; may be empty).
        ``keep=False`` (a peer's read of any file_id it names): an empty set is not kept in
        memory, so file_ids nobody stored anything under cannot grow it without bound."""
        with self._lock:
            vs = self._sets.get(file_id)
            if vs is not None:
                return vs
            grants = [versions_pb2.GrantRecord.FromString(bytes(r[0])) for r in self._db.execute(
                "SELECT body FROM grants WHERE file_id=?", (file_id,))]
            records = [versions_pb2.VersionRecord.FromString(bytes(r[0])) for r in self._db.execute(
                "SELECT body FROM records WHERE file_id=?", (file_id,))]
            vs = VersionSet(file_id)
            vs.add_many(grants, records, at_ms=2**62, trusted=True)
            if keep or grants or records:
                self._sets[file_id] = vs
            return vs

    def _persist_new(self, vs: VersionSet, before_records: set[bytes],
                     before_grants: set[bytes]) -> None:
        rows_r = [(vs.file_id, vid, encode(vs.get(vid).record))  # type: ignore[union-attr]
                  for vid in vs.record_ids() - before_records]
        by_id = {grant_id(g): g for g in vs.grants()}
        rows_g = [(vs.file_id, gid, encode(by_id[gid])) for gid in vs.grant_ids() - before_grants]
        if not rows_r and not rows_g:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO records VALUES (?,?,?)", rows_r)
            self._db.executemany("INSERT OR IGNORE INTO grants VALUES (?,?,?)", rows_g)

    def ingest(self, file_id: bytes, grants: list[versions_pb2.GrantRecord],
               records: list[versions_pb2.VersionRecord]) -> AddResult:
        """Verify and add; what was accepted is on disk when this returns."""
        with self._lock:
            vs = self.get(file_id)
            before_r, before_g = vs.record_ids(), vs.grant_ids()
            result = vs.add_many(grants, records)
            self._persist_new(vs, before_r, before_g)
            return result

    def ingest_bytes(self, file_id: bytes, grants: list[bytes], records: list[bytes]
                     ) -> AddResult:
        """``ingest`` for a peer's push: a set that stays empty (all refused) is not kept."""
        return self.ingest_prepared(file_id, prepare_now(grants, records))

    def ingest_prepared(self, file_id: bytes, batch: Prepared) -> AddResult:
        """``ingest_bytes`` of a batch precheck.py decoded (and checked, if large)."""
        with self._lock:
            vs = self.get(file_id, keep=False)
            before_r, before_g = vs.record_ids(), vs.grant_ids()
            result = vs.add_prepared(batch)
            self._persist_new(vs, before_r, before_g)
            if vs.record_ids() or vs.grant_ids():
                self._sets.setdefault(file_id, vs)
            return result

    def add(self, record: versions_pb2.VersionRecord) -> bool:
        """Add one record (raises the rule it breaks); True if new."""
        with self._lock:
            vs = self.get(record.file.file_id)
            new = vs.add(record)
            if new:
                with self._db:
                    self._db.execute("INSERT OR IGNORE INTO records VALUES (?,?,?)",
                                     (vs.file_id, record_id(record), encode(record)))
            return new

    def add_grant(self, grant: versions_pb2.GrantRecord) -> bool:
        with self._lock:
            vs = self.get(grant.file.file_id)
            new = vs.add_grant(grant)
            if new:
                with self._fsynced(), self._db:
                    self._db.execute("INSERT OR IGNORE INTO grants VALUES (?,?,?)",
                                     (vs.file_id, grant_id(grant), encode(grant)))
            return new

    # -- highest vector seen ---------------------------------------------------------------
    def seen(self, file_id: bytes) -> Vector:
        cached = self._seen.get(file_id)
        if cached is not None:
            return dict(cached)
        with self._lock:
            row = self._db.execute("SELECT vector FROM seen WHERE file_id=?",
                                   (file_id,)).fetchone()
        if row is None:
            self._seen[file_id] = {}
            return {}
        msg = versions_pb2.GrantRecord.FromString(bytes(row[0]))   # reuse its vector field
        vector = vector_of(msg.vector)
        self._seen[file_id] = vector
        return dict(vector)

    def note_seen(self, file_id: bytes, vector: Vector) -> None:
        from storage.versions.records import vector_entries, vmax
        with self._lock:
            old = self.seen(file_id)
            merged = vmax([old, vector])
            if merged == old:
                return
            self._seen[file_id] = merged
            body = versions_pb2.GrantRecord(vector=vector_entries(merged)).SerializeToString(
                deterministic=True)
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO seen VALUES (?,?)", (file_id, body))

"""The half of a replica's version store that this node's own writers drive: a writer's next
counter is persisted (fsync) before any record signed with it leaves the node, so a crash never
makes an honest writer reuse a counter (which would be an equivocation).

A mixin of VersionStore (store.py), which owns the connection, the lock and the sets.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mesh.identity import Identity
from proto import versions_pb2
from storage.versions.records import Vector, encode, record_id, sign_version, writer_id
from storage.versions.vset import VersionSet


class OwnWrites:
    """``reserve``/``sign``/``commit``, ``revise`` and the writer counters over VersionStore's
    state."""

    _lock: threading.RLock
    _db: sqlite3.Connection
    durable: bool

    if TYPE_CHECKING:
        def get(self, file_id: bytes, keep: bool = True) -> VersionSet: ...

    def reserve(self, writer: Identity, binding: versions_pb2.FileBinding,
                parents: list[bytes]) -> Vector:
        """The vector of ``writer``'s next version on ``parents``, its counter durably
        persisted (fsync) before this returns: whatever happens to the record signed with it
        later, this node never signs another record with that counter."""
        with self._lock:
            vs = self.get(binding.file_id)
            vs.bind(binding)
            me = writer_id(writer.public_key)
            vector = vs.next_vector(writer.public_key, parents,
                                    floor=self.counter(binding.file_id, me))
            vs.authorize(writer.public_key, vector)
            with self._fsynced(), self._db:
                self._db.execute(
                    "INSERT INTO counters VALUES (?,?,?) ON CONFLICT (file_id, writer) "
                    "DO UPDATE SET counter=max(counter, excluded.counter)",
                    (binding.file_id, me, vector[me]))
            return vector

    def sign(self, writer: Identity, binding: versions_pb2.FileBinding, cid: str,
             parents: list[bytes], vector: Vector, *, size: int = 0,
             content_ref: bytes = b"") -> versions_pb2.VersionRecord:
        """Sign a version with a vector ``reserve`` returned and add it to the set in memory
        (peers may pull it from now on); ``commit`` writes it to disk."""
        with self._lock:
            vs = self.get(binding.file_id)
            me = writer_id(writer.public_key)
            if vector.get(me, 0) > self.counter(binding.file_id, me):
                raise ValueError("sign a version only with a vector reserve() returned")
            record = sign_version(writer, binding, cid, vector, parents, size=size,
                                  content_ref=content_ref)
            vs.add(record)
            return record

    def commit(self, record: versions_pb2.VersionRecord) -> None:
        """Write a record this node signed (fsync before returning)."""
        with self._lock, self._fsynced(), self._db:
            self._db.execute("INSERT OR IGNORE INTO records VALUES (?,?,?)",
                             (record.file.file_id, record_id(record), encode(record)))

    def revise(self, writer: Identity, binding: versions_pb2.FileBinding, cid: str,
               parents: list[bytes] | None = None, *, size: int = 0,
               content_ref: bytes = b"") -> versions_pb2.VersionRecord:
        """Sign and add a new version by ``writer`` on ``parents`` (default: every head).

        The record and the writer's counter are committed together before the record is sent
        anywhere: a crash before the commit loses a record nobody has seen, so reusing its
        counter later is no equivocation. (The node's Revise instead reserves the counter
        while the content is stored, then commits the record while it is replicated.)
        """
        with self._lock:
            vs = self.get(binding.file_id)
            vs.bind(binding)
            if parents is None:
                parents = [h.id for h in vs.heads()]
            me = writer_id(writer.public_key)
            vector = vs.next_vector(writer.public_key, parents,
                                    floor=self.counter(binding.file_id, me))
            vs.authorize(writer.public_key, vector)
            record = sign_version(writer, binding, cid, vector, parents, size=size,
                                  content_ref=content_ref)
            vs.add(record)
            # record and counter in one durable transaction, before the record leaves the node
            with self._fsynced(), self._db:
                self._db.execute("BEGIN")
                self._db.execute("INSERT OR IGNORE INTO records VALUES (?,?,?)",
                                 (vs.file_id, record_id(record), encode(record)))
                self._db.execute(
                    "INSERT INTO counters VALUES (?,?,?) ON CONFLICT (file_id, writer) "
                    "DO UPDATE SET counter=max(counter, excluded.counter)",
                    (binding.file_id, me, vector[me]))
            return record

    @contextlib.contextmanager
    def _fsynced(self) -> Iterator[None]:
        """Commit the enclosed transaction with synchronous=FULL (fsync before returning)."""
        if not self.durable:
            yield
            return
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")

    # -- writer counters -------------------------------------------------------------------
    def counter(self, file_id: bytes, writer: bytes) -> int:
        with self._lock:
            row = self._db.execute("SELECT counter FROM counters WHERE file_id=? AND writer=?",
                                   (file_id, writer)).fetchone()
        return int(row[0]) if row else 0

    def reserve_counter(self, file_id: bytes, writer: bytes, counter: int) -> None:
        """Persist that ``writer`` signs with ``counter`` before the record is signed."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO counters VALUES (?,?,?) ON CONFLICT (file_id, writer) "
                "DO UPDATE SET counter=max(counter, excluded.counter)", (file_id, writer, counter))

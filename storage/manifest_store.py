"""The on-disk store of manifests (DATA/storage/manifests.sqlite3): the newest per (CID,
file_id), one owner per slot, a byte budget per CID."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from mesh.errors import InvalidArgumentError, PermissionDeniedError, ResourceExhaustedError
from proto import storage_pb2
from storage.cid import is_cid
from storage.manifest_signed import INLINE_VERIFY, Manifest, verify_manifest
from storage.records_db import RecordsDB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifests (cid TEXT NOT NULL, file_id TEXT NOT NULL,
    owner BLOB NOT NULL, created INTEGER NOT NULL, signed BLOB NOT NULL,
    PRIMARY KEY (cid, file_id));
"""
CID_BUDGET = 48 * 2**20     # manifests kept per CID, all of them: one FetchManifests reply
_FILE_ID = re.compile(r"f[0-9a-f]{32}")


class OwnerConflict(PermissionDeniedError):
    """The (CID, file_id) slot here holds a manifest signed by another key."""


class BudgetFull(ResourceExhaustedError):
    """No room in the CID's budget here: ``others`` are the kept manifests (file_id, signer,
    bytes), ``excess`` how many bytes would have to go (record_handlers.py makes room)."""

    def __init__(self, message: str, others: list[tuple[str, bytes, int]], excess: int) -> None:
        super().__init__(message)
        self.others = others
        self.excess = excess


class ManifestStore:
    """Manifests on disk (DATA/storage/manifests.sqlite3, storage/records_db.py), the newest
    per (CID, file_id).

    A newer manifest for the same (CID, file_id) and owner replaces the older one (a Grant, a
    corrected placement); one signed by another owner than the kept one is refused. The
    manifests kept for one CID total at most CID_BUDGET bytes (RESOURCE_EXHAUSTED beyond): they
    all go back in one FetchManifests reply, one channel frame, and any member may sign
    manifests of its own for any CID, so without a budget a few large ones made the reply too
    big to send and the CID's other manifests unreadable. Manifests of the older layout
    (DATA/storage/manifests/<cid>/<file_id>.mf) are imported at start.
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        base = Path(data_dir) / "storage"
        self.db = RecordsDB(base / "manifests.sqlite3", _SCHEMA)
        self._import_files(base / "manifests")

    def _import_files(self, root: Path) -> None:
        if not root.is_dir():
            return
        for path in sorted(root.glob("*/*.mf")):
            with contextlib.suppress(InvalidArgumentError, PermissionDeniedError,
                                     ResourceExhaustedError, DecodeError, OSError):
                self.put(storage_pb2.SignedManifest.FromString(path.read_bytes()))
        root.rename(root.with_name(f"manifests.imported-{int(time.time())}"))

    def put(self, signed: storage_pb2.SignedManifest, *, owner_proven: bool = False,
            evict: Collection[tuple[str, bytes]] = ()) -> Manifest:
        """Verify and keep a manifest (idempotent); InvalidArgumentError if it is not valid,
        OwnerConflict if another key's manifest holds its (CID, file_id) — unless
        ``owner_proven`` (its signer is the key the file_id's document record names), which
        replaces that one; BudgetFull past CID_BUDGET. ``evict``: (file_id, signer) of this
        CID's kept manifests to drop first (only with ``owner_proven``; signers the caller
        found not to own their file_ids)."""
        manifest = verify_manifest(signed)
        if not _FILE_ID.fullmatch(manifest.file_id):
            raise InvalidArgumentError("manifest has an invalid file_id")
        body = manifest.body
        raw = signed.SerializeToString(deterministic=True)
        with self.db.tx() as db:
            row = db.execute("SELECT owner, created, signed FROM manifests WHERE cid=? AND "
                             "file_id=?", (body.cid, body.file_id)).fetchone()
            if row is not None and bytes(row[0]) != body.owner_key:
                if not owner_proven:
                    raise OwnerConflict(f"{body.file_id} belongs to another owner")
                row = None                       # a squatter's: replaced below
            if row is not None:
                if int(row[1]) >= body.created_ms:
                    return _parsed(bytes(row[2]), manifest)
            if owner_proven:
                db.executemany("DELETE FROM manifests WHERE cid=? AND file_id=? AND owner=? "
                               "AND file_id<>?", [(body.cid, f, o, body.file_id)
                                                  for f, o in evict])
            where = ("FROM manifests WHERE cid=? AND file_id<>?", (body.cid, body.file_id))
            (held,) = db.execute("SELECT COALESCE(SUM(LENGTH(signed)), 0) " + where[0],
                                 where[1]).fetchone()
            if int(held) + len(raw) > CID_BUDGET:
                others = [(str(f), bytes(o), int(n)) for f, o, n in db.execute(
                    "SELECT file_id, owner, LENGTH(signed) " + where[0], where[1])]
                raise BudgetFull(f"{body.cid} has {held} bytes of manifests here: no room for "
                                 f"{len(raw)} more", others, int(held) + len(raw) - CID_BUDGET)
            db.execute("INSERT OR REPLACE INTO manifests VALUES (?, ?, ?, ?, ?)",
                       (body.cid, body.file_id, body.owner_key, body.created_ms, raw))
        return manifest

    _GET = "SELECT file_id, signed FROM manifests WHERE cid=? ORDER BY file_id"

    def get(self, cid: str) -> list[storage_pb2.SignedManifest]:
        """Every manifest kept for the CID that still verifies (rotted rows are dropped)."""
        if not is_cid(cid):
            raise InvalidArgumentError(f"not a CID: {cid!r:.80}")
        out = self._verified(cid, self.db.query(self._GET, (cid,)))
        assert out is not None                 # rotted rows were dropped, not bailed out on
        return out

    def get_now(self, cid: str) -> list[storage_pb2.SignedManifest] | None:
        """``get`` without waiting: None if the database is busy or the answer is large (call
        ``get`` on a thread)."""
        if not is_cid(cid):
            raise InvalidArgumentError(f"not a CID: {cid!r:.80}")
        rows = self.db.query_now(self._GET, (cid,))
        if rows is None or len(rows) > INLINE_VERIFY or sum(len(r[1]) for r in rows) > 2**20:
            return None      # busy, or too many signatures to check on the event loop
        return self._verified(cid, rows, drop_rotted=False)

    def _verified(self, cid: str, rows: list[tuple[Any, ...]], drop_rotted: bool = True
                  ) -> list[storage_pb2.SignedManifest] | None:
        out = []
        for file_id, raw in rows:
            try:
                manifest = verify_manifest(storage_pb2.SignedManifest.FromString(bytes(raw)), cid)
                if manifest.file_id != file_id:
                    raise InvalidArgumentError("manifest stored under another file_id")
            except (InvalidArgumentError, DecodeError):
                if not drop_rotted:
                    return None        # deleting is a commit: the caller retries on a thread
                with contextlib.suppress(sqlite3.Error), self.db.tx() as db:   # rotted: missing
                    db.execute("DELETE FROM manifests WHERE cid=? AND file_id=?", (cid, file_id))
                continue
            out.append(manifest.signed)
        return out

    def cids(self) -> list[str]:
        return [str(c) for (c,) in self.db.query("SELECT DISTINCT cid FROM manifests ORDER BY 1")]

    def close(self) -> None:
        self.db.close()


def _parsed(raw: bytes, fallback: Manifest) -> Manifest:
    """The kept manifest (it was verified when stored); ``fallback`` if its row rotted."""
    try:
        return verify_manifest(storage_pb2.SignedManifest.FromString(raw), fallback.cid)
    except (InvalidArgumentError, DecodeError):
        return fallback

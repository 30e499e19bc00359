"""Manifests: the owner-signed description of one stored file, and their on-disk store.

A manifest (``ManifestBody`` in proto/storage.proto) carries the CID, size, k, m, stripe size,
codec parameters, the file key sealed to the owner and readers (or in clear for public files),
the filename sealed with the file key, and per stripe the hash (storage/fraghash.py) and holder
of every fragment.
(The manifest's file_id is bound to the owner only through the document record; a replica
keeps the first owner it saw for a (CID, file_id) and the newest manifest of that owner, until
the owner the document record names shows up: storage/record_handlers.py.)
It is signed by the owner (domain-separated Ed25519) and kept on the m+1 XOR-closest peers to
``manifest_key(cid)``. Readers verify the signature and that the body names the CID they asked
for before trusting anything in it. Several manifests may exist for one CID (one per owner and
upload); the store keeps the newest per file_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
from google.protobuf.message import DecodeError

from mesh.errors import InvalidArgumentError, PermissionDeniedError, ResourceExhaustedError
from mesh.identity import verify_signature
from proto import storage_pb2
from storage.cid import is_cid
from storage.codec import Codec
from storage.crypto import STRIPE_OVERHEAD, CryptoError, open_sealed_key
from storage.records_db import RecordsDB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifests (cid TEXT NOT NULL, file_id TEXT NOT NULL,
    owner BLOB NOT NULL, created INTEGER NOT NULL, signed BLOB NOT NULL,
    PRIMARY KEY (cid, file_id));
"""
FORMAT = 1
NO_HOLDER = 0xFFFFFFFF
MAX_MANIFEST_BYTES = 32 * 2**20
CID_BUDGET = 48 * 2**20     # manifests kept per CID, all of them: one FetchManifests reply
INLINE_LIMIT = 65536       # largest inline file a reader accepts (pushers inline far less)
INLINE_VERIFY = 8          # manifests (of at most 1 MiB together) verified on the event loop
_DOMAIN = b"tw-mesh/manifest/v1\x00"
_FILE_ID = re.compile(r"f[0-9a-f]{32}")


def manifest_key(cid: str) -> bytes:
    """The 20-byte DHT key whose closest peers keep a CID's manifests."""
    return hashlib.blake2b(cid.encode(), digest_size=20, person=b"tw-mesh-manifest").digest()


def sign_manifest(body: storage_pb2.ManifestBody,
                  owner: nacl.signing.SigningKey) -> storage_pb2.SignedManifest:
    if body.owner_key != bytes(owner.verify_key):
        raise ValueError("manifest owner_key is not the signer's key")
    raw = body.SerializeToString(deterministic=True)
    return storage_pb2.SignedManifest(body=raw, signature=owner.sign(_DOMAIN + raw).signature)


@dataclass(frozen=True)
class Manifest:
    """A verified manifest: its body plus the signed bytes it came from."""

    body: storage_pb2.ManifestBody
    signed: storage_pb2.SignedManifest

    @property
    def cid(self) -> str:
        return self.body.cid

    @property
    def file_id(self) -> str:
        return self.body.file_id

    def codec(self) -> Codec:
        b = self.body
        return Codec.from_params({"format": b.codec_format, "k": b.k, "m": b.m,
                                  "packet_size": b.packet_size, "matrix": b.matrix})

    def stripe_len(self, index: int) -> int:
        """Plaintext bytes in stripe ``index``."""
        b = self.body
        return int(min(b.stripe_size, b.size - index * b.stripe_size))

    def readable_by(self, public_key: bytes) -> bool:
        return bool(self.body.public_key) or any(k.recipient == public_key for k in self.body.keys)

    def file_key(self, user: nacl.signing.SigningKey | None) -> bytes | None:
        """The file key if public or sealed to ``user``; None if this user cannot read it."""
        if self.body.public_key:
            return bytes(self.body.public_key)
        if user is None:
            return None
        me = bytes(user.verify_key)
        for sealed in self.body.keys:
            if sealed.recipient == me:
                with contextlib.suppress(CryptoError):
                    return open_sealed_key(user, sealed.sealed)
        return None

    def holder_of(self, stripe: int, index: int) -> bytes | None:
        h = self.body.stripes[stripe].fragments[index].holder
        return None if h == NO_HOLDER or h >= len(self.body.holders) else self.body.holders[h]


def verify_manifest(signed: storage_pb2.SignedManifest, cid: str | None = None) -> Manifest:
    """Check signature, shape and (if given) the CID binding; InvalidArgumentError otherwise."""
    if len(signed.body) > MAX_MANIFEST_BYTES:
        raise InvalidArgumentError("manifest too large")
    body = storage_pb2.ManifestBody()
    try:
        body.ParseFromString(signed.body)
    except DecodeError as exc:
        raise InvalidArgumentError("manifest body is not a ManifestBody") from exc
    if body.format != FORMAT:
        raise InvalidArgumentError(f"unsupported manifest format {body.format}")
    if len(body.owner_key) != 32 or not verify_signature(body.owner_key, _DOMAIN + signed.body,
                                                         signed.signature):
        raise InvalidArgumentError("manifest signature does not verify")
    if cid is not None and body.cid != cid:
        raise InvalidArgumentError(f"manifest is for {body.cid!r}, not {cid!r}")
    if not is_cid(body.cid):
        raise InvalidArgumentError("manifest names an invalid CID")
    manifest = Manifest(body, signed)
    try:
        codec = manifest.codec()
    except ValueError as exc:
        raise InvalidArgumentError(f"manifest codec parameters invalid: {exc}") from exc
    if body.stripe_size < 1:
        raise InvalidArgumentError("manifest stripe_size must be >= 1")
    if body.inline:
        if body.size > INLINE_LIMIT or len(body.inline) != body.size + STRIPE_OVERHEAD \
                or body.stripes:
            raise InvalidArgumentError("inline manifest has a wrong size or also has stripes")
        return manifest
    want = -(-body.size // body.stripe_size)
    if len(body.stripes) != want:
        raise InvalidArgumentError(f"manifest has {len(body.stripes)} stripes, expected {want}")
    for s in body.stripes:
        if len(s.fragments) != codec.n or any(len(f.hash) != 32 for f in s.fragments):
            raise InvalidArgumentError("manifest stripe has a wrong number of fragments or hashes")
    return manifest


def _verify_some(answer: Sequence[storage_pb2.SignedManifest], cid: str | None
                 ) -> list[Manifest | None]:
    out: list[Manifest | None] = []
    for signed in answer:
        try:
            out.append(verify_manifest(signed, cid))
        except InvalidArgumentError:
            out.append(None)
    return out


async def verify_answer(answer: Sequence[storage_pb2.SignedManifest], cid: str | None = None
                        ) -> list[Manifest | None]:
    """``verify_manifest`` of each (None: it does not verify), on worker threads, 64 per hop,
    unless the answer is small: a FetchManifests answer may hold a CID's whole budget (48 MiB:
    ~200,000 small manifests, ~70 µs of Ed25519 each), which froze the reader's loop."""
    if len(answer) <= INLINE_VERIFY and sum(len(s.body) for s in answer) <= 2**20:
        return _verify_some(answer, cid)
    out: list[Manifest | None] = []
    for i in range(0, len(answer), 64):
        out += await asyncio.to_thread(_verify_some, answer[i:i + 64], cid)
    return out


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

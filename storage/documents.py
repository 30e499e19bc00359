"""Minimal documents: a file_id names a document whose current content is one CID.

Interface (the versions work in storage/versions/ replaces or extends this):
    docs = Documents(network, replicas=3)
    file_id, nonce = new_file_id(owner_public_key)
    await docs.create(file_id, cid, owner, nonce)  # owner: SigningKey; returns replicas stored
    await docs.current(file_id) -> cid         # NotFoundError if no replica knows it
A record is ``SignedDocument`` (proto/storage.proto): (file_id, cid, owner key, time) signed by
the owner, kept on the ``replicas`` XOR-closest peers to ``document_key(file_id)``. A replica
keeps the newest record per file_id and refuses one signed by another owner than the record
it already holds. A file_id is a hash of (owner key, nonce) and every record carries the nonce,
so only the owner can sign records for it: nobody else can repoint a file_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

import nacl.signing
from google.protobuf.message import DecodeError

from mesh.errors import InvalidArgumentError, MeshError, NotFoundError, PermissionDeniedError
from mesh.identity import verify_signature
from proto import storage_pb2
from storage.cid import is_cid
from storage.records_db import RecordsDB
from storage.tail import read_tail

if TYPE_CHECKING:
    from storage.placement import Network

_DOMAIN = b"tw-mesh/document/v1\x00"
_FILE_ID = re.compile(r"f[0-9a-f]{32}")
MAX_DOCUMENT_BYTES = 4096
_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (file_id TEXT PRIMARY KEY, owner BLOB NOT NULL,
    time_ms INTEGER NOT NULL, signed BLOB NOT NULL);
"""


def file_id_for(owner_key: bytes, nonce: bytes) -> str:
    """'f' + 32 hex digits binding the id to its owner: only that key can sign records for it."""
    digest = hashlib.blake2b(owner_key + nonce, digest_size=16, person=b"tw-mesh-file-id")
    return "f" + digest.hexdigest()


def new_file_id(owner_key: bytes) -> tuple[str, bytes]:
    """A fresh, unguessable file_id for one upload by owner, and the nonce that proves it."""
    nonce = secrets.token_bytes(16)
    return file_id_for(owner_key, nonce), nonce


def is_file_id(s: object) -> bool:
    return isinstance(s, str) and _FILE_ID.fullmatch(s) is not None


def document_key(file_id: str) -> bytes:
    return hashlib.blake2b(file_id.encode(), digest_size=20, person=b"tw-mesh-document").digest()


def sign_document(file_id: str, nonce: bytes, cid: str, owner: nacl.signing.SigningKey,
                  time_ms: int | None = None) -> storage_pb2.SignedDocument:
    body = storage_pb2.DocumentBody(file_id=file_id, cid=cid, owner_key=bytes(owner.verify_key),
                                    time_ms=int(time.time() * 1000) if time_ms is None else time_ms,
                                    nonce=nonce)
    raw = body.SerializeToString(deterministic=True)
    return storage_pb2.SignedDocument(body=raw, signature=owner.sign(_DOMAIN + raw).signature)


def verify_document(signed: storage_pb2.SignedDocument,
                    file_id: str | None = None) -> storage_pb2.DocumentBody:
    if len(signed.body) > MAX_DOCUMENT_BYTES:
        raise InvalidArgumentError("document record too large")
    body = storage_pb2.DocumentBody()
    try:
        body.ParseFromString(signed.body)
    except DecodeError as exc:
        raise InvalidArgumentError("malformed document record") from exc
    if not verify_signature(body.owner_key, _DOMAIN + signed.body, signed.signature):
        raise InvalidArgumentError("document record signature does not verify")
    if not is_file_id(body.file_id) or not is_cid(body.cid):
        raise InvalidArgumentError("document record has an invalid file_id or CID")
    if file_id_for(body.owner_key, body.nonce) != body.file_id:
        raise InvalidArgumentError("document record's owner does not own its file_id")
    if file_id is not None and body.file_id != file_id:
        raise InvalidArgumentError("document record is for another file_id")
    return body


class DocumentStore:
    """A replica's records on disk (DATA/storage/documents.sqlite3, storage/records_db.py),
    the newest per file_id. Records of the older layout (DATA/storage/documents/<file_id>.doc)
    are imported at start."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        base = Path(data_dir) / "storage"
        self.db = RecordsDB(base / "documents.sqlite3", _SCHEMA)
        old = base / "documents"
        if old.is_dir():
            for path in sorted(old.glob("*.doc")):
                with contextlib.suppress(DecodeError, InvalidArgumentError,
                                         PermissionDeniedError, OSError):
                    self.put(storage_pb2.SignedDocument.FromString(path.read_bytes()))
            old.rename(old.with_name(f"documents.imported-{int(time.time())}"))

    def put(self, signed: storage_pb2.SignedDocument) -> bool:
        """Keep a record if it is newer; True if it is held now (a repeat of the held record
        counts: a hedged store sends it twice). PermissionDeniedError if another owner holds
        the id."""
        body = verify_document(signed)
        raw = signed.SerializeToString(deterministic=True)
        with self.db.tx() as db:
            row = db.execute("SELECT owner, time_ms, signed FROM documents WHERE file_id=?",
                             (body.file_id,)).fetchone()
            if row is not None:
                if bytes(row[0]) != body.owner_key:
                    raise PermissionDeniedError(f"{body.file_id} belongs to another owner")
                if int(row[1]) >= body.time_ms:
                    return bytes(row[2]) == raw
            db.execute("INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?)",
                       (body.file_id, body.owner_key, body.time_ms, raw))
        return True

    def get(self, file_id: str) -> list[storage_pb2.SignedDocument]:
        if not is_file_id(file_id):
            raise InvalidArgumentError(f"not a file_id: {file_id!r:.80}")
        rows = self.db.query("SELECT signed FROM documents WHERE file_id=?", (file_id,))
        if not rows:
            return []
        try:
            signed = storage_pb2.SignedDocument.FromString(bytes(rows[0][0]))
            verify_document(signed, file_id)
        except (DecodeError, InvalidArgumentError):
            with contextlib.suppress(sqlite3.Error), self.db.tx() as db:   # rotted: missing
                db.execute("DELETE FROM documents WHERE file_id=?", (file_id,))
            return []
        return [signed]


class Documents:
    """file_id -> current CID, over the mesh (see module docstring)."""

    def __init__(self, network: Network, replicas: int = 3,
                 counters: dict[str, int] | None = None) -> None:
        self.network = network
        self.replicas = replicas
        self.counters = counters

    async def create(self, file_id: str, cid: str, owner: nacl.signing.SigningKey,
                     nonce: bytes) -> int:
        """Publish (file_id -> cid) signed by owner; returns how many replicas stored it.

        ``nonce`` is the one new_file_id returned with file_id (it proves ownership).
        """
        if not is_file_id(file_id) or not is_cid(cid):
            raise InvalidArgumentError("create needs a file_id and a CID")
        signed = sign_document(file_id, nonce, cid, owner)
        peers = await self.network.closest(document_key(file_id), self.replicas)

        async def one(node_id: bytes) -> bool:
            try:
                await (await self.network.client(node_id)).store_document(signed)
            except MeshError:
                return False
            return True

        return sum(await asyncio.gather(*(one(p) for p in peers)))

    async def record(self, file_id: str) -> storage_pb2.DocumentBody:
        """The newest verified record any replica holds; NotFoundError if none."""
        if not is_file_id(file_id):
            raise InvalidArgumentError(f"not a file_id: {file_id!r:.80}")
        peers = await self.network.closest(document_key(file_id), self.replicas + 2)
        tail = read_tail(self.network, self.counters)   # a frozen replica is left out

        async def one(node_id: bytes) -> list[storage_pb2.SignedDocument]:
            try:
                client = await self.network.client(node_id)
                return await tail.call(node_id, lambda: client.fetch_documents(file_id))
            except MeshError:
                return []

        best: storage_pb2.DocumentBody | None = None
        for found in await asyncio.gather(*(one(p) for p in peers)):
            for signed in found:
                try:
                    body = verify_document(signed, file_id)
                except InvalidArgumentError:
                    continue
                if best is None or body.time_ms > best.time_ms:
                    best = body
        if best is None:
            raise NotFoundError(f"no document {file_id}")
        return best

    async def current(self, file_id: str) -> str:
        return (await self.record(file_id)).cid

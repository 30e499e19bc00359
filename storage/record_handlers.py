"""The signed-record half of the storage peer calls: one node's manifests and document
records (file_id -> CID), stored and served (dispatch and StoreBatch: storage/peer_handlers.py).

Records are small and carry their own signatures, which the stores check (storage/manifest.py,
storage/documents.py), so these handlers only bound the body, keep the reserve, and answer a
failed disk with RESOURCE_EXHAUSTED: the pusher then counts the record missing or asks a spare.
A manifest stored with a document record that is refused still stands.

A replica keeps the first signer it sees for a (CID, file_id) (storage/manifest.py): nothing in
a manifest binds its file_id to its signer, so a member who learned a file_id could claim the
slot on a replica that did not hold the owner's manifest yet (one that became a replica after
churn), and the owner's was refused there for good. Now, on such a conflict only (no cost on
the normal path), the replica asks who owns the file_id (its document record: this node's,
else the document replicas', storage/delete_check.py ``DeleteGuard.owner``) and lets the
owner's manifest replace the squatter's.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable

from mesh.errors import (
    InvalidArgumentError,
    MeshError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from proto import storage_pb2
from storage.capacity import Capacity
from storage.documents import DocumentStore
from storage.manifest import MAX_MANIFEST_BYTES, ManifestStore, OwnerConflict, verify_manifest
from storage.peer_wire import _parse


class RecordHandlers:
    """One node's manifests and document records, served to peers (and its own client)."""

    def __init__(self, manifests: ManifestStore, documents: DocumentStore,
                 capacity: Capacity | None = None,
                 owner_of: Callable[[str], Awaitable[bytes]] | None = None) -> None:
        self.manifests = manifests
        self.documents = documents
        self.capacity = capacity     # None: no reserve (tests of the handlers alone)
        self.owner_of = owner_of     # file_id -> its owner's key (None: conflicts are refused)

    def _make_room(self, size: int) -> None:
        """StorageFull if ``size`` new bytes would eat into the reserve (storage/capacity.py)."""
        if self.capacity is not None:
            self.capacity.check(size)

    async def store_manifest(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.StoreManifestRequest, body, MAX_MANIFEST_BYTES + 8192)

        def put(owner_proven: bool = False) -> bool:
            self._make_room(len(body))
            self.manifests.put(req.manifest, owner_proven=owner_proven)
            if not req.HasField("document"):
                return False
            try:
                self.documents.put(req.document)
            except (InvalidArgumentError, PermissionDeniedError):
                return False         # the manifest stands; the pusher counts the record missing
            return True

        try:
            try:
                doc = await asyncio.to_thread(put)
            except OwnerConflict:
                await self._check_owner(req.manifest)   # the document's owner, or refused
                doc = await asyncio.to_thread(put, True)
        except (OSError, sqlite3.Error) as exc:  # disk full, I/O error: answer; the pusher counts it
            raise ResourceExhaustedError(f"cannot store the manifest here: {exc}") from exc
        return storage_pb2.StoreManifestReply(stored=True, document_stored=doc).SerializeToString()

    async def _check_owner(self, signed: storage_pb2.SignedManifest) -> None:
        """PERMISSION_DENIED unless ``signed``'s signer owns its file_id (module docstring)."""
        body = verify_manifest(signed).body
        refused = PermissionDeniedError(f"{body.file_id} belongs to another owner")
        if self.owner_of is None:
            raise refused
        try:
            owner = await self.owner_of(body.file_id)
        except MeshError as exc:                  # no document record found: first come stays
            raise refused from exc
        if owner != body.owner_key:
            raise refused

    async def fetch_manifests(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.FetchManifestsRequest, body, 1024)
        found = self.manifests.get_now(req.cid)        # a point read: no thread hop if free
        if found is None:
            found = await asyncio.to_thread(self.manifests.get, req.cid)
        return storage_pb2.FetchManifestsReply(manifests=found).SerializeToString()

    async def store_document(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.StoreDocumentRequest, body, 8192)

        def put() -> bool:
            self._make_room(len(body))
            return self.documents.put(req.document)

        try:
            stored = await asyncio.to_thread(put)
        except (OSError, sqlite3.Error) as exc:
            raise ResourceExhaustedError(f"cannot store the document here: {exc}") from exc
        return storage_pb2.StoreDocumentReply(stored=stored).SerializeToString()

    async def fetch_document(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.FetchDocumentRequest, body, 1024)
        found = await asyncio.to_thread(self.documents.get, req.file_id)
        return storage_pb2.FetchDocumentReply(documents=found).SerializeToString()

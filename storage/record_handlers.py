"""The signed-record half of the storage peer calls: one node's manifests and document
records (file_id -> CID), stored and served (dispatch and StoreBatch: storage/peer_handlers.py).

Records are small and carry their own signatures, which the stores check (storage/manifest.py,
storage/documents.py), so these handlers only bound the body, keep the reserve, and answer a
failed disk with RESOURCE_EXHAUSTED: the pusher then counts the record missing or asks a spare.
A manifest stored with a document record that is refused still stands.
"""

from __future__ import annotations

import asyncio
import sqlite3

from mesh.errors import InvalidArgumentError, PermissionDeniedError, ResourceExhaustedError
from proto import storage_pb2
from storage.capacity import Capacity
from storage.documents import DocumentStore
from storage.manifest import MAX_MANIFEST_BYTES, ManifestStore
from storage.peer_wire import _parse


class RecordHandlers:
    """One node's manifests and document records, served to peers (and its own client)."""

    def __init__(self, manifests: ManifestStore, documents: DocumentStore,
                 capacity: Capacity | None = None) -> None:
        self.manifests = manifests
        self.documents = documents
        self.capacity = capacity     # None: no reserve (tests of the handlers alone)

    def _make_room(self, size: int) -> None:
        """StorageFull if ``size`` new bytes would eat into the reserve (storage/capacity.py)."""
        if self.capacity is not None:
            self.capacity.check(size)

    async def store_manifest(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.StoreManifestRequest, body, MAX_MANIFEST_BYTES + 8192)

        def put() -> bool:
            self._make_room(len(body))
            self.manifests.put(req.manifest)
            if not req.HasField("document"):
                return False
            try:
                self.documents.put(req.document)
            except (InvalidArgumentError, PermissionDeniedError):
                return False         # the manifest stands; the pusher counts the record missing
            return True

        try:
            doc = await asyncio.to_thread(put)
        except (OSError, sqlite3.Error) as exc:  # disk full, I/O error: answer; the pusher counts it
            raise ResourceExhaustedError(f"cannot store the manifest here: {exc}") from exc
        return storage_pb2.StoreManifestReply(stored=True, document_stored=doc).SerializeToString()

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

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

A CID's manifest budget (storage/manifest.py) was first come in the same way: a member could
fill it with manifests of its own on such a replica, which then refused the owner's. Now, when
the budget is full, a manifest whose signer owns its file_id makes room by dropping kept ones
whose signers do not own theirs (no document record names them), largest first; an
owner-proven manifest is never dropped. The owner lookups are cached (ownership of a file_id
never changes; "no record" is kept for a minute) and at most MAX_LOOKUPS run per store.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from mesh.errors import (
    InvalidArgumentError,
    MeshError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from proto import storage_pb2
from storage.capacity import Capacity
from storage.documents import DocumentStore, verify_document
from storage.manifest import (
    MAX_MANIFEST_BYTES,
    BudgetFull,
    ManifestStore,
    OwnerConflict,
)
from storage.peer_wire import _parse

MAX_LOOKUPS = 16          # owner lookups one store may cause when the budget is full
_CACHED = 4096            # file_ids whose owner lookups are remembered
_NO_RECORD_S = 60.0       # how long "no document record found" is believed


class RecordHandlers:
    """One node's manifests and document records, served to peers (and its own client)."""

    def __init__(self, manifests: ManifestStore, documents: DocumentStore,
                 capacity: Capacity | None = None,
                 owner_of: Callable[[str], Awaitable[bytes]] | None = None) -> None:
        self.manifests = manifests
        self.documents = documents
        self.capacity = capacity     # None: no reserve (tests of the handlers alone)
        self.owner_of = owner_of     # file_id -> its owner's key (None: conflicts are refused)
        self._owners: OrderedDict[str, tuple[bytes | None, float]] = OrderedDict()
        self.lookups = 0             # owner lookups made (not answered from the cache)

    def _make_room(self, size: int) -> None:
        """StorageFull if ``size`` new bytes would eat into the reserve (storage/capacity.py)."""
        if self.capacity is not None:
            self.capacity.check(size)

    async def store_manifest(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.StoreManifestRequest, body, MAX_MANIFEST_BYTES + 8192)

        def put(owner_proven: bool = False, evict: list[tuple[str, bytes]] | None = None
                ) -> bool:
            self._make_room(len(body))
            self.manifests.put(req.manifest, owner_proven=owner_proven, evict=evict or ())
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
                await self._check_owner(req)   # the document's owner, or refused
                try:
                    doc = await asyncio.to_thread(put, True)
                except BudgetFull as full:
                    doc = await asyncio.to_thread(put, True, await self._unproven(full))
            except BudgetFull as full:
                try:
                    await self._check_owner(req)
                except PermissionDeniedError:
                    raise full from None          # not the owner's: first come, as before
                doc = await asyncio.to_thread(put, True, await self._unproven(full))
        except (OSError, sqlite3.Error) as exc:  # disk full, I/O error: answer; the pusher counts it
            raise ResourceExhaustedError(f"cannot store the manifest here: {exc}") from exc
        return storage_pb2.StoreManifestReply(stored=True, document_stored=doc).SerializeToString()

    async def _owner(self, file_id: str) -> bytes | None:
        """The key ``file_id`` is bound to (None: no document record found), cached."""
        now = time.monotonic()
        hit = self._owners.get(file_id)
        if hit is not None and (hit[0] is not None or now < hit[1]):
            self._owners.move_to_end(file_id)
            return hit[0]
        if self.owner_of is None:
            return None
        self.lookups += 1
        try:
            owner: bytes | None = await self.owner_of(file_id)
        except MeshError:
            owner = None
        self._owners[file_id] = (owner, now + _NO_RECORD_S)
        while len(self._owners) > _CACHED:
            self._owners.popitem(last=False)
        return owner

    async def _check_owner(self, req: storage_pb2.StoreManifestRequest) -> None:
        """PERMISSION_DENIED unless the manifest's signer owns its file_id (module docstring):
        the document record sent with it proves that (a new upload's), else a lookup. The
        manifest was verified by the store that refused it."""
        body = storage_pb2.ManifestBody.FromString(req.manifest.body)
        if req.HasField("document"):
            with contextlib.suppress(InvalidArgumentError):
                doc = verify_document(req.document, body.file_id)
                self._owners[body.file_id] = (bytes(doc.owner_key), 0.0)
        if await self._owner(body.file_id) != body.owner_key:
            raise PermissionDeniedError(f"{body.file_id} belongs to another owner")

    async def _unproven(self, full: BudgetFull) -> list[tuple[str, bytes]]:
        """Kept manifests whose signers do not own their file_ids, largest first, enough to
        make room; ``full`` itself if they are not enough (module docstring)."""
        evict: list[tuple[str, bytes]] = []
        freed, before = 0, self.lookups
        for file_id, signer, size in sorted(full.others, key=lambda o: (-o[2], o[0])):
            if freed >= full.excess or self.lookups - before >= MAX_LOOKUPS:
                break
            if await self._owner(file_id) != signer:
                evict.append((file_id, signer))
                freed += size
        if freed >= full.excess:
            return evict
        raise full

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

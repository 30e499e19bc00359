"""What the versions write path (writer.py) and read path (getter.py) share on one node.

The record store, one lock per file (Revise, Synchronous, Grant, a Get's sync and the
background sync of one file run one at a time), the replica sync, and the storage service's
files and keyring with the version content reader. The last two are
looked up lazily: a node may run without a storage service, and then only the calls that need
content fail (FAILED_PRECONDITION).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mesh.context import MeshContext
from mesh.errors import FailedPreconditionError, MeshError
from mesh.identity import Identity
from proto import versions_pb2
from storage.manifest import Manifest
from storage.versions.reads import ContentReader
from storage.versions.store import VersionStore
from storage.versions.sync import ReplicaSync, SyncResult


class LocalVersions:
    """This node's version records, their replica sync, and the content they name."""

    def __init__(self, ctx: MeshContext, store: VersionStore, replication: ReplicaSync) -> None:
        self.ctx = ctx
        self.store = store
        self.replication = replication
        self._reads: ContentReader | None = None
        self._locks: dict[bytes, asyncio.Lock] = {}

    @property
    def storage(self) -> Any:
        storage = self.ctx.registry.get("storage")
        if storage is None:
            raise FailedPreconditionError("this node has no storage service")
        return storage

    @property
    def reads(self) -> ContentReader:
        if self._reads is None:
            self._reads = ContentReader(self.storage.files)
        return self._reads

    @property
    def manifest_cache_hits(self) -> int:
        """Reads served from a cached manifest (0 before any read: no reader is created)."""
        return self._reads.hits if self._reads is not None else 0

    def lock(self, fid: bytes) -> asyncio.Lock:
        return self._locks.setdefault(fid, asyncio.Lock())

    async def sync(self, fid: bytes, *, persist: bool | None = None,
                   on_digest: Callable[[versions_pb2.Digest], None] | None = None
                   ) -> SyncResult:
        return await self.replication.sync(fid, persist=persist, on_digest=on_digest)

    async def push_records(self, fid: bytes, result: SyncResult,
                           manifests: list[bytes] | None = None) -> int:
        return await self.replication.push_records(fid, result, manifests)

    def cached_manifest(self, cid: str) -> Manifest | None:
        return self._reads.cached(cid) if self._reads is not None else None

    def remember_manifest(self, manifest: Manifest) -> None:
        """A replica was handed the manifest of a new version's content (peer.py)."""
        try:
            self.reads.remember(manifest)
        except MeshError:
            pass                    # no storage service here: nothing reads content

    def user(self, user_id: str) -> Identity:
        return Identity(self.storage.keyring.user(user_id))

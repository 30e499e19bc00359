"""The versions capability: Revise / Synchronous / Log / Grant / Get-by-file_id, replicas,
anti-entropy. ``create(ctx)`` registers it as ``ctx.registry["versions"]``; the storage
FileServicer delegates the version RPCs to the methods of the same name here.

Layout: the local-API handlers are api.py (VersionApi, which VersionService extends with the
node lifecycle), the write path (Revise, Synchronous, Grant) writer.py, the Get path getter.py,
what both share local.py; replicas: replicas.py, sync: sync.py and replica_push.py; reads of
version content: reads.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from mesh.context import MeshContext
from mesh.errors import MeshError
from mesh.owned_task import OwnedTask
from storage.versions.api import VersionApi
from storage.versions.getter import VersionGetter
from storage.versions.local import LocalVersions
from storage.versions.peer import FaultHooks, VersionHandlers
from storage.versions.records import file_id_text
from storage.versions.replicas import replica_key as replica_key  # noqa: F401 - public here too
from storage.versions.store import VersionStore
from storage.versions.sync import ReplicaSync
from storage.versions.writer import VersionWriter

log = logging.getLogger(__name__)

DEFAULT_SYNC_INTERVAL = 30.0


class VersionService(VersionApi):
    name = "versions"

    def __init__(self, ctx: MeshContext) -> None:
        self.ctx = ctx
        self.store = VersionStore(ctx.data_dir)
        self.hooks = FaultHooks(ctx.data_dir)
        self.handlers = VersionHandlers(self.store, self.hooks)
        s = ctx.settings
        self.sync_interval = float(s.get("versions.sync_interval", DEFAULT_SYNC_INTERVAL))
        m = int(s.get("storage.m", 2))
        self.replicas = int(s.get("versions.replicas", 0) or m + 1)
        self.counters = {"revisions": 0, "syncs": 0, "background_syncs": 0, "withheld_seen": 0,
                         "records_pulled": 0, "records_pushed": 0, "refused_from_peers": 0,
                         "lagging_replicas": 0, "read_ahead_used": 0, "read_ahead_dropped": 0,
                         "replicas_cut": 0, "replicas_skipped": 0}
        self._task = OwnedTask("versions-anti-entropy")
        self.replication = ReplicaSync(ctx, self.store, self.handlers, self.replicas,
                                       self.counters)
        local = LocalVersions(ctx, self.store, self.replication)
        super().__init__(local, VersionWriter(local, self.counters),
                         VersionGetter(local, self.counters))
        if "storage" in ctx.roles or not ctx.roles:
            for method, fn in (("versions.Digest", self.handlers.digest),
                               ("versions.Pull", self.handlers.pull),
                               ("versions.Push", self.handlers.push)):
                ctx.channel_server.handle(method, self._guarded(fn))
        self.handlers.manifest_sink = local.remember_manifest
        self.handlers.manifest_source = local.cached_manifest
        ctx.registry["versions"] = self

    def _guarded(self, fn: Callable[[bytes], Awaitable[bytes]]
                 ) -> Callable[[Any, bytes], Awaitable[bytes]]:
        async def handler(caller: Any, body: bytes) -> bytes:
            self.handlers.check_caller(caller.node_id)
            return await fn(body)
        return handler

    # -- MeshService -----------------------------------------------------------------------
    def attach(self, api_server: grpc.aio.Server) -> None:
        """Nothing to add: the storage FileServicer delegates Revise/Sync/Log/Grant here."""

    async def start(self) -> None:
        if self.sync_interval > 0:
            self._task.start(self._anti_entropy)

    async def stop(self) -> None:
        await self._task.stop()
        await self.replication.stop()
        self.store.close()

    def status(self) -> dict[str, Any]:
        return {**self.counters, "files": len(self.store.files()), "replicas": self.replicas,
                "sync_interval_s": self.sync_interval, "peer_calls": self.handlers.calls,
                "refused_records": self.handlers.refused,
                "pushes_verifying": self.handlers.verifying,
                "manifest_cache_hits": self.local.manifest_cache_hits,
                "last_revise_ms": self.writer.last_revise_ms,
                "last_get_ms": self.getter.last_get_ms}

    def load(self) -> int:
        return 0

    async def _anti_entropy(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval * random.uniform(0.8, 1.2))  # noqa: S311
            for fid in self.store.files():
                try:
                    async with self.local.lock(fid):
                        await self.local.sync(fid, persist=True)
                    self.counters["background_syncs"] += 1
                except MeshError as exc:
                    log.debug("background sync of %s failed: %s", file_id_text(fid), exc)
                except Exception:
                    log.exception("background sync of %s failed", file_id_text(fid))


def create(ctx: MeshContext) -> VersionService:
    return VersionService(ctx)

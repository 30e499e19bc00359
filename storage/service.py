"""The storage capability of a node: fragment store, manifests, documents, FileService.

``create(ctx)`` is called by taskworker.node. Join flags (taskworker/cli_storage.py) arrive in
``ctx.settings``: ``storage.k``, ``storage.m``, ``storage.stripe_size``,
``storage.reserved_bytes`` (absent: storage/capacity.py's default for the volume), and
``storage.late_copy_delay`` (``--late-copy-delay``: the collector of copies that land after a
Push gave their store up, storage/late_copies.py, with all its delays scaled to it; for tests).
"""

from __future__ import annotations

from typing import Any

import grpc

from mesh.context import MeshContext
from storage.capacity import Capacity
from storage.documents import DocumentStore
from storage.files import DEFAULT_K, DEFAULT_M, DEFAULT_STRIPE, FileStore, PushOptions
from storage.fragstore import FragmentStore
from storage.keyring import Keyring
from storage.late_copies import LateCopies, Timings
from storage.manifest import ManifestStore
from storage.peer import StorageHandlers
from storage.placement import MeshNetwork


class StorageService:
    name = "storage"

    def __init__(self, ctx: MeshContext) -> None:
        self.ctx = ctx
        self.fragments = FragmentStore(ctx.data_dir)
        self.manifests = ManifestStore(ctx.data_dir)
        self.document_store = DocumentStore(ctx.data_dir)
        self.keyring = Keyring(ctx.data_dir)
        reserved = ctx.settings.get("storage.reserved_bytes")
        self.capacity = Capacity(ctx.data_dir, None if reserved is None else int(reserved))
        self.handlers = StorageHandlers(self.fragments, self.manifests, self.document_store,
                                        ctx.identity.node_id, self.capacity)
        self.network = MeshNetwork(ctx, self.handlers)
        s = ctx.settings
        defaults = PushOptions(k=int(s.get("storage.k", DEFAULT_K)),
                               m=int(s.get("storage.m", DEFAULT_M)),
                               stripe_size=int(s.get("storage.stripe_size", DEFAULT_STRIPE)))
        defaults.validate()
        delay = s.get("storage.late_copy_delay")
        self.late_copies = LateCopies(self.network.client, None if delay is None
                                      else Timings.scaled(float(delay)))
        self.files = FileStore(self.network, defaults=defaults, late_copies=self.late_copies)
        # a DeleteFragment asks the file's document replicas who owns it and its manifest
        # replicas whether a newer manifest keeps the copy here (storage/delete_check.py)
        self.handlers.deletes.replicas = self.files.fetch_manifests
        self.handlers.deletes.records = self.files.documents.record
        if "storage" in ctx.roles:
            self.handlers.register(ctx.channel_server)
        ctx.registry["storage"] = self

    def attach(self, api_server: grpc.aio.Server) -> None:
        from storage.servicer import FileServicer

        FileServicer(self).add_to(api_server)

    async def start(self) -> None:
        self.late_copies.start()

    async def stop(self) -> None:
        await self.late_copies.stop()
        self.fragments.close()

    def status(self) -> dict[str, Any]:
        count, total = self.fragments.stats()
        return {"fragments": count, "fragment_bytes": total,
                "corrupt_fragments_dropped": self.fragments.corrupt_count,
                "manifests": len(self.manifests.cids()), "peer_calls": self.handlers.calls,
                "users": len(self.keyring.names()),
                "suspect_peers": [p.hex()[:16] for p in self.network.suspects()],
                **self.capacity.status(),
                **self.files.status(), **self.late_copies.status()}

    def load(self) -> int:
        return self.files.inflight


def create(ctx: MeshContext) -> StorageService:
    return StorageService(ctx)

"""Provider records this node publishes: its TaskWorkers' functions and the deploys it serves.

Apart from the compute service (service.py) because it is the node's side of discovery: what
callers find under a function's key. Local functions get a record on registration, refreshed
every ``refresh_s`` and withdrawn on stop; a node that served a deployed function keeps the
newest deploy's record alive after the deployer left, and re-stores the owner's signed name
claim that routing trusts (compute/names.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from compute.sandbox import Limits
from mesh.context import MeshContext
from mesh.errors import InvalidArgumentError, MeshError
from proto import compute_pb2

from .owners import NameOwners
from .registry import check_function_name, sign_provider
from .router import Router

log = logging.getLogger("compute.service")   # its lines read as the compute service's, as before


@dataclass
class LocalFunction:
    """A function a TaskWorker on this node registered: runs here, in the sandbox."""

    name: str
    source: str
    entry: str
    worker_id: str
    filename: str
    limits: Limits | None
    registered_ms: int


@dataclass
class Deployment:
    name: str
    entry: str
    cid: str
    deploy_seq: int
    worker_id: str
    deployer: bytes = b""


class ProviderPublisher:
    """Signs and publishes this node's provider records; ``load()`` is the calls in flight."""

    def __init__(self, ctx: MeshContext, router: Router, names: NameOwners, *,
                 load: Callable[[], int], limits: Limits, pool_size: int, refresh_s: float,
                 deploy_ttl_s: float) -> None:
        self.ctx = ctx
        self.router = router
        self.names = names
        self.load = load
        self.limits = limits
        self.pool_size = pool_size
        self.refresh_s = refresh_s
        self.deploy_ttl_s = deploy_ttl_s
        self.functions: dict[str, LocalFunction] = {}
        self.served_deploys: dict[str, Deployment] = {}   # newest deploy served, per name
        self._publish_lock = asyncio.Lock()

    # --- local functions (TaskWorker) ------------------------------------------------------
    async def register_local(self, name: str, source: str, entry: str, *, worker_id: str,
                             filename: str = "<taskworker>", limits: Limits | None = None,
                             publish: bool = True) -> None:
        check_function_name(name)
        if not entry.isidentifier():
            raise InvalidArgumentError(f"entry {entry!r} is not a function name")
        self.functions[name] = LocalFunction(name, source, entry, worker_id, filename, limits,
                                             int(time.time() * 1000))
        self.router.invalidate(name)
        if publish:
            await self.publish(name)

    async def unregister_local(self, name: str) -> None:
        fn = self.functions.pop(name, None)
        if fn is not None:
            await self.publish_one(self._local_record(fn, withdrawn=True), ttl=60.0)

    def _local_record(self, fn: LocalFunction, *, withdrawn: bool = False
                      ) -> compute_pb2.ProviderRecord:
        return compute_pb2.ProviderRecord(
            function=fn.name, worker_id=fn.worker_id, node_id=self.ctx.identity.node_id,
            address=self.ctx.address, load=self.load(), deploy_seq=fn.registered_ms,
            entry=fn.entry, withdrawn=withdrawn, capacity=self.pool_size,
            wall_time_s=(fn.limits or self.limits).wall_time_s)

    async def publish_one(self, record: compute_pb2.ProviderRecord, *, ttl: float) -> int:
        signed = sign_provider(self.ctx.identity, record, ttl_s=ttl)
        try:
            return await self.ctx.membership.publish(signed)
        except MeshError as exc:
            log.warning("publishing provider record for %s failed: %s", record.function, exc)
            return 0

    async def publish(self, name: str | None = None) -> int:
        """Publish (or refresh) provider records now; returns acks."""
        acks = 0
        async with self._publish_lock:
            for fn in list(self.functions.values()):
                if name is None or fn.name == name:
                    acks += await self.publish_one(self._local_record(fn),
                                                   ttl=max(30.0, 3 * self.refresh_s))
        return acks

    async def publish_all(self, *, withdrawn: bool = False) -> None:
        for fn in list(self.functions.values()):
            await self.publish_one(self._local_record(fn, withdrawn=withdrawn),
                                   ttl=max(30.0, 3 * self.refresh_s))

    async def refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.publish()
                await self._republish_deploys()
            except Exception:
                log.exception("provider refresh failed")

    # --- deployed functions this node served -----------------------------------------------
    def served(self, dep: Deployment) -> None:
        """Remember the newest deploy of a function this node served, to republish it (one
        record per owner and name: an older deploy must never replace a newer one)."""
        if not dep.deploy_seq:
            return
        held = self.served_deploys.get(dep.name)
        if held is None or dep.deploy_seq > held.deploy_seq:
            self.served_deploys[dep.name] = dep

    async def _republish_deploys(self) -> None:
        """Nodes that serve deployed code keep its record alive after the deployer left:
        each publishes its own record naming the same CID and deploy sequence, and re-stores
        the owner's signed name claim (which is what routing trusts, see compute/names.py)."""
        await self.names.refresh(list(self.served_deploys))
        for dep in list(self.served_deploys.values()):
            record = compute_pb2.ProviderRecord(  # node_id: the deployer (advisory)
                function=dep.name, worker_id=dep.worker_id,
                node_id=dep.deployer or self.ctx.identity.node_id,
                address=self.ctx.address, load=self.load(), code_cid=dep.cid,
                deploy_seq=dep.deploy_seq, entry=dep.entry, capacity=self.pool_size,
                wall_time_s=self.limits.wall_time_s)
            await self.publish_one(record, ttl=self.deploy_ttl_s)

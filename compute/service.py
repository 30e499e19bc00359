"""The compute capability of a node: function registry, router, sandbox pool, deploys.

``create(ctx)`` registers the service as ``ctx.registry["compute"]``. A node with the
``compute`` role runs a SandboxPool and serves calls (its TaskWorkers' functions and any
deployed code); every node routes ``CallFunction`` to providers, wherever they are.

Join settings (``taskworker/cli_compute.py``): ``compute_pool_size`` (sandbox workers kept
ready, default 4), ``compute_refresh_s`` (provider-record refresh, default 10),
``compute_cache_s`` (provider cache, default 2), ``compute_deploy_ttl_s`` (deploy records,
default 7 days), ``compute_call_timeout_s`` (default caller deadline, 30).

This module wires the parts and keeps what a node offers: the MeshService life cycle and
status, deploys and routed calls, and the peer handlers. Running a call here is
compute/executor.py; the provider records this node publishes, compute/publisher.py.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import time
from typing import Any

import grpc

from compute.sandbox import HostServices, Limits, SandboxPool
from mesh.channel import Caller
from mesh.context import MeshContext
from mesh.errors import InvalidArgumentError, PermissionDeniedError
from proto import compute_pb2

from . import values
from .deploy import CodeStore, check_code
from .executor import Executor
from .owners import NameOwners
from .peer import CALL, FETCH_CODE, STORE_CODE, parse
from .publisher import Deployment, ProviderPublisher
from .registry import check_function_name, module_functions
from .router import Outcome, Router

log = logging.getLogger(__name__)


class ComputeService:
    name = "compute"

    def __init__(self, ctx: MeshContext) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.serving = "compute" in ctx.roles
        self.pool_size = int(settings.get("compute_pool_size", 4))
        self.refresh_s = float(settings.get("compute_refresh_s", 10.0))
        self.deploy_ttl_s = float(settings.get("compute_deploy_ttl_s", 7 * 86400.0))
        self.default_timeout = float(settings.get("compute_call_timeout_s", 30.0))
        self.limits = Limits()
        self.deployments: dict[str, Deployment] = {}   # published from this node
        self.code = CodeStore(ctx)
        self.router = Router(ctx, run_local=self.execute, serves_locally=self._serves,
                             cache_ttl=float(settings.get("compute_cache_s", 2.0)))
        self.names = NameOwners(ctx, ttl_s=self.deploy_ttl_s)   # who owns which name
        self.router.cache.owned = self.names.allowed
        self.publisher = ProviderPublisher(
            ctx, self.router, self.names, load=self.load, limits=self.limits,
            pool_size=self.pool_size, refresh_s=self.refresh_s, deploy_ttl_s=self.deploy_ttl_s)
        self.functions = self.publisher.functions     # this node's TaskWorkers' functions
        self.executor = Executor(ctx, self.router, self.code, self.functions,
                                 limits=self.limits, served=self.publisher.served)
        self._refresh: asyncio.Task[None] | None = None
        ctx.registry["compute"] = self
        ctx.channel_server.handle(CALL, self._rpc_call)
        ctx.channel_server.handle(STORE_CODE, self._rpc_store_code)
        ctx.channel_server.handle(FETCH_CODE, self._rpc_fetch_code)

    def _serves(self) -> bool:
        return self.executor.pool is not None

    # --- MeshService -----------------------------------------------------------------------
    def attach(self, api_server: grpc.aio.Server) -> None:
        from .servicer import add_servicers

        add_servicers(self, api_server)

    async def start(self) -> None:
        if self.serving:
            pool = SandboxPool(size=self.pool_size, limits=self.limits)
            try:
                await pool.start()
            except Exception:
                log.exception("sandbox pool failed to start: this node only routes calls")
            else:
                self.executor.pool = pool
        self._refresh = asyncio.create_task(self.publisher.refresh_loop(),
                                            name="compute-refresh")

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
        if self.functions:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self.publisher.publish_all(withdrawn=True)
        if self.executor.pool is not None:
            await self.executor.pool.stop()
            self.executor.pool = None

    def status(self) -> dict[str, Any]:
        ex = self.executor
        doc: dict[str, Any] = {
            "serving": ex.pool is not None, "functions": sorted(self.functions),
            "deployed_here": sorted(self.deployments), "in_flight": ex.inflight,
            "executed": ex.executed, **self.router.status()}
        if ex.latencies:        # the monitor's per-peer call latency (last 1,000 calls)
            ranked = sorted(ex.latencies)
            doc["p50_ms"] = round(ranked[len(ranked) // 2] * 1e3, 3)
            doc["p99_ms"] = round(ranked[min(len(ranked) - 1, int(0.99 * len(ranked)))] * 1e3, 3)
        if ex.pool is not None:
            stats = ex.pool.stats()
            doc["sandbox"] = {k: stats[k] for k in ("size", "idle", "calls", "failures",
                                                    "zygote_restarts")}
        return doc

    def load(self) -> int:
        return self.executor.inflight

    # --- local functions (TaskWorker) ------------------------------------------------------
    async def register_local(self, name: str, source: str, entry: str, *, worker_id: str,
                             filename: str = "<taskworker>", limits: Limits | None = None,
                             publish: bool = True) -> None:
        await self.publisher.register_local(name, source, entry, worker_id=worker_id,
                                            filename=filename, limits=limits, publish=publish)

    async def unregister_local(self, name: str) -> None:
        await self.publisher.unregister_local(name)

    async def publish(self, name: str | None = None) -> int:
        """Publish (or refresh) provider records now; returns acks."""
        return await self.publisher.publish(name)

    # --- deploy ----------------------------------------------------------------------------
    async def deploy(self, source: bytes, *, filename: str, names: list[str],
                     worker_id: str) -> compute_pb2.DeployResponse:
        from storage.cid import cid_for

        cid = cid_for(source)
        check_code(cid, source)
        offered = module_functions(source.decode())
        wanted = names or sorted(offered)
        if not wanted:
            raise InvalidArgumentError("the module defines no public function to deploy")
        defs = {n.name for n in ast.parse(source.decode()).body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        for name in wanted:
            check_function_name(name)
            if name not in offered and name not in defs:
                raise InvalidArgumentError(f"the module offers no function {name!r} "
                                           f"(it offers: {', '.join(sorted(offered)) or 'none'})")
        for name in wanted:         # PERMISSION_DENIED when another key owns a name
            await self.names.claim(name)
        replicas = await self.code.replicate(cid, source)
        seq = int(time.time() * 1000)
        acks = 0
        out = []
        for name in wanted:
            entry = offered.get(name, name)
            record = compute_pb2.ProviderRecord(
                function=name, worker_id=worker_id, node_id=self.ctx.identity.node_id,
                address=self.ctx.address, code_cid=cid, deploy_seq=seq, entry=entry,
                wall_time_s=self.limits.wall_time_s)
            acks += await self.publisher.publish_one(record, ttl=self.deploy_ttl_s)
            await self.names.deployed(name, record)
            self.deployments[name] = Deployment(name, entry, cid, seq, worker_id,
                                                self.ctx.identity.node_id)
            self.publisher.served(self.deployments[name])
            self.router.invalidate(name)
            out.append(compute_pb2.DeployedFunction(name=name, entry=entry))
        log.info("deployed %s (%s) as %s", filename, cid[:16], ", ".join(wanted))
        return compute_pb2.DeployResponse(cid=cid, deploy_seq=seq, functions=out,
                                          code_replicas=replicas, record_acks=acks)

    # --- calls -----------------------------------------------------------------------------
    async def call(self, function: str, args: Any, kwargs: Any, timeout: float) -> Outcome:
        """Route a call (args: ListValue, kwargs: Struct) to a provider."""
        check_function_name(function)
        values.check_size(args, kwargs)
        request = compute_pb2.CallRequest(function=function, args=args, kwargs=kwargs)
        return await self.router.call(function, request, timeout or self.default_timeout)

    def host_for(self, worker_id: str, function: str, deployer: bytes | None = None
                 ) -> HostServices:
        """The proxy's policy hook for one call (compute/executor.py)."""
        return self.executor.host_for(worker_id, function, deployer)

    async def execute(self, request: compute_pb2.CallRequest) -> compute_pb2.CallReply:
        """Run one call here, in the sandbox (compute/executor.py)."""
        return await self.executor.execute(request)

    # --- peer handlers ---------------------------------------------------------------------
    async def _rpc_call(self, caller: Caller, body: bytes) -> bytes:
        request = parse(compute_pb2.CallRequest, body)
        reply = await self.execute(request)
        return reply.SerializeToString()

    async def _rpc_store_code(self, caller: Caller, body: bytes) -> bytes:
        if not self.serving:
            raise PermissionDeniedError("this node does not hold code")
        request = parse(compute_pb2.StoreCodeRequest, body)
        self.code.put(request.cid, request.code)
        return compute_pb2.StoreCodeReply(stored=True).SerializeToString()

    async def _rpc_fetch_code(self, caller: Caller, body: bytes) -> bytes:
        request = parse(compute_pb2.FetchCodeRequest, body)
        code = self.code.get_local(request.cid)
        return compute_pb2.FetchCodeReply(code=code or b"",
                                          found=code is not None).SerializeToString()


def create(ctx: MeshContext) -> ComputeService:
    return ComputeService(ctx)

"""The compute capability of a node: function registry, router, sandbox pool, deploys.

``create(ctx)`` registers the service as ``ctx.registry["compute"]``. A node with the
``compute`` role runs a SandboxPool and serves calls (its TaskWorkers' functions and any
deployed code); every node routes ``CallFunction`` to providers, wherever they are.

Join settings (``taskworker/cli_compute.py``): ``compute_pool_size`` (sandbox workers kept
ready, default 4), ``compute_refresh_s`` (provider-record refresh, default 10),
``compute_cache_s`` (provider cache, default 2), ``compute_deploy_ttl_s`` (deploy records,
default 7 days), ``compute_call_timeout_s`` (default caller deadline, 30).
"""

from __future__ import annotations

import ast
import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import grpc

from compute.sandbox import HostServices, Limits, SandboxError, SandboxPool, UserCodeError
from mesh.channel import Caller
from mesh.context import MeshContext
from mesh.errors import InvalidArgumentError, MeshError, PermissionDeniedError, status_value
from proto import compute_pb2

from . import values
from .deploy import CodeStore, check_code, sandbox_source
from .owners import NameOwners, trusted_deployer
from .peer import CALL, FETCH_CODE, STORE_CODE, parse
from .registry import check_function_name, module_functions, sign_provider
from .router import Outcome, Router

log = logging.getLogger(__name__)


class NoProxyHost:
    """HostServices used when the node has no proxy service: refuses with a clear reason."""

    reason = "this node runs no proxy service (secrets, external APIs and DNS are unavailable)"

    async def get_secret(self, name: str) -> str:
        raise PermissionError(f"secret {name!r} refused: {self.reason}")

    async def call_external_api(self, url: str, method: str, headers: dict[str, str] | None,
                                body: str | bytes | None, timeout: float) -> dict[str, Any]:
        raise PermissionError(f"external API call refused: {self.reason}")

    async def resolve(self, domain: str, record_type: str) -> list[dict[str, Any]]:
        raise PermissionError(f"DNS lookup refused: {self.reason}")


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
        self.pool: SandboxPool | None = None
        self.functions: dict[str, LocalFunction] = {}
        self.deployments: dict[str, Deployment] = {}   # published from this node
        self.served_deploys: dict[str, Deployment] = {}   # newest deploy served, per name
        self.code = CodeStore(ctx)
        self._prepared: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.router = Router(ctx, run_local=self.execute, serves_locally=self._serves,
                             cache_ttl=float(settings.get("compute_cache_s", 2.0)))
        self.names = NameOwners(ctx, ttl_s=self.deploy_ttl_s)   # who owns which name
        self.router.owned = self.names.allowed
        self.inflight = 0
        self.executed = 0
        self._latencies: collections.deque[float] = collections.deque(maxlen=1000)  # seconds
        self._refresh: asyncio.Task[None] | None = None
        self._publish_lock = asyncio.Lock()
        ctx.registry["compute"] = self
        ctx.channel_server.handle(CALL, self._rpc_call)
        ctx.channel_server.handle(STORE_CODE, self._rpc_store_code)
        ctx.channel_server.handle(FETCH_CODE, self._rpc_fetch_code)

    def _serves(self) -> bool:
        return self.pool is not None

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
                self.pool = pool
        self._refresh = asyncio.create_task(self._refresh_loop(), name="compute-refresh")

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
        if self.functions:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._publish_all(withdrawn=True)
        if self.pool is not None:
            await self.pool.stop()
            self.pool = None

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "serving": self.pool is not None, "functions": sorted(self.functions),
            "deployed_here": sorted(self.deployments), "in_flight": self.inflight,
            "executed": self.executed, **self.router.status()}
        if self._latencies:        # the monitor's per-peer call latency (last 1,000 calls)
            ranked = sorted(self._latencies)
            doc["p50_ms"] = round(ranked[len(ranked) // 2] * 1e3, 3)
            doc["p99_ms"] = round(ranked[min(len(ranked) - 1, int(0.99 * len(ranked)))] * 1e3, 3)
        if self.pool is not None:
            stats = self.pool.stats()
            doc["sandbox"] = {k: stats[k] for k in ("size", "idle", "calls", "failures",
                                                    "zygote_restarts")}
        return doc

    def load(self) -> int:
        return self.inflight

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
            await self._publish_one(self._local_record(fn, withdrawn=True), ttl=60.0)

    def _local_record(self, fn: LocalFunction, *, withdrawn: bool = False
                      ) -> compute_pb2.ProviderRecord:
        return compute_pb2.ProviderRecord(
            function=fn.name, worker_id=fn.worker_id, node_id=self.ctx.identity.node_id,
            address=self.ctx.address, load=self.inflight, deploy_seq=fn.registered_ms,
            entry=fn.entry, withdrawn=withdrawn, capacity=self.pool_size,
            wall_time_s=(fn.limits or self.limits).wall_time_s)

    async def _publish_one(self, record: compute_pb2.ProviderRecord, *, ttl: float) -> int:
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
                    acks += await self._publish_one(self._local_record(fn),
                                                    ttl=max(30.0, 3 * self.refresh_s))
        return acks

    async def _publish_all(self, *, withdrawn: bool = False) -> None:
        for fn in list(self.functions.values()):
            await self._publish_one(self._local_record(fn, withdrawn=withdrawn),
                                    ttl=max(30.0, 3 * self.refresh_s))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.publish()
                await self._republish_deploys()
            except Exception:
                log.exception("provider refresh failed")

    async def _republish_deploys(self) -> None:
        """Nodes that serve deployed code keep its record alive after the deployer left:
        each publishes its own record naming the same CID and deploy sequence, and re-stores
        the owner's signed name claim (which is what routing trusts, see compute/names.py)."""
        await self.names.refresh(list(self.served_deploys))
        for dep in list(self.served_deploys.values()):
            record = compute_pb2.ProviderRecord(  # node_id: the deployer (advisory)
                function=dep.name, worker_id=dep.worker_id,
                node_id=dep.deployer or self.ctx.identity.node_id,
                address=self.ctx.address, load=self.inflight, code_cid=dep.cid,
                deploy_seq=dep.deploy_seq, entry=dep.entry, capacity=self.pool_size,
                wall_time_s=self.limits.wall_time_s)
            await self._publish_one(record, ttl=self.deploy_ttl_s)

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
            acks += await self._publish_one(record, ttl=self.deploy_ttl_s)
            await self.names.deployed(name, record)
            self.deployments[name] = Deployment(name, entry, cid, seq, worker_id,
                                                self.ctx.identity.node_id)
            self._served(self.deployments[name])
            self.router.invalidate(name)
            out.append(compute_pb2.DeployedFunction(name=name, entry=entry))
        log.info("deployed %s (%s) as %s", filename, cid[:16], ", ".join(wanted))
        return compute_pb2.DeployResponse(cid=cid, deploy_seq=seq, functions=out,
                                          code_replicas=replicas, record_acks=acks)

    def _prepare(self, cid: str, source: str) -> str:
        """Deployed modules get what registered ones get (refused imports stubbed, main
        block dropped, future annotations quoted), once per CID."""
        prepared = sandbox_source(source)
        self._prepared[cid] = prepared
        while len(self._prepared) > 64:
            self._prepared.popitem(last=False)
        return prepared

    def _served(self, dep: Deployment) -> None:
        """Remember the newest deploy of a function this node served, to republish it (one
        record per owner and name: an older deploy must never replace a newer one)."""
        if not dep.deploy_seq:
            return
        held = self.served_deploys.get(dep.name)
        if held is None or dep.deploy_seq > held.deploy_seq:
            self.served_deploys[dep.name] = dep

    # --- calls -----------------------------------------------------------------------------
    async def call(self, function: str, args: Any, kwargs: Any, timeout: float) -> Outcome:
        """Route a call (args: ListValue, kwargs: Struct) to a provider."""
        check_function_name(function)
        values.check_size(args, kwargs)
        request = compute_pb2.CallRequest(function=function, args=args, kwargs=kwargs)
        return await self.router.call(function, request, timeout or self.default_timeout)

    def host_for(self, worker_id: str, function: str, deployer: bytes | None = None
                 ) -> HostServices:
        """The proxy's policy hook for one call (looked up now: the proxy may come later);
        without a proxy every host request is refused with a clear reason."""
        proxy = self.ctx.registry.get("proxy")
        if proxy is None or not hasattr(proxy, "host_for"):
            return NoProxyHost()
        try:
            host: HostServices = proxy.host_for(worker_id, function, deployer or None)
        except TypeError:           # a proxy without the deployer parameter
            host = proxy.host_for(worker_id, function)
        return host

    async def _deployer(self, request: compute_pb2.CallRequest) -> bytes:
        """The deployer named by a deployed call, if the name's owner really deployed that
        code (providers cached by the router, filtered by name ownership)."""
        if not request.deployer:
            return b""
        try:
            providers = await self.router.providers(request.function)
        except (MeshError, TimeoutError):
            return b""
        return trusted_deployer(providers, request.code_cid, request.deployer)

    async def execute(self, request: compute_pb2.CallRequest) -> compute_pb2.CallReply:
        """Run one call here, in the sandbox; every failure is described in the reply."""
        me = self.router.me
        reply = compute_pb2.CallReply(node_id=me)
        self.inflight += 1
        try:
            if self.pool is None:
                raise _Fail(grpc.StatusCode.UNAVAILABLE, "this node does not run functions")
            if request.code_cid:
                source = self._prepared.get(request.code_cid) or self._prepare(
                    request.code_cid, await self.code.source(request.code_cid))
                entry = request.entry or request.function
                worker_id = request.worker_id or "deployed"
                filename = f"{request.code_cid[:16]}.py"
                limits = self.limits
                deployer = await self._deployer(request)
                self._served(Deployment(request.function, entry, request.code_cid,
                                        request.deploy_seq, worker_id, deployer))
            else:
                fn = self.functions.get(request.function)
                if fn is None:
                    raise _Fail(grpc.StatusCode.NOT_FOUND,
                                f"function {request.function!r} is not registered on this node")
                source, entry, worker_id = fn.source, fn.entry, fn.worker_id
                deployer = me
                filename, limits = fn.filename, fn.limits or self.limits
            reply.worker_id = worker_id
            args, kwargs = values.decode_call_args(request.args, request.kwargs)
            if request.timeout > 0 and request.timeout < limits.wall_time_s:
                limits = _with_wall(limits, request.timeout)
            started = time.perf_counter()
            result = await self.pool.run(source, entry, args, kwargs, limits=limits,
                                         host=self.host_for(worker_id, request.function,
                                                            deployer),
                                         filename=filename)
            self._latencies.append(time.perf_counter() - started)
            values.to_value(result, reply.result)
            self.executed += 1
        except UserCodeError as exc:
            reply.failed = True
            reply.error.CopyFrom(compute_pb2.CallError(
                code=status_value(exc.code), type=exc.type, message=exc.user_message,
                traceback=exc.traceback, user=True))
        except SandboxError as exc:
            reply.failed = True
            reply.error.CopyFrom(compute_pb2.CallError(code=status_value(exc.code),
                                                       message=exc.message))
        except _Fail as exc:
            reply.failed = True
            reply.error.CopyFrom(compute_pb2.CallError(code=status_value(exc.code),
                                                       message=str(exc)))
        except MeshError as exc:
            reply.failed = True
            code = getattr(exc, "code", grpc.StatusCode.INTERNAL)
            reply.error.CopyFrom(compute_pb2.CallError(code=status_value(code),
                                                       message=str(exc)))
        finally:
            self.inflight -= 1
        if reply.failed:
            reply.ClearField("result")
        return reply

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


class _Fail(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _with_wall(limits: Limits, seconds: float) -> Limits:
    import dataclasses

    return dataclasses.replace(limits, wall_time_s=max(0.01, seconds))


def create(ctx: MeshContext) -> ComputeService:
    return ComputeService(ctx)

"""Running one call on this node, in the sandbox, and the host services it may use.

Apart from the compute service (service.py) because this is the serving side of a call: the
router hands it a request (from a peer or from this node's own caller), it picks the code (a
TaskWorker's registered function or a deployed module, prepared once per CID), bounds the
call's wall time by the caller's deadline, gives it the proxy's host services for the right
deployer, and turns every failure into a described reply rather than an exception.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import grpc

from compute.sandbox import HostServices, Limits, SandboxError, SandboxPool, UserCodeError
from mesh.context import MeshContext
from mesh.errors import MeshError, status_value
from proto import compute_pb2

from . import values
from .deploy import CodeStore, sandbox_source
from .owners import trusted_deployer
from .publisher import Deployment, LocalFunction
from .registry import Provider
from .router import Router


class NoProxyHost:
    """HostServices used when the node has no proxy service: refuses with a clear reason."""

    reason = "this node runs no proxy service (secrets, external APIs and DNS are unavailable)"

    async def get_secret(self, name: str, owner: str | None = None) -> str:
        raise PermissionError(f"secret {name!r} refused: {self.reason}")

    async def call_external_api(self, url: str, method: str, headers: dict[str, str] | None,
                                body: str | bytes | None, timeout: float) -> dict[str, Any]:
        raise PermissionError(f"external API call refused: {self.reason}")

    async def resolve(self, domain: str, record_type: str) -> list[dict[str, Any]]:
        raise PermissionError(f"DNS lookup refused: {self.reason}")


class Executor:
    """Runs calls in ``pool`` (set once the sandbox pool started; None: this node only
    routes); counts the calls in flight and executed, and their sandbox latencies."""

    def __init__(self, ctx: MeshContext, router: Router, code: CodeStore,
                 functions: dict[str, LocalFunction], *, limits: Limits,
                 served: Callable[[Deployment], None]) -> None:
        self.ctx = ctx
        self.router = router
        self.code = code
        self.functions = functions
        self.limits = limits
        self.served = served
        self.pool: SandboxPool | None = None
        self.inflight = 0
        self.executed = 0
        self.latencies: collections.deque[float] = collections.deque(maxlen=1000)  # seconds
        self._prepared: collections.OrderedDict[str, str] = collections.OrderedDict()

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

    def _prepare(self, cid: str, source: str) -> str:
        """Deployed modules get what registered ones get (refused imports stubbed, main
        block dropped, future annotations quoted), once per CID."""
        prepared = sandbox_source(source)
        self._prepared[cid] = prepared
        while len(self._prepared) > 64:
            self._prepared.popitem(last=False)
        return prepared

    async def _owner_deploy(self, request: compute_pb2.CallRequest
                            ) -> tuple[Provider | None, bytes]:
        """The deploy of ``request.function`` its owner published with ``request.code_cid``
        (providers cached by the router, filtered by name ownership; looked up afresh once
        when the cache does not show it: a redeploy this node has not seen yet), and the
        deployer the call names if the owner really deployed that code. A peer's call names
        function, code, entry and worker id freely: only a deploy found here gives the call
        the function's identity (its secrets)."""
        for fresh in (False, True):
            try:
                providers = await self.router.providers(request.function, fresh=fresh)
            except (MeshError, TimeoutError):
                return None, b""
            found = next((p for p in providers
                          if p.deployed and p.record.code_cid == request.code_cid), None)
            if found is not None:
                return found, trusted_deployer(providers, request.code_cid, request.deployer)
        return None, b""

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
                filename = f"{request.code_cid[:16]}.py"
                limits = self.limits
                deploy, deployer = await self._owner_deploy(request)
                if deploy is not None:        # the owner's code, as the owner published it
                    entry = deploy.record.entry or request.function
                    worker_id = identity = deploy.record.worker_id or "deployed"
                    function = request.function
                    self.served(Deployment(request.function, entry, request.code_cid,
                                           deploy.record.deploy_seq, worker_id, deployer))
                else:       # not (or no longer) the owner's deploy: runs as nobody
                    entry = request.entry or request.function
                    worker_id, identity, function = request.worker_id or "deployed", "", ""
            else:
                fn = self.functions.get(request.function)
                if fn is None:
                    raise _Fail(grpc.StatusCode.NOT_FOUND,
                                f"function {request.function!r} is not registered on this node")
                source, entry, worker_id = fn.source, fn.entry, fn.worker_id
                identity, function, deployer = worker_id, request.function, me
                filename, limits = fn.filename, fn.limits or self.limits
            reply.worker_id = worker_id
            args, kwargs = values.decode_call_args(request.args, request.kwargs)
            if request.timeout > 0 and request.timeout < limits.wall_time_s:
                limits = _with_wall(limits, request.timeout)
            started = time.perf_counter()
            result = await self.pool.run(source, entry, args, kwargs, limits=limits,
                                         host=self.host_for(identity, function, deployer),
                                         filename=filename)
            self.latencies.append(time.perf_counter() - started)
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


class _Fail(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _with_wall(limits: Limits, seconds: float) -> Limits:
    import dataclasses

    return dataclasses.replace(limits, wall_time_s=max(0.01, seconds))

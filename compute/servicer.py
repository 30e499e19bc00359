"""Local-API servicers: RPCService.CallFunction (the seed's) and ComputeService (deploy).

A failed call aborts with the error's gRPC status; its details are ``Type: message`` for a
user exception, and the trailing metadata carries the structure:
``tw-user-error-bin`` (a serialized taskworker.UserError: type, message, traceback),
``tw-worker-id``, ``tw-node-id``, ``tw-attempts``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from mesh.errors import MeshError, PeerCallError, error_for_code
from proto import compute_pb2, compute_pb2_grpc, taskworker_pb2, taskworker_pb2_grpc

if TYPE_CHECKING:
    from .service import ComputeService

Context = grpc.aio.ServicerContext[Any, Any]
USER_ERROR_MD = "tw-user-error-bin"


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode()[:1024]


async def _abort(context: Context, code: grpc.StatusCode, message: str,
                 metadata: tuple[tuple[str, str | bytes], ...] = ()) -> None:
    await context.abort(code, message, trailing_metadata=metadata)


class RPCServicer(taskworker_pb2_grpc.RPCServiceServicer):
    def __init__(self, service: ComputeService) -> None:
        self.service = service

    async def CallFunction(self, request: taskworker_pb2.FunctionCallRequest,
                           context: Context) -> taskworker_pb2.FunctionCallResponse:
        timeout = request.timeout if request.timeout > 0 else self.service.default_timeout
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(0.01, remaining - 0.01))
        try:
            outcome = await self.service.call(request.function_name, request.args,
                                              request.kwargs, timeout)
        except PeerCallError as exc:
            await _abort(context, exc.code, str(exc))
            raise AssertionError("unreachable") from None
        except MeshError as exc:
            await _abort(context, grpc.StatusCode.INTERNAL, str(exc))
            raise AssertionError("unreachable") from None
        reply = outcome.reply
        if reply.failed:
            meta: list[tuple[str, str | bytes]] = [("tw-attempts", str(outcome.attempts))]
            if reply.worker_id:
                meta.append(("tw-worker-id", _ascii(reply.worker_id)))
            if outcome.node_id:
                meta.append(("tw-node-id", outcome.node_id.hex()))
            err = reply.error
            code = error_for_code(err.code, "").code
            message = f"{err.type}: {err.message}" if err.user else err.message
            if err.user:
                meta.append((USER_ERROR_MD, taskworker_pb2.UserError(
                    type=err.type, message=err.message,
                    traceback=err.traceback).SerializeToString()))
            await _abort(context, code, message or code.name, tuple(meta))
            raise AssertionError("unreachable")
        return taskworker_pb2.FunctionCallResponse(
            result=reply.result, worker_id=reply.worker_id, node_id=outcome.node_id.hex(),
            attempts=outcome.attempts)


class ComputeServicer(compute_pb2_grpc.ComputeServiceServicer):
    def __init__(self, service: ComputeService) -> None:
        self.service = service

    async def Deploy(self, request: compute_pb2.DeployRequest,
                     context: Context) -> compute_pb2.DeployResponse:
        try:
            return await self.service.deploy(
                request.source, filename=request.filename or "module.py",
                names=list(request.names), worker_id=request.worker_id or "deployed")
        except PeerCallError as exc:
            await _abort(context, exc.code, str(exc))
            raise AssertionError("unreachable") from None

    async def Name(self, request: compute_pb2.NameRequest,
                   context: Context) -> compute_pb2.NameReply:
        try:
            return await self.service.names.handle(request)
        except PeerCallError as exc:
            await _abort(context, exc.code, str(exc))
            raise AssertionError("unreachable") from None

    async def Functions(self, request: compute_pb2.FunctionsRequest,
                        context: Context) -> compute_pb2.FunctionsResponse:
        providers = await self.service.router.providers(request.function, fresh=True)
        live = {v.node_id for v in self.service.ctx.membership.live_peers()}
        live.add(self.service.ctx.identity.node_id)
        return compute_pb2.FunctionsResponse(providers=[
            compute_pb2.ProviderInfo(
                function=p.record.function, worker_id=p.record.worker_id,
                node_id=p.owner_id.hex(), address=p.record.address, load=p.record.load,
                code_cid=p.record.code_cid, deploy_seq=p.record.deploy_seq,
                alive=p.owner_id in live) for p in providers])


def add_servicers(service: ComputeService, server: grpc.aio.Server) -> None:
    taskworker_pb2_grpc.add_RPCServiceServicer_to_server(RPCServicer(service), server)
    compute_pb2_grpc.add_ComputeServiceServicer_to_server(ComputeServicer(service), server)

"""Local-API servicers: taskworker.DNSService and twmesh.proxy.ProxyService (secrets)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from mesh.errors import MeshError, PeerCallError
from proto import proxy_pb2, proxy_pb2_grpc, taskworker_pb2, taskworker_pb2_grpc

if TYPE_CHECKING:
    from .service import ProxyService

Context = grpc.aio.ServicerContext[Any, Any]


async def _abort(context: Context, exc: MeshError) -> NoReturn:
    code = exc.code if isinstance(exc, PeerCallError) else grpc.StatusCode.INTERNAL
    await context.abort(code, str(exc))
    raise AssertionError("unreachable")


class DNSServicer(taskworker_pb2_grpc.DNSServiceServicer):
    def __init__(self, proxy: ProxyService) -> None:
        self.proxy = proxy

    async def ResolveDomain(self, request: taskworker_pb2.DNSRequest,
                            context: Context) -> taskworker_pb2.DNSResponse:
        try:
            answer = await self.proxy.resolve(request.domain, request.record_type or "A")
        except MeshError as exc:
            await _abort(context, exc)
        return taskworker_pb2.DNSResponse(
            records=[taskworker_pb2.DNSRecord(type=r.type, value=r.value, ttl=r.ttl)
                     for r in answer.records], cached=answer.cached, source=answer.source)


class SecretsServicer(proxy_pb2_grpc.ProxyServiceServicer):
    def __init__(self, proxy: ProxyService) -> None:
        self.proxy = proxy

    async def SetSecret(self, request: proxy_pb2.SetSecretRequest,
                        context: Context) -> proxy_pb2.SetSecretReply:
        try:
            record, acks = await self.proxy.secrets.set(
                request.name, request.value, list(request.allowed), list(request.nodes))
        except MeshError as exc:
            await _abort(context, exc)
        env = proxy_pb2.SecretEnvelope()
        env.ParseFromString(record.payload)
        return proxy_pb2.SetSecretReply(version=record.seq, recipients=len(env.recipients),
                                        stored=acks)

    async def ListSecrets(self, request: proxy_pb2.ListSecretsRequest,
                          context: Context) -> proxy_pb2.ListSecretsReply:
        return proxy_pb2.ListSecretsReply(secrets=self.proxy.secrets.list())

    async def RevokeSecret(self, request: proxy_pb2.RevokeSecretRequest,
                           context: Context) -> proxy_pb2.SetSecretReply:
        try:
            record, acks = await self.proxy.secrets.revoke(request.name)
        except MeshError as exc:
            await _abort(context, exc)
        return proxy_pb2.SetSecretReply(version=record.seq, recipients=0, stored=acks)


def add_servicers(proxy: ProxyService, server: grpc.aio.Server) -> None:
    taskworker_pb2_grpc.add_DNSServiceServicer_to_server(DNSServicer(proxy), server)
    proxy_pb2_grpc.add_ProxyServiceServicer_to_server(SecretsServicer(proxy), server)

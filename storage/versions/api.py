"""The versions capability's local-API face: Revise / Synchronous / Log / Grant / Get.

The storage FileServicer (storage/servicer.py) delegates these RPCs, by name, to the methods
of ``ctx.registry["versions"]``; they decode the request, delegate to VersionWriter
(writer.py) or VersionGetter (getter.py), and map errors to gRPC status codes. ``resolve`` is
the servicer's GetStream entry.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from mesh.errors import InvalidArgumentError, MeshError, PeerCallError
from proto import taskworker_pb2, versions_pb2
from storage.durable import local_failure
from storage.versions.getter import VersionGetter, head
from storage.versions.local import LocalVersions
from storage.versions.vset import Version
from storage.versions.writer import VersionWriter

_HEXKEY = re.compile(r"[0-9a-f]{64}")
Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


class VersionApi:
    """Thin local-API handlers over the version writer and getter."""

    def __init__(self, local: LocalVersions, writer: VersionWriter, getter: VersionGetter
                 ) -> None:
        self.local = local
        self.writer = writer
        self.getter = getter

    async def _guard(self, context: Context, work: Callable[[], Awaitable[T]]) -> T:
        try:
            return await work()
        except PeerCallError as exc:
            await context.abort(exc.code, str(exc))
        except (MeshError, ValueError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except (OSError, sqlite3.Error) as exc:
            local = local_failure(exc)
            if local is None:
                raise
            full, message = local
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED if full
                                else grpc.StatusCode.UNAVAILABLE, message)
        raise AssertionError("unreachable")

    def _key_of(self, name: str) -> bytes:
        if _HEXKEY.fullmatch(name):
            return bytes.fromhex(name)
        key: bytes = self.local.storage.keyring.public_key(name)
        return key

    async def Revise(self, request: taskworker_pb2.ReviseRequest,
                     context: Context) -> taskworker_pb2.ReviseResponse:
        async def work() -> taskworker_pb2.ReviseResponse:
            v = await self.writer.revise(request.file_id, request.file_data,
                                         self.local.user(request.user_id),
                                         list(request.base_versions))
            return taskworker_pb2.ReviseResponse(
                version=v.id.hex(), cid=v.cid, vector={w.hex(): c for w, c in v.vector.items()})
        return await self._guard(context, work)

    async def Synchronous(self, request: taskworker_pb2.SynchronousRequest,
                          context: Context) -> taskworker_pb2.SynchronousResponse:
        async def work() -> taskworker_pb2.SynchronousResponse:
            r = await self.writer.synchronous(request.file_id, request.user_id)
            heads = r.vs.heads()
            return taskworker_pb2.SynchronousResponse(
                heads=[head(h) for h in heads], records=len(r.vs.valid_ids()),
                replicas_reached=r.reached, conflict=len(heads) > 1)
        return await self._guard(context, work)

    async def Log(self, request: taskworker_pb2.LogRequest,
                  context: Context) -> taskworker_pb2.LogResponse:
        async def work() -> taskworker_pb2.LogResponse:
            r = await self.writer.synchronous(request.file_id, request.user_id)
            return taskworker_pb2.LogResponse(
                versions=[head(v) for v in r.vs.valid()],
                heads=[h.id.hex() for h in r.vs.heads()])
        return await self._guard(context, work)

    async def Grant(self, request: taskworker_pb2.GrantRequest,
                    context: Context) -> taskworker_pb2.GrantResponse:
        async def work() -> taskworker_pb2.GrantResponse:
            if not request.grantee:
                raise InvalidArgumentError("name the grantee (a user or a public key hex)")
            await self.writer.grant(request.file_id, self.local.user(request.user_id),
                                    self._key_of(request.grantee), request.revoke)
            return taskworker_pb2.GrantResponse(ok=True)
        return await self._guard(context, work)

    async def resolve(self, request: taskworker_pb2.GetRequest,
                      on_digest: Callable[[versions_pb2.Digest], None] | None = None
                      ) -> tuple[Version | None, list[taskworker_pb2.VersionHead]]:
        """The version a Get names, or the conflicting heads (VersionGetter.resolve)."""
        return await self.getter.resolve(request, on_digest)

    async def Get(self, request: taskworker_pb2.GetRequest,
                  context: Context) -> taskworker_pb2.GetResponse:
        """Get by file_id (single head, or the conflict) or by version id (VersionGetter.get)."""
        return await self._guard(context, lambda: self.getter.get(request))

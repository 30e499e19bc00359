"""Local-API FileService: thin; the logic is storage.files.FileStore.

Errors: bad input INVALID_ARGUMENT, unknown CID/file_id/user NOT_FOUND, a private file of
another user PERMISSION_DENIED, too few fragments UNAVAILABLE, CID mismatch DATA_LOSS.
Unary Push/Get carry files up to the node's 64 MiB message limit (Get refuses files over
UNARY_GET_MAX: use GetStream); PushStream/GetStream move one stripe at a time.
Grant with ``read`` set re-seals the file key to a reader in a new owner-signed manifest
(storage); Revise, Synchronous, Log and write Grants are delegated to the ``versions``
service when one is registered in ctx.registry (issue 5), else answered UNIMPLEMENTED.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import nacl.signing

from mesh.errors import InvalidArgumentError, MeshError, PeerCallError
from proto import taskworker_pb2, taskworker_pb2_grpc
from storage.api_wire import PushChunkView, add_file_service
from storage.cid import CidError, is_cid
from storage.crypto import CryptoError
from storage.durable import local_failure
from storage.files import PushOptions, PushResult
from storage.keyring import KeyringError

if TYPE_CHECKING:
    from storage.service import StorageService

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
UNARY_GET_MAX = 60 * 2**20
_HEXKEY = re.compile(r"[0-9a-f]{64}")


async def _abort(context: Context, exc: BaseException) -> None:
    message = str(exc)
    local = local_failure(exc)
    if local is not None:
        full, message = local
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED if full
                            else grpc.StatusCode.UNAVAILABLE, message)
        return
    if isinstance(exc, PeerCallError):
        code = exc.code
    elif isinstance(exc, CidError | ValueError):
        code = grpc.StatusCode.INVALID_ARGUMENT
    elif isinstance(exc, CryptoError):
        code = grpc.StatusCode.PERMISSION_DENIED
    elif isinstance(exc, KeyringError):
        code = grpc.StatusCode.FAILED_PRECONDITION
    else:
        code = grpc.StatusCode.INTERNAL
    await context.abort(code, message)


async def _guard(context: Context, work: Callable[[], Awaitable[T]]) -> T:
    try:
        return await work()
    except (MeshError, ValueError, OSError, sqlite3.Error) as exc:
        await _abort(context, exc)
        raise AssertionError("unreachable") from exc


def _push_response(r: PushResult) -> taskworker_pb2.PushResponse:
    return taskworker_pb2.PushResponse(
        file_id=r.file_id, cid=r.cid, size=r.size, k=r.k, m=r.m,
        fragments_placed=r.fragments_placed, under_replicated=r.under_replicated,
        warnings=r.warnings)


class FileServicer(taskworker_pb2_grpc.FileServiceServicer):
    def __init__(self, service: StorageService) -> None:
        self.service = service
        self.files = service.files
        self.keyring = service.keyring

    def add_to(self, server: grpc.aio.Server) -> None:
        add_file_service(self, server)      # PushStream's chunks without copies (api_wire.py)

    def _options(self, req: taskworker_pb2.PushRequest) -> PushOptions:
        d = self.files.defaults
        readers = []
        for r in req.readers:
            readers.append(bytes.fromhex(r) if _HEXKEY.fullmatch(r) else self.keyring.public_key(r))
        return PushOptions(k=req.k or d.k, m=req.m or d.m,
                           stripe_size=req.stripe_size or d.stripe_size, public=req.public,
                           filename=req.filename, readers=readers)

    def _user(self, user_id: str) -> nacl.signing.SigningKey:
        return self.keyring.user(user_id)

    async def Push(self, request: taskworker_pb2.PushRequest,
                   context: Context) -> taskworker_pb2.PushResponse:
        async def work() -> taskworker_pb2.PushResponse:
            opts = self._options(request)
            result = await self.files.push_bytes(request.file_data, self._user(request.user_id),
                                                 opts)
            return _push_response(result)
        return await _guard(context, work)

    async def PushStream(self, request_iterator: AsyncIterator[PushChunkView],
                         context: Context) -> taskworker_pb2.PushResponse:
        async def work() -> taskworker_pb2.PushResponse:
            first = await anext(request_iterator, None)
            if first is None:
                raise InvalidArgumentError("empty PushStream: send a header chunk first")
            header = first.header
            opts = self._options(header)
            owner = self._user(header.user_id)

            async def source() -> AsyncIterator[bytes | memoryview]:
                if first.data:
                    yield first.data
                async for chunk in request_iterator:
                    if chunk.HasField("header"):
                        raise InvalidArgumentError("only the first PushChunk may carry a header")
                    if chunk.data:
                        yield chunk.data

            return _push_response(await self.files.push(source(), owner, opts))
        return await _guard(context, work)

    async def Get(self, request: taskworker_pb2.GetRequest,
                  context: Context) -> taskworker_pb2.GetResponse:
        versions = self.service.ctx.registry.get("versions")
        if versions is not None and (request.version or not is_cid(request.file_id)):
            got: taskworker_pb2.GetResponse = await versions.Get(request, context)   # issue 5
            return got

        async def work() -> taskworker_pb2.GetResponse:
            self._check_get(request)
            data, reader = await self.files.read(request.file_id, self._reader(request),
                                                 max_size=UNARY_GET_MAX)
            return taskworker_pb2.GetResponse(file_data=data, cid=reader.manifest.cid,
                                              filename=reader.filename, size=len(data))
        return await _guard(context, work)

    async def GetStream(self, request: taskworker_pb2.GetRequest,
                        context: Context) -> AsyncIterator[taskworker_pb2.GetChunk]:
        try:
            ref, version = request.file_id, ""
            versions = self.service.ctx.registry.get("versions")
            if versions is not None and (request.version or not is_cid(request.file_id)):
                target, conflicts = await versions.resolve(request)          # issue 5
                if conflicts:
                    yield taskworker_pb2.GetChunk(header=taskworker_pb2.GetResponse(
                        conflicts=conflicts))
                    return
                if target is not None:
                    ref, version = target.cid, target.id.hex()
            else:
                self._check_get(request)
            reader, stripes = await self.files.open_stream(ref, self._reader(request))
            body = reader.manifest.body
            yield taskworker_pb2.GetChunk(header=taskworker_pb2.GetResponse(
                cid=body.cid, filename=reader.filename, size=body.size, version=version))
            async for stripe in stripes:
                yield taskworker_pb2.GetChunk(data=stripe)
        except (MeshError, ValueError, OSError, sqlite3.Error) as exc:
            await _abort(context, exc)

    def _check_get(self, request: taskworker_pb2.GetRequest) -> None:
        if request.version:
            raise InvalidArgumentError("versions are not supported by this node yet")

    def _reader(self, request: taskworker_pb2.GetRequest) -> nacl.signing.SigningKey:
        return self._user(request.user_id)

    async def Stat(self, request: taskworker_pb2.StatRequest,
                   context: Context) -> taskworker_pb2.StatResponse:
        async def work() -> taskworker_pb2.StatResponse:
            st = await self.files.stat(request.file_id, self._user(request.user_id),
                                       request.deep)
            b = st.manifest.body
            return taskworker_pb2.StatResponse(
                cid=b.cid, size=b.size, k=b.k, m=b.m, health=st.health, filename=st.filename,
                owner=b.owner_key.hex(), fragments=[
                    taskworker_pb2.FragmentInfo(index=f.index,
                                                holder=f.holder.hex() if f.holder else "",
                                                address=f.address, reachable=f.reachable,
                                                healthy=f.healthy) for f in st.fragments])
        return await _guard(context, work)

    # -- issue 5 (versions) ------------------------------------------------------------------
    async def _delegate(self, name: str, request: Any, context: Context) -> Any:
        versions = self.service.ctx.registry.get("versions")
        handler = getattr(versions, name, None) if versions is not None else None
        if handler is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not available")
        return await handler(request, context)  # type: ignore[misc]

    async def Revise(self, request: taskworker_pb2.ReviseRequest,
                     context: Context) -> taskworker_pb2.ReviseResponse:
        result: taskworker_pb2.ReviseResponse = await self._delegate("Revise", request, context)
        return result

    async def Synchronous(self, request: taskworker_pb2.SynchronousRequest,
                          context: Context) -> taskworker_pb2.SynchronousResponse:
        result: taskworker_pb2.SynchronousResponse = await self._delegate(
            "Synchronous", request, context)
        return result

    async def Log(self, request: taskworker_pb2.LogRequest,
                  context: Context) -> taskworker_pb2.LogResponse:
        result: taskworker_pb2.LogResponse = await self._delegate("Log", request, context)
        return result

    async def Grant(self, request: taskworker_pb2.GrantRequest,
                    context: Context) -> taskworker_pb2.GrantResponse:
        if not request.read:
            result: taskworker_pb2.GrantResponse = await self._delegate("Grant", request, context)
            return result

        async def work() -> taskworker_pb2.GrantResponse:
            g = request.grantee
            if not g:
                raise InvalidArgumentError("grantee is required (a user name or public key hex)")
            grantee = bytes.fromhex(g) if _HEXKEY.fullmatch(g) else self.keyring.public_key(g)
            await self.files.grant(request.file_id, self._user(request.user_id), grantee,
                                   request.revoke)
            return taskworker_pb2.GrantResponse(ok=True)
        return await _guard(context, work)

"""Bearer-token authentication of the node's local gRPC API (the token files:
taskworker/api_token.py).

Every local-API call must carry the metadata ``authorization: Bearer <token>``; the standard
health check (``grpc.health.v1.Health``) and server reflection answer without it. A call without
the token, or with another one, is answered UNAUTHENTICATED with a message saying where the
token lives. grpcurl: ``-H "authorization: Bearer $(cat DATA_DIR/api.token)"``.

What this does not stop: a process of the same uid (or root) can read the token files, and
the token stands for every user in the node's keyring (there are no per-user tokens).
"""

from __future__ import annotations

import collections
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc

from taskworker.api_token import TOKEN_ENV

HEADER = "authorization"
# Methods under these prefixes answer without a token (they reveal no user data).
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                   "/grpc.reflection.v1.ServerReflection/")

Context = grpc.aio.ServicerContext[Any, Any]
Handler = Any   # grpc.RpcMethodHandler[Any, Any]


# --- server side -------------------------------------------------------------------------

def _deny_handlers(message: str) -> dict[str, Handler]:
    async def unary_unary(request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield None                                          # pragma: no cover

    async def stream_unary(requests: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def stream_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield None                                          # pragma: no cover

    return {"uu": grpc.unary_unary_rpc_method_handler(unary_unary),
            "us": grpc.unary_stream_rpc_method_handler(unary_stream),
            "su": grpc.stream_unary_rpc_method_handler(stream_unary),
            "ss": grpc.stream_stream_rpc_method_handler(stream_stream)}


def _kind(handler: Handler) -> str:
    if handler is None or handler.unary_unary is not None:
        return "uu"
    if handler.unary_stream is not None:
        return "us"
    return "su" if handler.stream_unary is not None else "ss"


class ApiTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Requires ``authorization: Bearer <token>`` on every method but health and reflection."""

    def __init__(self, token: str, where: str) -> None:
        self._token = token.encode("ascii")
        self._missing: dict[str, Handler] = {}
        self._wrong: dict[str, Handler] = {}
        self.set_where(where)

    def set_where(self, where: str) -> None:
        """Say in refusals where the token can be read (``where``: file paths)."""
        how = (f"send the metadata '{HEADER}: Bearer TOKEN'; the token is in {where} "
               f"(tw-mesh finds it itself; or pass --api-token-file / set {TOKEN_ENV})")
        self._missing = _deny_handlers(f"this node's API requires a token: {how}")
        self._wrong = _deny_handlers(f"wrong API token for this node: {how}")

    def _check(self, metadata: Any) -> bool | None:
        """True: the right token; False: another one; None: none at all."""
        for key, value in metadata or ():
            if key != HEADER:
                continue
            if isinstance(value, bytes):
                return False
            scheme, _, given = value.strip().partition(" ")
            if scheme.lower() != "bearer":
                return False
            return hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._token)
        return None

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
            handler_call_details: grpc.HandlerCallDetails) -> Handler:
        method = handler_call_details.method
        if method.startswith(EXEMPT_PREFIXES):
            return await continuation(handler_call_details)
        verdict = self._check(handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        if verdict:
            return handler
        refusals = self._missing if verdict is None else self._wrong
        return refusals[_kind(handler)]


# --- client side -------------------------------------------------------------------------

def bearer(token: str) -> tuple[str, str]:
    return (HEADER, f"Bearer {token}")


class _SyncDetails(collections.namedtuple(
        "_SyncDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                         "compression")), grpc.ClientCallDetails):
    pass


# (grpc-stubs' interceptor generics are not subscriptable at runtime: bases left bare)
class BearerToken(grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg,misc]
                  grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
                  grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
                  grpc.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    """Adds the token to every call of a synchronous channel (``grpc.intercept_channel``)."""

    def __init__(self, token: str) -> None:
        self._header = bearer(token)

    def _details(self, details: Any) -> _SyncDetails:
        return _SyncDetails(details.method, details.timeout,
                            [*(details.metadata or ()), self._header], details.credentials,
                            getattr(details, "wait_for_ready", None),
                            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any,
                               request_iterator: Iterator[Any]) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, details: Any,
                                request_iterator: Iterator[Any]) -> Any:
        return continuation(self._details(details), request_iterator)


class _AioBearer:
    def __init__(self, token: str) -> None:
        self._header = bearer(token)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._header)
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                          details.credentials, details.wait_for_ready)


# grpc.aio files an interceptor under the FIRST of the four kinds it is an instance of
# (grpc/aio/_channel.py), so each kind needs an object of its own.
class _AioUnaryUnary(_AioBearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg,misc]
    async def intercept_unary_unary(self, continuation: Any,
                                    client_call_details: grpc.aio.ClientCallDetails,
                                    request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _AioUnaryStream(_AioBearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg,misc]
    async def intercept_unary_stream(self, continuation: Any,
                                     client_call_details: grpc.aio.ClientCallDetails,
                                     request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _AioStreamUnary(_AioBearer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg,misc]
    async def intercept_stream_unary(self, continuation: Any,
                                     client_call_details: grpc.aio.ClientCallDetails,
                                     request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _AioStreamStream(_AioBearer, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg,misc]
    async def intercept_stream_stream(self, continuation: Any,
                                      client_call_details: grpc.aio.ClientCallDetails,
                                      request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def aio_interceptors(token: str) -> list[Any]:
    """Client interceptors that add ``token`` to every kind of call of a grpc.aio channel."""
    return [kind(token) for kind in (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary,
                                     _AioStreamStream)]


def aio_channel(target: str, token: str,
                options: list[tuple[str, Any]] | None = None) -> grpc.aio.Channel:
    """A grpc.aio channel to a node's local API that sends ``token`` on every call."""
    return grpc.aio.insecure_channel(target, options=options,
                                     interceptors=aio_interceptors(token))


def sync_channel(target: str, token: str | None,
                 options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """A synchronous channel to a node's local API (with ``token`` on every call if given)."""
    channel = grpc.insecure_channel(target, options=options)
    return grpc.intercept_channel(channel, BearerToken(token)) if token else channel

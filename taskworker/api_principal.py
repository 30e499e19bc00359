"""Running a local-API handler as the user a token belongs to (taskworker/api_auth.py decides
who that is and which methods they may call).

:func:`as_user` wraps a grpc method handler so that its behaviour runs with
``mesh.principal.API_USER`` set to the user, for each kind of call: a unary behaviour inside
one set/reset, a response stream with the variable set during each of its steps (set and
reset within one step, so in one context whoever drives the iteration; tasks the handler
starts copy it). Before a unary request reaches the handler its ``user_id`` is checked
(``mesh.principal.acting_user``): a request naming another user is PERMISSION_DENIED even
where the handler would not turn the name into a key (Log, Synchronous of a file that
already has versions). Streamed requests are checked where handlers use their user_id,
``storage.keyring.Keyring.user``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from mesh.errors import PermissionDeniedError
from mesh.principal import API_USER, acting_user

Context = grpc.aio.ServicerContext[Any, Any]
Handler = Any   # grpc.RpcMethodHandler[Any, Any]


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _refuse_other_user(request: Any, context: Context) -> None:
    """PERMISSION_DENIED if a request's ``user_id`` names someone else than the principal."""
    user_id = getattr(request, "user_id", None)
    if isinstance(user_id, str):
        try:
            acting_user(user_id)
        except PermissionDeniedError as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))


async def _as_user_stream(name: str, start: Callable[[], Any]) -> AsyncIterator[Any]:
    """Run a response-streaming behaviour with API_USER = ``name`` during each of its steps
    (set and reset within one step, so in one context, whoever drives the iteration)."""
    token = API_USER.set(name)
    try:
        result = start()
        if not hasattr(result, "__anext__"):          # a coroutine writing with context.write
            await _maybe_await(result)
            return
    finally:
        API_USER.reset(token)
    try:
        while True:
            token = API_USER.set(name)
            try:
                item = await anext(result)
            except StopAsyncIteration:
                return
            finally:
                API_USER.reset(token)
            yield item
    finally:
        aclose = getattr(result, "aclose", None)
        if aclose is not None:
            token = API_USER.set(name)
            try:
                await aclose()
            finally:
                API_USER.reset(token)


def as_user(handler: Handler, name: str) -> Handler:
    """``handler`` whose behaviour runs as keyring user ``name`` (mesh.principal.API_USER)."""
    args = (handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary is not None:
        inner_uu: Any = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            token = API_USER.set(name)
            try:
                await _refuse_other_user(request, context)
                return await _maybe_await(inner_uu(request, context))
            finally:
                API_USER.reset(token)
        return grpc.unary_unary_rpc_method_handler(unary_unary, *args)
    if handler.unary_stream is not None:
        inner_us: Any = handler.unary_stream

        async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            token = API_USER.set(name)
            try:
                await _refuse_other_user(request, context)
            finally:
                API_USER.reset(token)
            async for item in _as_user_stream(name, lambda: inner_us(request, context)):
                yield item
        return grpc.unary_stream_rpc_method_handler(unary_stream, *args)
    if handler.stream_unary is not None:
        inner_su: Any = handler.stream_unary

        async def stream_unary(requests: Any, context: Context) -> Any:
            token = API_USER.set(name)
            try:
                return await _maybe_await(inner_su(requests, context))
            finally:
                API_USER.reset(token)
        return grpc.stream_unary_rpc_method_handler(stream_unary, *args)
    inner_ss: Any = handler.stream_stream

    async def stream_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
        async for item in _as_user_stream(name, lambda: inner_ss(requests, context)):
            yield item
    return grpc.stream_stream_rpc_method_handler(stream_stream, *args)

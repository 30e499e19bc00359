"""A server interceptor that answers malformed requests with INVALID_ARGUMENT.

grpc-python answers a request it cannot deserialize with INTERNAL ("Exception deserializing
request!"), which reads as a server bug. Every servicer of a node is registered through generated
code, so instead of wrapping each one this interceptor swaps in a deserializer that marks the
request as malformed, and a behaviour that aborts with INVALID_ARGUMENT naming the method.

The guarded handler of a method is built once and reused while the server returns the same
handler for it (an interceptor runs on every call: building closures and a handler per call
was most of its cost); a coroutine behaviour is awaited directly, without a helper coroutine.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

_MALFORMED = object()
Context = grpc.aio.ServicerContext[Any, Any]
Handler = Any   # grpc.RpcMethodHandler[Any, Any]; grpc-stubs generics are not subscriptable at runtime


def _safe(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return _MALFORMED
    return parse


async def _refuse(context: Context, method: str) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"malformed request: not a valid protobuf message for {method}")


async def _checked_stream(requests: AsyncIterator[Any], context: Context,
                          method: str) -> AsyncIterator[Any]:
    async for request in requests:
        if request is _MALFORMED:
            await _refuse(context, method)
        yield request


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _unary_unary(inner: Any, method: str) -> Callable[[Any, Context], Awaitable[Any]]:
    if inspect.iscoroutinefunction(inner):
        async def direct(request: Any, context: Context) -> Any:
            if request is _MALFORMED:
                await _refuse(context, method)
            return await inner(request, context)
        return direct

    async def unary_unary(request: Any, context: Context) -> Any:
        if request is _MALFORMED:
            await _refuse(context, method)
        return await _maybe_await(inner(request, context))
    return unary_unary


def guard(handler: Handler, method: str) -> Handler:
    """The handler with the malformed-request check (``handler`` has a deserializer)."""
    safe = _safe(handler.request_deserializer)
    out = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary_unary(handler.unary_unary, method),
                                                   safe, out)
    if handler.unary_stream is not None:
        inner_us: Any = handler.unary_stream

        async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            if request is _MALFORMED:
                await _refuse(context, method)
            async for item in inner_us(request, context):
                yield item
        return grpc.unary_stream_rpc_method_handler(unary_stream, safe, out)
    if handler.stream_unary is not None:
        inner_su: Any = handler.stream_unary

        async def stream_unary(requests: AsyncIterator[Any], context: Context) -> Any:
            return await inner_su(_checked_stream(requests, context, method), context)
        return grpc.stream_unary_rpc_method_handler(stream_unary, safe, out)
    inner_ss: Any = handler.stream_stream

    async def stream_stream(requests: AsyncIterator[Any],
                            context: Context) -> AsyncIterator[Any]:
        async for item in inner_ss(_checked_stream(requests, context, method), context):
            yield item
    return grpc.stream_stream_rpc_method_handler(stream_stream, safe, out)


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self) -> None:
        # method -> (the server's handler, its guarded copy); only registered methods get here
        self._guarded: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails],
                                         Awaitable[Handler]],
            handler_call_details: grpc.HandlerCallDetails) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        known = self._guarded.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        guarded = guard(handler, method)
        self._guarded[method] = (handler, guarded)
        return guarded

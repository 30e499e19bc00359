"""A gRPC relay between two nodes that sees (and may rewrite) every serialized message.

It plays the network attacker: it cannot decrypt, but it can record, flip, replay and swap
bytes of the PeerChannel messages passing through it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

Mutator = Callable[[str, str, bytes], bytes]   # (method, "req"|"resp", message) -> message
_SERVICE = "twmesh.peer.PeerChannel"


class Relay:
    def __init__(self, target: str, mutate: Mutator | None = None) -> None:
        self.target = target
        self.mutate: Mutator = mutate or (lambda _m, _d, msg: msg)
        self.log: list[tuple[str, str, bytes]] = []
        self.port = 0
        self._server = grpc.aio.server()
        self._channel: grpc.aio.Channel | None = None

    def _pass(self, method: str, direction: str, msg: bytes) -> bytes:
        self.log.append((method, direction, msg))
        return self.mutate(method, direction, msg)

    async def start(self) -> str:
        self._channel = grpc.aio.insecure_channel(self.target)
        up_hs = self._channel.unary_unary(f"/{_SERVICE}/Handshake")
        up_call = self._channel.unary_unary(f"/{_SERVICE}/Call")
        up_stream = self._channel.stream_stream(f"/{_SERVICE}/Stream")

        def unary(name: str, upstream: Any) -> Any:
            async def handler(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
                try:
                    resp = await upstream(self._pass(name, "req", request))
                except grpc.aio.AioRpcError as exc:
                    await context.abort(exc.code(), exc.details() or "")
                return self._pass(name, "resp", resp)
            return grpc.unary_unary_rpc_method_handler(handler)

        async def stream(requests: AsyncIterator[bytes],
                         context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
            async def forward() -> AsyncIterator[bytes]:
                async for msg in requests:
                    yield self._pass("Stream", "req", msg)
            try:
                async for resp in up_stream(forward()):
                    yield self._pass("Stream", "resp", resp)
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")

        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_SERVICE, {
            "Handshake": unary("Handshake", up_hs),
            "Call": unary("Call", up_call),
            "Stream": grpc.stream_stream_rpc_method_handler(stream),
        })])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return f"127.0.0.1:{self.port}"

    async def replay(self, method: str, message: bytes) -> bytes:
        assert self._channel is not None
        result: bytes = await self._channel.unary_unary(f"/{_SERVICE}/{method}")(message)
        return result

    async def replay_status(self, method: str, message: bytes) -> grpc.StatusCode:
        """Send ``message`` again; the status the server answers."""
        try:
            await self.replay(method, message)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    async def stop(self) -> None:
        await self._server.stop(None)
        if self._channel is not None:
            await self._channel.close()

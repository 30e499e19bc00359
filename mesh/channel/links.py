"""The two transports a PeerChannel can use to reach a peer, behind one interface.

``TcpLink`` (tcp_client.py; preferred: the peer advertises a ``channel_port``) and ``GrpcLink``
(here; the peer gRPC port) both move handshake messages and sealed frames unchanged, and both
fail with ``LinkError(code, details)`` (the status gRPC would give) or ``LinkClosed`` (the pool
closed the link under the call). Nothing here sees a key or a plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import grpc

from mesh.channel import reply_cap
from mesh.channel.frames import Frame
from proto import peer_pb2

MAX_MESSAGE_BYTES = 64 * 2**20
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


class LinkError(Exception):
    """The transport failed the call with this status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class LinkClosed(Exception):
    """The link was closed under the call (membership saw the peer die)."""


class GrpcLink:
    """The PeerChannel gRPC service on the peer's gRPC port."""

    def __init__(self, address: str) -> None:
        self._grpc = grpc.aio.insecure_channel(address, options=GRPC_OPTIONS)
        self._handshake = self._grpc.unary_unary(
            "/twmesh.peer.PeerChannel/Handshake",
            request_serializer=peer_pb2.HandshakeRequest.SerializeToString,
            response_deserializer=peer_pb2.HandshakeResponse.FromString)
        self._call = self._grpc.unary_unary("/twmesh.peer.PeerChannel/Call",
                                            request_serializer=Frame.encode,
                                            response_deserializer=Frame.decode)
        self._stream = self._grpc.stream_stream("/twmesh.peer.PeerChannel/Stream",
                                                request_serializer=Frame.encode,
                                                response_deserializer=Frame.decode)
        self._is_closed = False

    def _cancelled_by_close(self) -> bool:
        """grpc cancels the calls in flight when their channel closes: that CancelledError is
        a transport failure of this call, not a cancellation of the caller's task."""
        task = asyncio.current_task()
        return self._is_closed and (task is None or task.cancelling() == 0)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """grpc's failures as this module's: a status as LinkError, a closed channel (or the
        cancellation its closing causes) as LinkClosed."""
        try:
            yield
        except grpc.aio.AioRpcError as exc:
            raise LinkError(exc.code(), exc.details() or "") from exc
        except grpc.aio.UsageError as exc:
            raise LinkClosed(repr(exc)) from exc
        except asyncio.CancelledError as exc:
            if self._cancelled_by_close():
                raise LinkClosed(repr(exc)) from exc
            raise

    async def handshake(self, request: peer_pb2.HandshakeRequest,
                        timeout: float | None) -> peer_pb2.HandshakeResponse:
        with self._translated():
            response: peer_pb2.HandshakeResponse = await self._handshake(request, timeout=timeout)
        return response

    async def call(self, frame: Frame, timeout: float | None,
                   max_reply: int | None = None) -> Frame:
        """grpc has no per-call receive limit: a reply over ``max_reply`` (reply_cap.py) is
        received whole (up to MAX_MESSAGE_BYTES) and refused here, before it is opened."""
        with self._translated():
            reply: Frame = await self._call(frame, timeout=timeout)
        reply_cap.check_frame(reply, max_reply)
        return reply

    async def stream(self, frames: AsyncIterator[Frame],
                     timeout: float | None) -> AsyncIterator[Frame]:
        """The peer's frames, up to and including the final one."""
        with self._translated():
            call = self._stream(frames, timeout=timeout)
        try:
            with self._translated():
                async for frame in call:
                    yield frame
                    if frame.final:
                        return
        finally:
            call.cancel()

    async def close(self) -> None:
        self._is_closed = True
        await self._grpc.close(None)

"""Server half of the peer channel: the PeerChannel gRPC servicer and a handler registry.

Handlers see only the authenticated caller and plaintext bytes; they raise PeerCallError
subclasses (mapped to the status in the sealed Reply) and never touch keys or frames.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from mesh.channel.handshake import server_respond
from mesh.channel.session import Session, SessionPolicy
from mesh.errors import FrameError, HandshakeError, PeerCallError, status_value
from mesh.identity import Identity
from proto import peer_pb2, peer_pb2_grpc

log = logging.getLogger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class Caller:
    """The authenticated peer on the other end of a call."""

    node_id: bytes
    public_key: bytes


UnaryHandler = Callable[[Caller, bytes], Awaitable[bytes]]
StreamHandler = Callable[[Caller, bytes, AsyncIterator[bytes]], AsyncIterator[bytes]]


def _reply(code: grpc.StatusCode, message: str = "", body: bytes = b"") -> bytes:
    return peer_pb2.Reply(code=status_value(code), message=message, body=body).SerializeToString()


class ChannelServer(peer_pb2_grpc.PeerChannelServicer):
    """Accepts handshakes and dispatches sealed calls to registered handlers."""

    def __init__(self, identity: Identity, *, policy: SessionPolicy | None = None,
                 max_sessions: int = 4096) -> None:
        self._identity = identity
        self._policy = policy or SessionPolicy()
        self._max_sessions = max_sessions
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        self._unary: dict[str, UnaryHandler] = {}
        self._stream: dict[str, StreamHandler] = {}
        self.refused_frames = 0

    def handle(self, method: str, handler: UnaryHandler) -> None:
        self._unary[method] = handler

    def handle_stream(self, method: str, handler: StreamHandler) -> None:
        self._stream[method] = handler

    def add_to(self, server: grpc.aio.Server) -> None:
        peer_pb2_grpc.add_PeerChannelServicer_to_server(self, server)

    # -- gRPC methods (inbound) -------------------------------------------------------------
    async def Handshake(self, request: peer_pb2.HandshakeRequest,
                        context: Context) -> peer_pb2.HandshakeResponse:
        try:
            response, keys = server_respond(self._identity, request)
        except HandshakeError as exc:
            log.warning("refused handshake from %s: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"handshake refused: {exc}")
            raise  # unreachable: abort raises
        self._sessions[keys.session_id] = Session(keys, is_client=False, policy=self._policy)
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
        return response

    async def Call(self, request: peer_pb2.SealedFrame,
                   context: Context) -> peer_pb2.SealedFrame:
        session = await self._session_for(request, context)
        envelope = await self._open_header(session, request, context)
        caller = Caller(session.keys.peer_id, session.keys.peer_key)
        handler = self._unary.get(envelope.method)
        if handler is None:
            reply = _reply(grpc.StatusCode.NOT_FOUND, f"unknown peer method {envelope.method!r}")
        else:
            try:
                reply = _reply(grpc.StatusCode.OK, body=await handler(caller, envelope.body))
            except PeerCallError as exc:
                reply = _reply(exc.code, str(exc))
            except Exception:
                log.exception("peer method %s failed", envelope.method)
                reply = _reply(grpc.StatusCode.INTERNAL, f"{envelope.method} failed on the peer")
        return session.seal(request.call_id, 0, True, reply)

    async def Stream(self, request_iterator: AsyncIterator[peer_pb2.SealedFrame],
                     context: Context) -> AsyncIterator[peer_pb2.SealedFrame]:
        first = await anext(request_iterator, None)
        if first is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty stream")
            return
        session = await self._session_for(first, context)
        envelope = await self._open_header(session, first, context, final_ok=True)
        caller = Caller(session.keys.peer_id, session.keys.peer_key)
        call_id = first.call_id

        async def chunks() -> AsyncIterator[bytes]:
            if first.final:
                return
            index = 1
            async for frame in request_iterator:
                plaintext = session.open(frame, call_id, index)
                index += 1
                if frame.final:
                    return
                yield plaintext
            raise FrameError("request stream ended without its final frame (truncated)")

        handler = self._stream.get(envelope.method)
        out = 0
        if handler is None:
            reply = _reply(grpc.StatusCode.NOT_FOUND, f"unknown peer stream {envelope.method!r}")
        else:
            try:
                async for chunk in handler(caller, envelope.body, chunks()):
                    yield session.seal(call_id, out, False, chunk)
                    out += 1
                reply = _reply(grpc.StatusCode.OK)
            except PeerCallError as exc:
                reply = _reply(exc.code, str(exc))
            except FrameError as exc:
                self.refused_frames += 1
                log.warning("refused frame from %s: %s", caller.node_id.hex()[:8], exc)
                reply = _reply(grpc.StatusCode.DATA_LOSS, f"frame refused: {exc}")
            except Exception:
                log.exception("peer stream %s failed", envelope.method)
                reply = _reply(grpc.StatusCode.INTERNAL, f"{envelope.method} failed on the peer")
        yield session.seal(call_id, out, True, reply)

    # -- helpers ---------------------------------------------------------------------------
    async def _session_for(self, frame: peer_pb2.SealedFrame,
                           context: Context) -> Session:
        session = self._sessions.get(frame.session_id)
        if session is None or session.expired():
            self._sessions.pop(frame.session_id, None)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or expired session")
            raise AssertionError("unreachable")
        self._sessions.move_to_end(frame.session_id)
        return session

    async def _open_header(self, session: Session, frame: peer_pb2.SealedFrame,
                           context: Context,
                           final_ok: bool = False) -> peer_pb2.Envelope:
        try:
            if not (frame.final or final_ok):
                raise FrameError("a unary request must be a single final frame")
            plaintext = session.open(frame, frame.call_id, 0)
            session.accept_call(frame.call_id)   # only after the frame authenticated
            return peer_pb2.Envelope.FromString(plaintext)
        except (FrameError, DecodeError) as exc:
            self.refused_frames += 1
            log.warning("refused frame from %s: %s", session.keys.peer_id.hex()[:8], exc)
            await context.abort(grpc.StatusCode.DATA_LOSS, f"frame refused: {exc}")
            raise AssertionError("unreachable") from exc

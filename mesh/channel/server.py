"""Server half of the peer channel: a handler registry, the transport-neutral call logic, and
the PeerChannel gRPC servicer (the TCP transport's listener is tcp_server.py).

Handlers see only the authenticated caller and plaintext bytes; they raise PeerCallError
subclasses (mapped to the status in the sealed Reply) and never touch keys or frames. A unary
handler may answer with a ``Body`` in parts (a fetched fragment behind its field key): the seal
gathers them into the reply frame with one copy (frames.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from mesh.channel import allocator
from mesh.channel.admission import AdmissionPolicy, HandshakeGate, Throttled, grpc_peer_host
from mesh.channel.frames import Body, Buffer, Frame, decode_envelope, encode_reply
from mesh.channel.handshake import server_respond
from mesh.channel.session import Session, SessionPolicy
from mesh.channel.sessions import SessionCache
from mesh.errors import FrameError, HandshakeError, PeerCallError, status_value
from mesh.identity import Identity
from proto import peer_pb2

log = logging.getLogger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]


class Abort(Exception):
    """A call refused before any handler ran; each transport reports it as its status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Caller:
    """The authenticated peer on the other end of a call."""

    node_id: bytes
    public_key: bytes


UnaryHandler = Callable[[Caller, bytes], Awaitable[Body]]
ViewHandler = Callable[[Caller, memoryview], Awaitable[Body]]   # the body as a view, no copy
StreamHandler = Callable[[Caller, bytes, AsyncIterator[bytes]], AsyncIterator[bytes]]


SERVICE = "twmesh.peer.PeerChannel"


def _reply(code: grpc.StatusCode, message: str = "", body: Body = b"") -> list[Buffer]:
    return encode_reply(status_value(code), message, body)


def _encode(frame: Frame) -> bytes:
    return frame.encode()


class ChannelServer:
    """Accepts handshakes and dispatches sealed calls to registered handlers."""

    def __init__(self, identity: Identity, *, policy: SessionPolicy | None = None,
                 admission: AdmissionPolicy | None = None) -> None:
        allocator.tune()
        self._identity = identity
        self._policy = policy or SessionPolicy()
        self.admission = admission or AdmissionPolicy()
        self.gate = HandshakeGate(self.admission)
        self._sessions = SessionCache(self.admission.max_sessions)
        self.handshakes = 0     # answered (each cost the signature work)
        self._unary: dict[str, UnaryHandler] = {}
        self._views: dict[str, ViewHandler] = {}
        self._stream: dict[str, StreamHandler] = {}
        self.refused_frames = 0

    def handle(self, method: str, handler: UnaryHandler) -> None:
        self._unary[method] = handler
        self._views.pop(method, None)

    def handle_view(self, method: str, handler: ViewHandler) -> None:
        """Like ``handle``, for a handler that takes the request body as a view into the
        opened frame (bulk writes: a fragment is not copied out of it)."""
        self._views[method] = handler
        self._unary.pop(method, None)

    def handle_stream(self, method: str, handler: StreamHandler) -> None:
        self._stream[method] = handler

    def add_to(self, server: grpc.aio.Server) -> None:
        """Serve Handshake (protobuf) and Call/Stream (binary frames, frames.py) on ``server``."""
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
            "Handshake": grpc.unary_unary_rpc_method_handler(
                self.Handshake, peer_pb2.HandshakeRequest.FromString,
                peer_pb2.HandshakeResponse.SerializeToString),
            "Call": grpc.unary_unary_rpc_method_handler(self.Call, Frame.decode, _encode),
            "Stream": grpc.stream_stream_rpc_method_handler(self.Stream, Frame.decode, _encode),
        })])

    # -- gRPC methods (inbound) -------------------------------------------------------------
    async def Handshake(self, request: peer_pb2.HandshakeRequest,
                        context: Context) -> peer_pb2.HandshakeResponse:
        try:
            peer = context.peer()
            return self.respond(request, peer, grpc_peer_host(peer))
        except Abort as exc:
            await context.abort(exc.code, exc.message)
            raise  # unreachable: abort raises

    async def Call(self, request: Frame, context: Context) -> Frame:
        try:
            return await self.serve_call(request)
        except Abort as exc:
            await context.abort(exc.code, exc.message)
            raise  # unreachable: abort raises

    async def Stream(self, request_iterator: AsyncIterator[Frame],
                     context: Context) -> AsyncIterator[Frame]:
        first = await anext(request_iterator, None)
        if first is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty stream")
            return
        try:
            async for frame in self.serve_stream(first, request_iterator):
                yield frame
        except Abort as exc:
            await context.abort(exc.code, exc.message)

    # -- transport-neutral core (the gRPC methods above and tcp_server.py) -------------------
    def respond(self, request: peer_pb2.HandshakeRequest, peer: str,
                host: str) -> peer_pb2.HandshakeResponse:
        """Answer a handshake from ``host`` and remember the session it opens. The request is
        charged to the host's budget, then checked against the replay cache, before any
        signature work (admission.py)."""
        try:
            source, digest = self.gate.admit(self._identity, request, host)
            response, keys = server_respond(self._identity, request)
        except Throttled as exc:
            raise Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from exc
        except HandshakeError as exc:
            log.warning("refused handshake from %s: %s", peer, exc)
            raise Abort(grpc.StatusCode.UNAUTHENTICATED, f"handshake refused: {exc}") from exc
        self.handshakes += 1
        self.gate.answered(digest, request)
        self._sessions.add(Session(keys, is_client=False, policy=self._policy), source)
        return response

    async def serve_call(self, request: Frame) -> Frame:
        """The sealed reply to a unary request frame."""
        session = self._session_for(request)
        method, body = self._open_header(session, request)
        caller = Caller(session.keys.peer_id, session.keys.peer_key)
        handler = self._unary.get(method)
        viewer = self._views.get(method) if handler is None else None
        if handler is None and viewer is None:
            reply = _reply(grpc.StatusCode.NOT_FOUND, f"unknown peer method {method!r}")
        else:
            try:
                if viewer is not None:
                    result = await viewer(caller, body)
                else:
                    assert handler is not None
                    result = await handler(caller, bytes(body))
                reply = _reply(grpc.StatusCode.OK, body=result)
            except PeerCallError as exc:
                reply = _reply(exc.code, str(exc))
            except Exception:
                log.exception("peer method %s failed", method)
                reply = _reply(grpc.StatusCode.INTERNAL, f"{method} failed on the peer")
        return session.seal(request.call_id, 0, True, reply)

    async def serve_stream(self, first: Frame,
                           rest: AsyncIterator[Frame]) -> AsyncGenerator[Frame, None]:
        """The sealed response frames to a stream call whose first frame is ``first``."""
        session = self._session_for(first)
        method, view = self._open_header(session, first, final_ok=True)
        header = bytes(view)
        caller = Caller(session.keys.peer_id, session.keys.peer_key)
        call_id = first.call_id

        async def chunks() -> AsyncIterator[bytes]:
            if first.final:
                return
            index = 1
            async for frame in rest:
                plaintext = session.open(frame, call_id, index)
                index += 1
                if frame.final:
                    return
                yield plaintext
            raise FrameError("request stream ended without its final frame (truncated)")

        handler = self._stream.get(method)
        out = 0
        if handler is None:
            reply = _reply(grpc.StatusCode.NOT_FOUND, f"unknown peer stream {method!r}")
        else:
            try:
                async for chunk in handler(caller, header, chunks()):
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
                log.exception("peer stream %s failed", method)
                reply = _reply(grpc.StatusCode.INTERNAL, f"{method} failed on the peer")
        yield session.seal(call_id, out, True, reply)

    def knows_session(self, session_id: bytes) -> bool:
        """A live session has this id (tcp_preauth.py: 16 random bytes only its two ends and
        whoever sees their traffic know)."""
        return self.session_peer(session_id) is not None

    def session_peer(self, session_id: bytes) -> bytes | None:
        """The client node id of the live session with this id (tcp_budget.py's peer)."""
        session = self._sessions.get(session_id)
        return None if session is None or session.expired() else session.keys.peer_id

    # -- helpers ---------------------------------------------------------------------------
    def _session_for(self, frame: Frame) -> Session:
        session = self._sessions.get(frame.session_id)
        if session is None or session.expired():
            self._sessions.pop(frame.session_id)
            raise Abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or expired session")
        self._sessions.touch(frame.session_id)
        return session

    def _open_header(self, session: Session, frame: Frame,
                     final_ok: bool = False) -> tuple[str, memoryview]:
        try:
            if not (frame.final or final_ok):
                raise FrameError("a unary request must be a single final frame")
            plaintext = session.open(frame, frame.call_id, 0)
            session.accept_call(frame.call_id)   # only after the frame authenticated
            return decode_envelope(plaintext)
        except FrameError as exc:
            self.refused_frames += 1
            log.warning("refused frame from %s: %s", session.keys.peer_id.hex()[:8], exc)
            raise Abort(grpc.StatusCode.DATA_LOSS, f"frame refused: {exc}") from exc

"""Client half of the peer channel: a pool of authenticated sessions, one per peer.

``ChannelPool.peer(node_id, address)`` gives a PeerChannel; typed clients (storage, compute,
...) wrap it. A session is established lazily, re-keyed when it ages out, and re-established
once, transparently, if the server has forgotten it (e.g. after a restart).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc

from mesh.channel import allocator, reply_cap
from mesh.channel.frames import Body, Frame, decode_reply, encode_envelope
from mesh.channel.handshake import ClientHandshake
from mesh.channel.hedge import hedged
from mesh.channel.links import GrpcLink, LinkClosed, LinkError
from mesh.channel.session import Session, SessionPolicy
from mesh.channel.tcp_client import TcpLink
from mesh.errors import (
    ChannelError,
    FrameError,
    HandshakeError,
    PeerCallError,
    UnavailableError,
    error_for_code,
    status_value,
)
from mesh.identity import Identity

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ChannelTimeouts:
    """Per-phase timeouts in seconds (None: no limit)."""

    handshake: float = 3.0
    call: float | None = 30.0


def _status_error(code: grpc.StatusCode, details: str,
                  address: str) -> ChannelError | PeerCallError:
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return HandshakeError(f"{address}: {details}")
    if code == grpc.StatusCode.DATA_LOSS:
        return FrameError(f"{address}: {details}")
    if code == grpc.StatusCode.UNAVAILABLE:
        return UnavailableError(f"peer {address} unreachable: {details}")
    return error_for_code(code, f"{address}: {details}")


def _split_host(address: str) -> str:
    host = address.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


class PeerChannel:
    """Sealed calls to one peer whose identity is its node ID.

    Over TCP (tcp_wire.py) when the peer advertises a channel port, else over its gRPC port;
    the sealing, the errors and the re-keying are the same either way.
    """

    def __init__(self, pool: ChannelPool, node_id: bytes, address: str,
                 channel_port: int = 0) -> None:
        self.node_id = node_id
        self.address = address
        self._pool = pool
        self._link: GrpcLink | TcpLink = (TcpLink(_split_host(address), channel_port)
                                          if channel_port else GrpcLink(address))
        self._session: Session | None = None
        self._lock = asyncio.Lock()

    @property
    def transport(self) -> str:
        return "tcp" if isinstance(self._link, TcpLink) else "grpc"

    async def _ensure_session(self) -> Session:
        async with self._lock:
            if self._session is None or self._session.expired():
                hs = ClientHandshake(self._pool.identity, self.node_id)
                try:
                    resp = await self._link.handshake(hs.request,
                                                      self._pool.timeouts.handshake)
                except LinkError as exc:
                    raise self._failed(exc) from exc
                except LinkClosed as exc:
                    raise self._closed(exc) from exc
                keys = hs.finish(resp)
                self._session = Session(keys, is_client=True, policy=self._pool.policy)
            return self._session

    def _failed(self, exc: LinkError) -> ChannelError | PeerCallError:
        err = _status_error(exc.code, exc.details, self.address)
        if isinstance(err, UnavailableError) and self._pool.on_unreachable is not None:
            self._pool.on_unreachable(self.node_id)
        return err

    def _closed(self, exc: BaseException) -> UnavailableError:
        """The pool closed this channel under a call (the peer was reported unreachable)."""
        return UnavailableError(f"peer {self.address} unreachable: channel closed ({exc})")

    def _forget(self, session: Session) -> None:
        if self._session is session:
            self._session = None

    async def unary(self, method: str, body: Body, *, timeout: float | None = None,
                    hedge_after: float | None = None, max_reply: int | None = None) -> bytes:
        """One sealed request, one sealed reply; raises the peer's error as PeerCallError.

        ``hedge_after`` (idempotent methods only: the peer may run both): with no answer by
        then, the request goes out again as a new call, on another connection over TCP, and
        the first answer wins (hedge.py). A connection stuck in TCP retransmission backoff
        held single stores for 8-19 s under 20% loss while new calls got through.

        ``max_reply``: the most bytes of reply body this caller takes; a larger reply raises
        ReplyTooLargeError (over TCP refused at its header, unread: reply_cap.py).
        """
        return bytes(await self.unary_view(method, body, timeout=timeout,
                                           hedge_after=hedge_after, max_reply=max_reply))

    async def unary_view(self, method: str, body: Body, *, timeout: float | None = None,
                         hedge_after: float | None = None,
                         max_reply: int | None = None) -> memoryview:
        """``unary``'s reply body as a view into the opened frame: a fetched fragment is not
        copied out of it (a view keeps the frame's plaintext alive while it is held)."""
        if hedge_after is None:
            return await self._unary(method, body, timeout, max_reply)
        loop = asyncio.get_running_loop()
        limit = timeout or self._pool.timeouts.call
        deadline = None if limit is None else loop.time() + limit

        def attempt() -> Coroutine[Any, Any, memoryview]:
            left = None if deadline is None else max(0.001, deadline - loop.time())
            return self._unary(method, body, left, max_reply)

        def counted() -> None:
            self._pool.hedged_calls += 1
        return await hedged(attempt, hedge_after, on_hedge=counted)

    async def _unary(self, method: str, body: Body, timeout: float | None,
                     max_reply: int | None) -> memoryview:
        for attempt in (0, 1):
            session = await self._ensure_session()
            call_id = session.new_call_id()
            envelope = encode_envelope(method, body)
            try:
                resp = await self._link.call(session.seal(call_id, 0, True, envelope),
                                             timeout or self._pool.timeouts.call, max_reply)
            except LinkError as exc:
                if exc.code == grpc.StatusCode.UNAUTHENTICATED and attempt == 0:
                    self._forget(session)    # server lost or expired the session: re-key once
                    continue
                raise self._failed(exc) from exc
            except LinkClosed as exc:
                raise self._closed(exc) from exc
            except reply_cap.ReplyOverCap as exc:   # the connection is closed, not the session
                raise reply_cap.refused(exc, self.address) from None
            if not resp.final:
                raise FrameError("unary reply is not a single final frame")
            return reply_cap.check_body(_unwrap(session.open(resp, call_id, 0)), max_reply,
                                        self.address)
        raise AssertionError("unreachable")

    async def stream(self, method: str, body: bytes, chunks: AsyncIterable[bytes] | None = None,
                     *, timeout: float | None = None) -> AsyncIterator[bytes]:
        """Send a header and optional chunks; yield the peer's response chunks.

        Truncation in either direction is detected: each side ends with a final frame.
        """
        session = await self._ensure_session()
        call_id = session.new_call_id()

        async def frames() -> AsyncIterator[Frame]:
            header = encode_envelope(method, body)
            yield session.seal(call_id, 0, chunks is None, header)
            if chunks is None:
                return
            index = 1
            async for chunk in chunks:
                yield session.seal(call_id, index, False, chunk)
                index += 1
            yield session.seal(call_id, index, True, b"")

        index = 0
        try:
            async for frame in self._link.stream(frames(), timeout):
                plaintext = session.open(frame, call_id, index)
                index += 1
                if frame.final:
                    _unwrap(plaintext)
                    return
                yield plaintext
        except LinkError as exc:
            if exc.code == grpc.StatusCode.UNAUTHENTICATED:
                self._forget(session)
            raise self._failed(exc) from exc
        except LinkClosed as exc:
            raise self._closed(exc) from exc
        raise FrameError("response stream ended without its final frame (truncated)")

    async def close(self) -> None:
        await self._link.close()


def _unwrap(plaintext: bytes) -> memoryview:
    code, message, body = decode_reply(plaintext)
    if code == status_value(grpc.StatusCode.DATA_LOSS):
        raise FrameError(message)
    if code:
        raise error_for_code(code, message)
    return body


class ChannelPool:
    """Owns the client sessions of one node."""

    def __init__(self, identity: Identity, *, timeouts: ChannelTimeouts | None = None,
                 policy: SessionPolicy | None = None,
                 on_unreachable: Callable[[bytes], None] | None = None) -> None:
        allocator.tune()
        self.identity = identity
        self.timeouts = timeouts or ChannelTimeouts()
        self.policy = policy or SessionPolicy()
        self.on_unreachable = on_unreachable
        self._peers: dict[tuple[bytes, str, int], PeerChannel] = {}
        self.hedged_calls = 0

    def peer(self, node_id: bytes, address: str, channel_port: int = 0) -> PeerChannel:
        """The channel to ``node_id`` at ``address`` (over TCP to ``channel_port`` if set)."""
        key = (node_id, address, channel_port)
        channel = self._peers.get(key)
        if channel is None:
            channel = self._peers[key] = PeerChannel(self, node_id, address, channel_port)
        return channel

    async def forget(self, node_id: bytes) -> None:
        for key in [k for k in self._peers if k[0] == node_id]:
            await self._peers.pop(key).close()

    async def close(self) -> None:
        peers, self._peers = list(self._peers.values()), {}
        for channel in peers:
            await channel.close()

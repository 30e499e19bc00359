"""The TCP transport's client side: ``TcpLink``, one per peer (framing in tcp_wire.py).

Length-prefixed messages on plain TCP connections, one call at a time per connection; idle
connections are kept for the next call, and a pooled one the peer has since closed is replaced
once, transparently (the same sealed frame is sent again, so the replay window rules out a
double delivery). Fails like GrpcLink (links.py): ``LinkError`` with the status gRPC would
give, ``LinkClosed`` when the pool closed the link under the call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import DecodeError

from mesh.channel import reply_cap
from mesh.channel.frames import Frame
from mesh.channel.hedge import hedged
from mesh.channel.links import LinkClosed, LinkError
from mesh.channel.tcp_conn import Connection, open_connection
from mesh.channel.tcp_wire import ABORT, CALL, HANDSHAKE, STREAM, decode_abort, write_message
from mesh.errors import FrameError
from proto import peer_pb2

_CODES = {code.value[0]: code for code in grpc.StatusCode}
_LOST = (asyncio.IncompleteReadError, ConnectionError)
DRAIN_S = 60.0     # how long an abandoned call's connection waits for its late answer
CONNECT_HEDGE_S = 0.25    # a second connection attempt after this long (TcpLink._connect)


class TcpLink:
    """Length-prefixed messages (tcp_wire.py) on plain TCP connections, one call at a time
    per connection; idle connections are kept for the next call."""

    def __init__(self, host: str, port: int, *, max_idle: int = 8) -> None:
        self.host, self.port = host, port
        self._max_idle = max_idle
        self._idle: list[Connection] = []
        self._busy: set[Connection] = set()
        self._is_closed = False
        self._draining: set[asyncio.Task[None]] = set()
        self.hedged_connects = 0
        self.refused_replies = 0       # over their call's max_reply, at the header (unread)

    async def _take(self) -> tuple[Connection, bool]:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                self._busy.add(conn)
                return conn, True
            conn.close()
        if self._is_closed:
            raise LinkClosed("link closed")
        try:
            conn = await self._connect()
        except OSError as exc:
            raise LinkError(grpc.StatusCode.UNAVAILABLE, f"connect failed: {exc}") from exc
        self._busy.add(conn)
        return conn, False

    async def _open(self) -> Connection:
        return await open_connection(self.host, self.port)

    async def _connect(self) -> Connection:
        """A new connection; a second attempt starts if the first has not connected within
        CONNECT_HEDGE_S (hedge.py). A lost SYN (or SYN-ACK) costs the kernel's initial
        retransmission timeout, a whole second, and on a lossy path a call may need several
        connections; the hedge cuts that to CONNECT_HEDGE_S. A losing attempt that connected
        anyway is pooled. Raises the first attempt's OSError if every attempt fails."""
        def counted() -> None:
            self.hedged_connects += 1
        return await hedged(self._open, CONNECT_HEDGE_S, on_hedge=counted,
                            spare=lambda conn: self._give_back(conn, True))

    def _give_back(self, conn: Connection, reusable: bool) -> None:
        self._busy.discard(conn)
        conn.gate = None                  # a call's reply cap ends with its call
        if reusable and not self._is_closed and len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.transport.abort()

    def _lost(self, exc: BaseException) -> LinkError | LinkClosed:
        if self._is_closed:
            return LinkClosed("link closed")
        return LinkError(grpc.StatusCode.UNAVAILABLE, f"connection to the peer lost ({exc!r})")

    async def _exchange(self, kind: int, payload: bytes, timeout: float | None,
                        max_reply: int | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):     # connecting included
                got, body = await self._send_and_read(kind, payload, max_reply)
        except TimeoutError as exc:
            raise LinkError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded") from exc
        if got == ABORT:
            code, message = decode_abort(body)
            raise LinkError(_CODES.get(code, grpc.StatusCode.UNKNOWN), message)
        if got != kind:
            raise LinkError(grpc.StatusCode.DATA_LOSS, f"answer of kind {got} to kind {kind}")
        return body

    async def _send_and_read(self, kind: int, payload: bytes,
                             max_reply: int | None) -> tuple[int, bytes]:
        """With ``max_reply``, a reply announced over it is refused at its header, unread
        (reply_cap.py), and its connection closed; the gate is set before the request goes
        out (the answer may arrive during ``drain``)."""
        for attempt in (0, 1):
            conn, reused = await self._take()
            reusable = sent = handed_off = False
            try:
                conn.gate = None if max_reply is None else reply_cap.gate(max_reply)
                write_message(conn, kind, payload)
                await conn.drain()
                sent = True
                answer = await conn.read()
                reusable = True
                return answer
            except asyncio.CancelledError:
                if sent:                  # deadline or caller gave up: the answer still comes
                    self._drain_later(conn)
                    handed_off = True
                raise
            except _LOST as exc:
                if reused and attempt == 0 and not self._is_closed:
                    continue             # the peer closed an idle connection: use a new one
                raise self._lost(exc) from exc
            except reply_cap.ReplyOverCap:
                self.refused_replies += 1
                raise
            except FrameError as exc:
                raise LinkError(grpc.StatusCode.DATA_LOSS, str(exc)) from exc
            finally:
                if not handed_off:
                    self._give_back(conn, reusable)
        raise AssertionError("unreachable")

    def _drain_later(self, conn: Connection) -> None:
        """Keep a connection whose call was abandoned after its request went out: read the
        late answer in the background, then pool it. Opening a new connection instead costs a
        TCP handshake, whose lost SYN waits a whole second (hedged reads cancel calls often).
        The gate stays for that read: the late answer is the abandoned call's, held to its cap
        (one over it closes the connection); ``_give_back`` clears it before any reuse."""
        self._busy.discard(conn)
        task = asyncio.get_running_loop().create_task(self._drain(conn))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _drain(self, conn: Connection) -> None:
        try:
            async with asyncio.timeout(DRAIN_S):
                await conn.read()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, FrameError):
            conn.transport.abort()
            return
        except asyncio.CancelledError:
            conn.transport.abort()
            raise
        self._give_back(conn, True)

    async def handshake(self, request: peer_pb2.HandshakeRequest,
                        timeout: float | None) -> peer_pb2.HandshakeResponse:
        body = await self._exchange(HANDSHAKE, request.SerializeToString(), timeout)
        try:
            return peer_pb2.HandshakeResponse.FromString(body)
        except DecodeError as exc:
            raise LinkError(grpc.StatusCode.UNAUTHENTICATED, "malformed handshake response") from exc

    async def call(self, frame: Frame, timeout: float | None,
                   max_reply: int | None = None) -> Frame:
        body = await self._exchange(CALL, frame.encode(), timeout, max_reply)
        try:
            return Frame.decode(body)
        except FrameError as exc:
            raise LinkError(grpc.StatusCode.DATA_LOSS, str(exc)) from exc

    async def stream(self, frames: AsyncIterator[Frame],
                     timeout: float | None) -> AsyncIterator[Frame]:
        """Send ``frames`` while yielding the peer's, up to and including the final one."""
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                conn, _ = await self._take()
        except TimeoutError as exc:
            raise LinkError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded") from exc
        sender = asyncio.create_task(_send_all(conn, frames))
        clean = False
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        kind, body = await conn.read()
                    frame = Frame.decode(body) if kind == STREAM else None
                except TimeoutError as exc:
                    raise LinkError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    "deadline exceeded") from exc
                except _LOST as exc:
                    failure = _failure(sender)
                    if failure is not None:
                        raise failure from exc   # our own chunks failed: that is the error
                    raise self._lost(exc) from exc
                except FrameError as exc:
                    raise LinkError(grpc.StatusCode.DATA_LOSS, str(exc)) from exc
                if kind == ABORT:
                    code, message = decode_abort(body)
                    raise LinkError(_CODES.get(code, grpc.StatusCode.UNKNOWN), message)
                if frame is None:
                    raise LinkError(grpc.StatusCode.DATA_LOSS, f"message of kind {kind} in a stream")
                if frame.final:
                    if not sender.done():     # usually one step from finishing
                        await asyncio.wait([sender], timeout=0.01)
                    clean = sender.done() and _failure(sender) is None
                    yield frame
                    return
                yield frame
        finally:
            if not sender.done():
                sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            self._give_back(conn, clean)

    async def close(self) -> None:
        self._is_closed = True
        for conn in [*self._idle, *self._busy]:
            conn.transport.abort()
        self._idle.clear()
        for task in list(self._draining):
            task.cancel()
        await asyncio.gather(*self._draining, return_exceptions=True)


async def _send_all(conn: Connection, frames: AsyncIterator[Frame]) -> None:
    try:
        async for frame in frames:
            write_message(conn, STREAM, frame.encode())
            await conn.drain()
    except BaseException:
        conn.transport.abort()    # the peer waits for frames that will not come
        raise


def _failure(sender: asyncio.Task[None]) -> BaseException | None:
    """What our own sending failed with, unless it was only the connection going away."""
    if not sender.done() or sender.cancelled():
        return None
    exc = sender.exception()
    return None if exc is None or isinstance(exc, ConnectionError) else exc

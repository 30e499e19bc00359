"""The TCP transport's receiving side: tcp_wire's messages read with no user-space copy.

Why not StreamReader: ``feed_data`` and ``readexactly`` copy each message twice more after the
kernel's copy (memmove was 12-16% of a storage holder's main thread in 64 MiB Pushes). As an
``asyncio.BufferedProtocol`` the kernel writes straight into our buffers (0.10 ms of CPU per
MiB received against 0.17, docs/status.md): headers and small messages land in a 64 KiB
staging buffer (a burst of them takes one ``recv``; each is copied out), and a header
announcing more than ``OWN_BUFFER_ABOVE`` bytes gets an uninitialised buffer of exactly that
size, which becomes the reader's payload: what arrived behind the header is moved into it
once (at most 64 KiB), the rest lands in place, and ``recv`` never reads past its end.

Before a connection has proved anything (tcp_preauth.py) the server sets a ``gate``: called
with each message's kind, size and first ``GATE_PEEK`` payload bytes (a frame's session id)
before any buffer is given to it, it raises FrameError to refuse the message unread. With a
``charge`` (the listener's receive budget, tcp_budget.py) a payload over ``OWN_BUFFER_ABOVE``
is charged from its header and first ``GATE_PEEK`` bytes until it is read; one that must
wait leaves the transport paused until ``granted``. A client sets a gate per call (reply_cap.py).

Complete messages wait in a queue for the connection's one reader; beyond ``QUEUE_BYTES``,
``QUEUE_MESSAGES`` or ``QUEUE_SMALL_BYTES`` unread, the transport stops reading (and no payload
buffer is allocated) until the reader is down to half that. Errors match
``tcp_wire.read_message`` (the reference reader, which tests' peers use): FrameError on an
unknown kind or a payload over MAX_PAYLOAD, IncompleteReadError at EOF, the transport's
exception when the connection is lost; each comes after the messages received before it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import cast

from nacl._sodium import ffi  # type: ignore[import-not-found]

from mesh.channel.session import _new_bytes
from mesh.channel.tcp_budget import Charge
from mesh.channel.tcp_wire import HEADER, KINDS, MAX_PAYLOAD
from mesh.errors import FrameError

STAGING = 64 * 1024
OWN_BUFFER_ABOVE = 16 * 1024    # larger payloads get their own buffer, so a partial message
_MIN_RECV = 16 * 1024           # in staging is small; moved down when less room than this is left
QUEUE_BYTES = 4 * 2**20         # unread payload bytes before pause_reading (StreamReader's limit)
QUEUE_MESSAGES = 1024           # ... or unread messages (many tiny ones)
QUEUE_SMALL_BYTES = 256 * 1024  # ... or unread bytes of small ones (not charged: tcp_budget.py)
GATE_PEEK = 16                  # payload bytes a gate sees: a frame's session id (frames.py)

# (kind, size, the payload's first min(size, GATE_PEEK) bytes); raises FrameError to refuse
Gate = Callable[[int, int, bytes], None]


def _writable_bytes(size: int) -> tuple[bytes, memoryview]:
    """A new bytes of ``size`` and a writable view of it (for size > 1: never a shared one).
    Uninitialised, as session.py makes its outputs: recv_into fills it before anyone sees it,
    and the reader gets an immutable bytes (Frame.decode's type) for free."""
    payload = _new_bytes(None, size)
    return payload, memoryview(ffi.buffer(ffi.from_buffer(payload)))


class MessageReceiver(asyncio.BufferedProtocol):
    """Parses messages as they arrive; ``read()`` returns them in order."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._staging = memoryview(bytearray(STAGING))
        self._start = self._end = 0         # unparsed bytes: _staging[_start:_end]
        self._big: bytes | None = None      # a payload being received in place
        self._big_view = memoryview(b"")
        self._big_kind = self._big_have = 0
        self._messages: collections.deque[tuple[int, bytes]] = collections.deque()
        self._queued = self._queued_small = 0     # payload bytes in _messages, in small ones
        self._paused = False                # the queue is full
        self._waiting = False               # the next payload waits for budget
        self._stopped = False               # the transport is paused (either of the above)
        self._ended: BaseException | None = None   # raised once _messages is empty
        self._waiter: asyncio.Future[None] | None = None
        self.gate: Gate | None = None
        self._gated = False                 # the message at _start passed the gate
        self.charge: Charge | None = None
        self._granted = False               # ... and was granted budget after waiting

    # -- the transport's side -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big is not None:
            return self._big_view[self._big_have:]
        if self._start == self._end:
            self._start = self._end = 0
        elif STAGING - self._end < _MIN_RECV:        # copies < OWN_BUFFER_ABOVE + header
            n = self._end - self._start
            self._staging[:n] = self._staging[self._start:self._end]
            self._start, self._end = 0, n
        return self._staging[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._ended is not None:                  # after a bad header: nothing more to read
            return
        if self._big is not None:
            self._big_have += nbytes
            if self._big_have == len(self._big):
                self._finish_big()
            return
        self._end += nbytes
        self._parse()

    def eof_received(self) -> bool:
        if self._ended is not None:                  # refused earlier: nothing left to answer
            return False
        self._end_with(self._incomplete())
        return True                                  # half-closed: we may still answer

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ended is None:
            self._end_with(exc if exc is not None else self._incomplete())
        self._big_view.release()
        self._big, self._big_view = None, memoryview(b"")

    # -- the reader's side ----------------------------------------------------------------

    async def read(self) -> tuple[int, bytes]:
        """The next (kind, payload), as tcp_wire.read_message would return it."""
        while not self._messages:
            if self._ended is not None:
                raise self._ended
            if self._waiter is not None:
                raise RuntimeError("read() called while another read() is waiting")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        kind, payload = self._messages.popleft()
        self._queued -= len(payload)
        if len(payload) <= OWN_BUFFER_ABOVE:
            self._queued_small -= len(payload)
        elif self.charge is not None:
            self.charge.give()
        if self._paused and not self._full(2):
            self._paused = False
            self._set_reading()
            if self._ended is None:
                self._parse()                # a payload's header may wait in staging
        return kind, payload

    def at_eof(self) -> bool:
        """Nothing left to read: the connection ended (or failed) and every message was read."""
        return self._ended is not None and not self._messages

    # -- parsing --------------------------------------------------------------------------

    def _parse(self) -> None:
        view = self._staging
        while self._end - self._start >= HEADER.size:
            size, kind = HEADER.unpack_from(view, self._start)
            if kind not in KINDS:
                self._fail(FrameError(f"unknown message kind {kind}"))
                return
            if size > MAX_PAYLOAD:
                self._fail(FrameError(f"message of {size} bytes exceeds the {MAX_PAYLOAD}-byte "
                                      "limit"))
                return
            body = self._start + HEADER.size
            if self.gate is not None and not self._gated:
                peek = min(size, GATE_PEEK)
                if self._end - body < peek:
                    return
                try:
                    self.gate(kind, size, bytes(view[body:body + peek]))
                except FrameError as exc:
                    self._fail(exc)
                    return
                self._gated = True
            if size > OWN_BUFFER_ABOVE:              # received in place from here on
                if self._paused or self._waiting:
                    return
                if self.charge is not None and not self._granted:
                    if self._end - body < GATE_PEEK:
                        return
                    if not self.charge.take(kind, size, bytes(view[body:body + GATE_PEEK])):
                        self._waiting = True
                        self._set_reading()
                        return
                self._granted = False
                have = min(self._end - body, size)
                self._big, self._big_view = _writable_bytes(size)
                self._big_view[:have] = view[body:body + have]
                self._big_kind, self._big_have = kind, have
                self._start, self._gated = body + have, False
                if have < size:                      # staging is empty: the rest goes there
                    self._start = self._end = 0
                    return
                self._finish_big()
            elif self._end - body >= size:
                self._start, self._gated = body + size, False
                self._deliver(kind, bytes(view[body:self._start]))
            else:
                return

    def _finish_big(self) -> None:
        payload = self._big
        assert payload is not None
        self._big_view.release()                     # our writable view of it ends here
        self._big, self._big_view = None, memoryview(b"")
        self._deliver(self._big_kind, payload)

    def _deliver(self, kind: int, payload: bytes) -> None:
        self._messages.append((kind, payload))
        self._queued += len(payload)
        if len(payload) <= OWN_BUFFER_ABOVE:
            self._queued_small += len(payload)
        if not self._paused and self._full(1):
            self._paused = True
            self._set_reading()
        self._wake()

    def _full(self, part: int) -> bool:
        return (self._queued > QUEUE_BYTES // part or len(self._messages) > QUEUE_MESSAGES // part
                or self._queued_small > QUEUE_SMALL_BYTES // part)

    def _set_reading(self) -> None:
        stop = self._paused or self._waiting
        if stop != self._stopped and self._transport is not None:
            self._stopped = stop
            if stop:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def _fail(self, exc: FrameError) -> None:
        self._start = self._end = 0
        self._end_with(exc)

    def _incomplete(self) -> asyncio.IncompleteReadError:
        """What readexactly raises at EOF: the partial header or payload, and its size."""
        if self._big is not None:
            return asyncio.IncompleteReadError(bytes(self._big_view[:self._big_have]),
                                               len(self._big))
        pending = bytes(self._staging[self._start:self._end])
        if len(pending) < HEADER.size:
            return asyncio.IncompleteReadError(pending, HEADER.size)
        size, _ = HEADER.unpack_from(pending)
        return asyncio.IncompleteReadError(pending[HEADER.size:], size)

    def _end_with(self, exc: BaseException) -> None:
        if self._ended is None:                      # the first cause stays
            self._ended = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

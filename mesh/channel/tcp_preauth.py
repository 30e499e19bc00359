"""What a TCP connection may cost the server before it proves anything (docs/channel.md).

A connection is *pending* from accept until it carries a handshake the server accepted, or a
frame naming a session the server holds (a client opens more connections for a session it
has, and sends frames on them at once). Without these bounds a connector that never proved a
key could make the server allocate one 64 MiB payload per connection, trickle it forever,
and hold all 1,024 connection slots: ~64 GiB.

While pending, a connection

- may send no message over ``PreAuthPolicy.max_payload`` bytes (the largest valid handshake
  request plus a margin), unless it is a frame naming a live session: a larger one is
  refused from its header and first 16 bytes, before any buffer is allocated for it, with
  ABORT UNAUTHENTICATED (an honest client whose session the server lost then re-keys);
- is closed ``deadline_s`` after accept;
- is one of at most ``max_pending``: a new connection beyond that closes the oldest pending
  one, so silent connections cannot keep honest ones (which handshake within a round trip)
  out, and authenticated connections are never displaced.

After that a connection has the 64 MiB message limit and the 5-minute idle timeout.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass

from mesh.channel.tcp_conn import Connection
from mesh.channel.tcp_rx import GATE_PEEK
from mesh.channel.tcp_wire import CALL, HANDSHAKE, STREAM
from mesh.errors import FrameError
from mesh.identity import NODE_ID_BYTES
from proto import peer_pb2


def largest_handshake_request() -> int:
    """Encoded bytes of the largest HandshakeRequest a server can accept: keys, ephemeral,
    nonce and signature at the sizes server_respond requires, varints at their widest."""
    return peer_pb2.HandshakeRequest(
        version=2**32 - 1, client_key=bytes(32), client_ephemeral=bytes(32),
        server_id=bytes(NODE_ID_BYTES), timestamp_ms=2**64 - 1, nonce=bytes(16),
        signature=bytes(64)).ByteSize()


HANDSHAKE_MARGIN = 256      # room for fields a later protocol version may add
PRE_AUTH_MAX_PAYLOAD = largest_handshake_request() + HANDSHAKE_MARGIN     # 191 + 256 bytes
PRE_AUTH_DEADLINE_S = 10.0  # an honest client handshakes within one round trip of connecting
MAX_PENDING = 64            # pending connections; each holds at most ~0.6 MiB (docs/channel.md)


@dataclass(frozen=True)
class PreAuthPolicy:
    max_payload: int = PRE_AUTH_MAX_PAYLOAD
    deadline_s: float = PRE_AUTH_DEADLINE_S
    max_pending: int = MAX_PENDING


class PreAuthRefused(FrameError):
    """A message too large for a connection that has not authenticated yet."""


class PendingConnections:
    """The listener's pending connections: their gates, deadlines and cap."""

    def __init__(self, policy: PreAuthPolicy, knows_session: Callable[[bytes], bool]) -> None:
        self.policy = policy
        self._knows_session = knows_session
        self._pending: dict[Connection, asyncio.TimerHandle] = {}   # oldest first
        self.refused = 0        # oversized messages refused before authentication
        self.expired = 0        # closed at the deadline
        self.evicted = 0        # closed to make room for a newer one

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, conn: Connection) -> None:
        while len(self._pending) >= self.policy.max_pending:
            oldest = next(iter(self._pending))
            self.evicted += 1
            self._close(oldest)
        timer = asyncio.get_running_loop().call_later(self.policy.deadline_s, self._expire, conn)
        self._pending[conn] = timer
        conn.gate = functools.partial(self._admit, conn)

    def authenticated(self, conn: Connection) -> None:
        """The connection proved a key or a session: no more pre-authentication limits."""
        self.discard(conn)
        conn.gate = None

    def discard(self, conn: Connection) -> None:
        timer = self._pending.pop(conn, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        for conn in list(self._pending):
            self._close(conn)

    def _admit(self, conn: Connection, kind: int, size: int, head: bytes) -> None:
        """tcp_rx's gate: runs on each message's header, before its payload is buffered."""
        if kind in (CALL, STREAM) and len(head) == GATE_PEEK and self._knows_session(head):
            self.authenticated(conn)
        elif size > self.policy.max_payload:
            self.refused += 1
            what = "a handshake" if kind == HANDSHAKE else "unknown or expired session: a frame"
            raise PreAuthRefused(f"{what} of {size} bytes before authentication "
                                 f"(limit {self.policy.max_payload})")

    def _expire(self, conn: Connection) -> None:
        if conn in self._pending:
            self.expired += 1
            self._close(conn)

    def _close(self, conn: Connection) -> None:
        self.discard(conn)
        conn.transport.abort()

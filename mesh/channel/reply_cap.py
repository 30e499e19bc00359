"""A call's cap on the size of the peer's reply (``PeerChannel.unary(max_reply=...)``).

Without it a peer could make the caller receive and hold a reply frame of up to the
transport's 64 MiB limit for every call, whatever the caller meant to take (a proxied HTTP
answer is capped at 1 MiB: compute/proxy/peer.py). Over TCP the cap is a ``gate`` on the
connection's receiver (tcp_rx.py): a reply whose header announces more than the cap plus the
sealed frame's fixed overhead is refused before any buffer is allocated for it and the
connection is closed unread. gRPC has no per-call receive limit: there the frame is received
whole and refused after.
"""

from __future__ import annotations

from mesh.channel.frames import HEADER, Frame
from mesh.channel.session import TAG_BYTES
from mesh.channel.tcp_rx import Gate
from mesh.errors import FrameError, ReplyTooLargeError

# Beside the body a reply frame carries its header and tag, the reply's code and message length
# (frames.py, 8 bytes) and a status message, which a peer may make this long (an ABORT's is
# cut at 4096 bytes: tcp_wire.py) before the reply is refused as over the cap.
MESSAGE_ALLOWANCE = 4096
OVERHEAD = HEADER.size + TAG_BYTES + 8 + MESSAGE_ALLOWANCE


class ReplyOverCap(FrameError):
    """The link refused a reply over its call's cap (``unread``: at its header, over TCP)."""

    def __init__(self, size: int, cap: int, *, unread: bool) -> None:
        super().__init__(f"reply of {size} bytes over this call's cap of {cap}")
        self.size, self.cap, self.unread = size, cap, unread


def wire_limit(max_reply: int) -> int:
    """The largest transport message (a sealed frame, or an ABORT) a reply may take."""
    return max_reply + OVERHEAD


def gate(max_reply: int) -> Gate:
    """A receiver gate (tcp_rx.py) refusing any message over ``wire_limit(max_reply)``."""
    limit = wire_limit(max_reply)

    def check(kind: int, size: int, peek: bytes) -> None:
        if size > limit:
            raise ReplyOverCap(size, max_reply, unread=True)
    return check


def check_frame(frame: Frame, max_reply: int | None) -> None:
    """After receipt (the gRPC transport): refuse a frame over the cap before opening it."""
    size = HEADER.size + len(frame.ciphertext)
    if max_reply is not None and size > wire_limit(max_reply):
        raise ReplyOverCap(size, max_reply, unread=False)


def refused(exc: ReplyOverCap, address: str) -> ReplyTooLargeError:
    """What the caller of ``PeerChannel.unary`` gets for a link's refusal."""
    return ReplyTooLargeError(f"peer {address}: {exc}", size=exc.size, cap=exc.cap,
                              unread=exc.unread)


def check_body(body: memoryview, max_reply: int | None, address: str) -> memoryview:
    """The opened reply's body itself (the frame's allowance is for its message)."""
    if max_reply is not None and len(body) > max_reply:
        raise refused(ReplyOverCap(len(body), max_reply, unread=False), address)
    return body

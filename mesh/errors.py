"""Exception tree for tw-mesh. Every error the project raises on purpose derives from MeshError.

    MeshError
    ├── IdentityError            key file missing, corrupt or readable by others
    ├── RecordError              a signed record is malformed, forged, stale or expired
    ├── ChannelError             the encrypted peer channel failed
    │   ├── HandshakeError       peer could not prove the identity we expected
    │   └── FrameError           a frame was tampered, replayed, reordered or truncated
    ├── PeerCallError            a peer answered a call with a non-OK status (has .code)
    │   ├── NotFoundError
    │   ├── PermissionDeniedError
    │   ├── InvalidArgumentError
    │   ├── UnavailableError     peer unreachable or overloaded
    │   ├── DeadlineExceededError
    │   └── ResourceExhaustedError
    │       └── ReplyTooLargeError   this node refused a reply over the call's max_reply
    └── DHTError                 a DHT operation reached no live peer / stored nowhere

PeerCallError subclasses carry a ``grpc.StatusCode`` so servicers can map them straight to
``context.abort(err.code, str(err))``.
"""

from __future__ import annotations

import grpc


class MeshError(Exception):
    """Base of every deliberate tw-mesh error."""


class IdentityError(MeshError):
    """The node's key could not be loaded or created safely."""


class RecordError(MeshError):
    """A signed record failed verification."""


class ChannelError(MeshError):
    """The encrypted channel to a peer failed."""


class HandshakeError(ChannelError):
    """The peer could not prove the identity we expected."""


class FrameError(ChannelError):
    """A sealed frame was tampered with, replayed, reordered or truncated."""


class DHTError(MeshError):
    """A DHT operation could not complete."""


class PeerCallError(MeshError):
    """A call answered with a non-OK status."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NotFoundError(PeerCallError):
    code = grpc.StatusCode.NOT_FOUND


class PermissionDeniedError(PeerCallError):
    code = grpc.StatusCode.PERMISSION_DENIED


class InvalidArgumentError(PeerCallError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class UnavailableError(PeerCallError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(PeerCallError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhaustedError(PeerCallError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class ReplyTooLargeError(ResourceExhaustedError):
    """This node refused a peer's reply over the call's ``max_reply`` (mesh/channel/
    reply_cap.py): no status the peer sent. ``unread``: refused at its header, not received."""

    def __init__(self, message: str, *, size: int, cap: int, unread: bool) -> None:
        super().__init__(message)
        self.size, self.cap, self.unread = size, cap, unread


class FailedPreconditionError(PeerCallError):
    code = grpc.StatusCode.FAILED_PRECONDITION


_BY_CODE: dict[grpc.StatusCode, type[PeerCallError]] = {
    cls.code: cls
    for cls in (
        NotFoundError,
        PermissionDeniedError,
        InvalidArgumentError,
        UnavailableError,
        DeadlineExceededError,
        ResourceExhaustedError,
        FailedPreconditionError,
    )
}

_CODE_BY_VALUE: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def error_for_code(code: grpc.StatusCode | int, message: str) -> PeerCallError:
    """The PeerCallError subclass for a status code (int values come off the wire)."""
    status = _CODE_BY_VALUE.get(code, grpc.StatusCode.UNKNOWN) if isinstance(code, int) else code
    cls = _BY_CODE.get(status, PeerCallError)
    return cls(message, status)


def status_value(code: grpc.StatusCode) -> int:
    """The integer carried on the wire for a status code."""
    value: int = code.value[0]
    return value

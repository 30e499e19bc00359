"""Why a version record or grant was refused. Each rule has its own class.

They derive from the ``mesh.errors`` PeerCallError classes, so a peer handler can raise them and
the caller receives the status (INVALID_ARGUMENT / PERMISSION_DENIED / FAILED_PRECONDITION).
"""

from __future__ import annotations

from mesh.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    MeshError,
    PermissionDeniedError,
)


class VersionError(MeshError):
    """Base of every refusal of a version record or grant."""


class MalformedRecordError(VersionError, InvalidArgumentError):
    """The bytes are not a well-formed record (sizes, sort order, CID, file binding)."""


class ForgedSignatureError(VersionError, InvalidArgumentError):
    """The signature does not verify under the key the record names."""


class UnauthorizedWriterError(VersionError, PermissionDeniedError):
    """The writer is neither the file's owner nor granted by it."""


class RevokedWriterError(UnauthorizedWriterError):
    """The writer was revoked and this record is not dominated by the revocation's vector."""


class ClaimedCounterError(VersionError, InvalidArgumentError):
    """The vector changes another writer's entry (only the writer's own entry may grow)."""


class NotNewerError(VersionError, InvalidArgumentError):
    """The vector does not strictly dominate the parents' (an old version replayed as new)."""


class MissingParentError(VersionError, FailedPreconditionError):
    """A parent is not (validly) known here yet; send parents before children."""


class FutureRecordError(VersionError, InvalidArgumentError):
    """The record is dated too far in the future."""

"""Who may write a file: its owner binding and the owner-signed grants and revocations.

Apart from the version set (vset.py) because authority is decided by the owner's signed
grants alone, never by the version graph: the owner may always write; anyone else needs a
grant, and per grantee the highest seq wins (a revocation beats a grant of the same seq). A
revoked writer's record is accepted only if its vector is ≤ the revocation's vector (the
owner's view when revoking: what the owner had already seen stays valid, anything else is
refused). The version set asks ``authorize`` for every record, on arrival and again whenever
the grants change, so a later revocation invalidates a record everywhere alike.
"""

from __future__ import annotations

from collections.abc import Mapping

from proto import versions_pb2
from storage.versions.errors import (
    MalformedRecordError,
    RevokedWriterError,
    UnauthorizedWriterError,
    VersionError,
)
from storage.versions.records import Vector, grant_id, leq, vector_of, verify_grant


class FileWriters:
    """One file's owner binding and the verified grants and revocations of its writers."""

    def __init__(self, file_id: bytes) -> None:
        self.file_id = file_id
        self.binding: versions_pb2.FileBinding | None = None
        self._grants: dict[bytes, versions_pb2.GrantRecord] = {}
        self._deciding: dict[bytes, versions_pb2.GrantRecord] = {}   # grantee key -> grant_state

    @property
    def owner_key(self) -> bytes | None:
        return self.binding.owner_key if self.binding is not None else None

    def grant_ids(self) -> set[bytes]:
        return set(self._grants)

    def grants(self) -> list[versions_pb2.GrantRecord]:
        return sorted(self._grants.values(), key=lambda g: (g.seq, g.revoke, grant_id(g)))

    # -- binding ---------------------------------------------------------------------------
    def bind(self, binding: versions_pb2.FileBinding) -> None:
        if binding.file_id != self.file_id:
            raise MalformedRecordError("record belongs to another file")
        if self.binding is None:
            self.binding = versions_pb2.FileBinding()
            self.binding.CopyFrom(binding)
        elif (binding.owner_key, binding.nonce) != (self.binding.owner_key, self.binding.nonce):
            raise MalformedRecordError("record names another owner for this file")

    # -- grants ----------------------------------------------------------------------------
    def add_grant(self, grant: versions_pb2.GrantRecord,
                  checked: Mapping[bytes, VersionError | None] | None = None) -> bool:
        """Verify and add an owner-signed grant or revocation; False if already known.
        ``checked``: verify_grant's verdicts by grant id, run already (precheck.py)."""
        gid = grant_id(grant)
        if gid in self._grants:
            return False
        if checked is None or gid not in checked:
            verify_grant(grant)
        elif (verdict := checked[gid]) is not None:
            raise verdict
        self.bind(grant.file)
        self._grants[gid] = grant
        best = self._deciding.get(grant.grantee_key)
        if best is None or (grant.seq, grant.revoke, gid) > (best.seq, best.revoke,
                                                            grant_id(best)):
            self._deciding[grant.grantee_key] = grant
        return True

    def grant_state(self, grantee_key: bytes) -> versions_pb2.GrantRecord | None:
        """The deciding grant/revocation for a writer: highest seq, revocation wins a tie
        (kept per grantee as grants arrive: authorize runs for every record, and scanning
        every grant there made a file's validity O(records x grants))."""
        return self._deciding.get(grantee_key)

    def writers(self) -> list[bytes]:
        """Public keys currently allowed to write (owner first)."""
        out = [self.binding.owner_key] if self.binding is not None else []
        seen = set(out)
        for g in self.grants():
            k = g.grantee_key
            if k not in seen:
                seen.add(k)
                state = self.grant_state(k)
                if state is not None and not state.revoke:
                    out.append(k)
        return out

    def authorize(self, writer_key: bytes, vector: Vector) -> None:
        """Raise unless ``writer_key`` may write a version with ``vector``."""
        if self.binding is not None and writer_key == self.binding.owner_key:
            return
        state = self.grant_state(writer_key)
        if state is None:
            raise UnauthorizedWriterError("writer is not the owner and holds no grant")
        if state.revoke and not leq(vector, vector_of(state.vector)):
            raise RevokedWriterError("writer was revoked; this version is not dominated by the "
                                     "revocation's vector")

"""Who may write a file: its owner binding and the owner-signed grants and revocations.

Apart from the version set (vset.py) because authority is decided by the owner's signed
grants alone, never by the version graph: the owner may always write; anyone else needs a
grant, and per grantee the highest seq wins (a revocation beats a grant of the same seq).

A revocation lists (``kept``) the ids of the revoked writer's records the owner saw when
revoking (after a sync), and after it a record by that writer is valid only if listed: ids
are hashes of signed records, so nothing the writer signs later can be one of them, and the
rule depends on the record and the grants alone, so every replica decides alike whatever order
records and grants arrive in. At most MAX_KEPT ids are listed; a writer with more records
keeps its newest MAX_KEPT there and the older ones (own counter ≤ ``kept_floor``) under the
older rule, vector ≤ the revocation's vector, which a revocation without a list (signed
before it existed) applies to all the writer's records. The version set asks ``authorize``
for every record, on arrival and again whenever the grants change, so a later revocation
invalidates a record everywhere alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from mesh.identity import Identity
from proto import versions_pb2
from storage.versions.errors import (
    MalformedRecordError,
    RevokedWriterError,
    UnauthorizedWriterError,
    VersionError,
)
from storage.versions.records import (
    MAX_KEPT,
    Vector,
    grant_id,
    leq,
    sign_grant,
    vector_of,
    verify_grant,
    writer_id,
)

if TYPE_CHECKING:
    from storage.versions.vset import VersionSet


class FileWriters:
    """One file's owner binding and the verified grants and revocations of its writers."""

    def __init__(self, file_id: bytes) -> None:
        self.file_id = file_id
        self.binding: versions_pb2.FileBinding | None = None
        self._grants: dict[bytes, versions_pb2.GrantRecord] = {}
        self._deciding: dict[bytes, versions_pb2.GrantRecord] = {}   # grantee key -> grant_state
        self._kept: dict[bytes, frozenset[bytes]] = {}   # grantee key -> its deciding grant's kept

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
            self._kept[grant.grantee_key] = frozenset(grant.kept)
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

    def authorize(self, writer_key: bytes, vector: Vector, vid: bytes | None = None) -> None:
        """Raise unless ``writer_key`` may write a version with ``vector`` and id ``vid``
        (None: a version not signed yet)."""
        if self.binding is not None and writer_key == self.binding.owner_key:
            return
        state = self.grant_state(writer_key)
        if state is None:
            raise UnauthorizedWriterError("writer is not the owner and holds no grant")
        if not state.revoke or (vid is not None and vid in self._kept[writer_key]):
            return
        if state.HasField("kept_floor") and vector.get(writer_id(writer_key), 0) > state.kept_floor:
            raise RevokedWriterError("writer was revoked; this version is not one the "
                                     "revocation keeps")
        if not leq(vector, vector_of(state.vector)):
            raise RevokedWriterError("writer was revoked; this version is not dominated by the "
                                     "revocation's vector")


def sign_revocation(owner: Identity, vs: VersionSet, grantee_key: bytes, seq: int
                    ) -> versions_pb2.GrantRecord:
    """The owner's revocation of ``grantee_key`` from its view ``vs`` (synced first): it keeps
    the grantee's valid records, listing the newest MAX_KEPT (by own counter) and the rest
    through ``kept_floor`` (their vectors are ≤ the view's, which the revocation carries)."""
    if vs.binding is None:
        raise ValueError("revoke on a set bound to its file")
    me = writer_id(grantee_key)
    mine = sorted((v.vector[me], v.id) for v in vs.valid() if v.writer == me)
    floor = mine[-MAX_KEPT - 1][0] if len(mine) > MAX_KEPT else 0
    return sign_grant(owner, vs.binding, grantee_key, revoke=True, seq=seq, vector=vs.vector(),
                      kept=[vid for c, vid in mine if c > floor], kept_floor=floor)

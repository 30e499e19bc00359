"""A file's version set: the verified union of its records and grants, its heads and conflicts.

Rules a record must pass to enter a set (each refusal is its own error class):
  * structure, file binding, signature, clock (records.verify_version);
  * the writer is the owner, or holds a grant (owner-signed; per grantee the highest seq wins, a
    revocation beats a grant of the same seq). A revoked writer's record is accepted only if its
    vector is ≤ the revocation's vector (the owner's view when revoking: what the owner had
    already seen stays valid, anything else is refused);
  * a record with no parents is a genesis: only the owner, only its own vector entry;
  * every parent is already a valid member (parents are sent before children);
  * for every other writer w: vector[w] == max(parents)[w] (a writer may not raise, or drop,
    another writer's counter) and vector[self] > max(parents)[self] (strictly newer than its
    parents; the writer's own counter may skip values, so a writer basing a version on someone
    else's older head never reuses its own counter);
  * the same record twice is a duplicate (same id), not a new version.

Equivocation (one writer, one counter, two different records) cannot be refused without
breaking convergence (replicas would keep whichever arrived first), so both are kept: their
vectors are equal, neither dominates, both show as conflicting heads and ``equivocations()``
names the writer. An honest writer never equivocates: its counter is persisted before it signs.

Validity is a pure function of the union (grants + records): a record stays stored once
accepted, but a later revocation makes it (and its descendants) invalid everywhere alike, so any
two replicas with the same union show the same valid records and heads, whatever the order of
arrival. Heads are the valid records whose vector no other valid record dominates; more than one
head is a conflict; a record naming several heads as parents resolves it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from proto import versions_pb2
from storage.versions.errors import (
    ClaimedCounterError,
    MalformedRecordError,
    MissingParentError,
    NotNewerError,
    RevokedWriterError,
    UnauthorizedWriterError,
    VersionError,
)
from storage.versions.records import (
    Vector,
    decode_grant,
    decode_version,
    dominates,
    grant_id,
    leq,
    record_id,
    vector_of,
    verify_grant,
    verify_version,
    vmax,
    writer_id,
)


@dataclass(frozen=True)
class Version:
    id: bytes
    record: versions_pb2.VersionRecord
    vector: Vector
    writer: bytes               # writer id (20 bytes)

    @property
    def cid(self) -> str:
        return self.record.cid

    @property
    def parents(self) -> list[bytes]:
        return list(self.record.parents)

    @property
    def weight(self) -> int:
        return sum(self.vector.values())


def _causal_key(v: Version) -> tuple[int, int, bytes]:
    return (v.weight, v.record.time_ms, v.id)


@dataclass
class AddResult:
    accepted: int = 0
    duplicate: int = 0
    refused: list[tuple[bytes, VersionError]] = field(default_factory=list)


class VersionSet:
    """All verified records and grants of one file."""

    def __init__(self, file_id: bytes) -> None:
        self.file_id = file_id
        self.binding: versions_pb2.FileBinding | None = None
        self._records: dict[bytes, Version] = {}
        self._grants: dict[bytes, versions_pb2.GrantRecord] = {}
        self._valid: set[bytes] | None = None

    # -- membership ------------------------------------------------------------------------
    def __contains__(self, vid: object) -> bool:
        return vid in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, vid: bytes) -> Version | None:
        return self._records.get(vid)

    @property
    def owner_key(self) -> bytes | None:
        return self.binding.owner_key if self.binding is not None else None

    def record_ids(self) -> set[bytes]:
        return set(self._records)

    def grant_ids(self) -> set[bytes]:
        return set(self._grants)

    def grants(self) -> list[versions_pb2.GrantRecord]:
        return sorted(self._grants.values(), key=lambda g: (g.seq, g.revoke, grant_id(g)))

    def records(self) -> list[Version]:
        """Every stored record, parents before children."""
        return sorted(self._records.values(), key=_causal_key)

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
    def add_grant(self, grant: versions_pb2.GrantRecord) -> bool:
        """Verify and add an owner-signed grant or revocation; False if already known."""
        gid = grant_id(grant)
        if gid in self._grants:
            return False
        verify_grant(grant)
        self.bind(grant.file)
        self._grants[gid] = grant
        self._valid = None
        return True

    def grant_state(self, grantee_key: bytes) -> versions_pb2.GrantRecord | None:
        """The deciding grant/revocation for a writer: highest seq, revocation wins a tie."""
        best: versions_pb2.GrantRecord | None = None
        for g in self._grants.values():
            if g.grantee_key != grantee_key:
                continue
            if best is None or (g.seq, g.revoke, grant_id(g)) > (best.seq, best.revoke,
                                                                 grant_id(best)):
                best = g
        return best

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

    # -- records ---------------------------------------------------------------------------
    def add(self, record: versions_pb2.VersionRecord, *, at_ms: int | None = None,
            trusted: bool = False) -> bool:
        """Verify ``record`` against every rule and add it; False if it is a duplicate.

        ``trusted`` (records this replica accepted before, read back from its disk): the
        signature and structure are checked again, but not the writer's current authorization,
        and parents need only be stored, not valid. A record a later revocation made invalid
        must stay stored across a restart: a re-grant makes it valid again.
        """
        vid = record_id(record)
        if vid in self._records:        # the same signed bytes: verified when first added
            return False
        verify_version(record, at_ms=at_ms)
        self.bind(record.file)
        vector = vector_of(record.vector)
        me = writer_id(record.writer_key)
        if not trusted:
            self.authorize(record.writer_key, vector)
        if not record.parents:
            if self.binding is None or record.writer_key != self.binding.owner_key:
                raise UnauthorizedWriterError("only the owner may write a version with no parent")
            if set(vector) != {me}:
                raise ClaimedCounterError("a first version may only carry its writer's entry")
        else:
            known = self._records if trusted else self.valid_ids()
            missing = [p for p in record.parents if p not in known]
            if missing:
                raise MissingParentError(f"parent {missing[0].hex()[:16]} is not known here")
            pv = vmax(self._records[p].vector for p in record.parents)
            for w in set(pv) | set(vector):
                if w == me:
                    continue
                if vector.get(w, 0) > pv.get(w, 0):
                    raise ClaimedCounterError(
                        f"vector raises writer {w.hex()[:16]}'s counter, which only it may do")
                if vector.get(w, 0) < pv.get(w, 0):
                    raise NotNewerError(f"vector drops writer {w.hex()[:16]}'s counter below "
                                        "its parents'")
            if vector.get(me, 0) <= pv.get(me, 0):
                raise NotNewerError("vector does not strictly dominate its parents'")
        self._records[vid] = Version(vid, record, vector, me)
        self._valid = None
        return True

    def add_many(self, grants: Iterable[versions_pb2.GrantRecord],
                 records: Iterable[versions_pb2.VersionRecord], *,
                 at_ms: int | None = None, trusted: bool = False) -> AddResult:
        """Add grants first, then records in causal order (retrying ones whose parents come later)."""
        result = AddResult()
        for g in grants:
            try:
                if self.add_grant(g):
                    result.accepted += 1
                else:
                    result.duplicate += 1
            except VersionError as exc:
                result.refused.append((grant_id(g), exc))
        pending = sorted(records, key=lambda r: (sum(e.counter for e in r.vector), r.time_ms,
                                                 record_id(r)))
        last: VersionError = MissingParentError("parent never arrived")
        while pending:
            retry: list[versions_pb2.VersionRecord] = []
            progressed = False
            for r in pending:
                try:
                    if self.add(r, at_ms=at_ms, trusted=trusted):
                        result.accepted += 1
                        progressed = True
                    else:
                        result.duplicate += 1
                except MissingParentError as exc:
                    retry.append(r)
                    last = exc
                except VersionError as exc:
                    result.refused.append((record_id(r), exc))
            if not progressed:
                result.refused.extend((record_id(r), last) for r in retry)
                break
            pending = retry
        return result

    def add_bytes(self, grants: Iterable[bytes], records: Iterable[bytes], *,
                  at_ms: int | None = None) -> AddResult:
        """Like add_many, from serialized records; undecodable ones are refused."""
        result = AddResult()
        good_grants: list[versions_pb2.GrantRecord] = []
        good_records: list[versions_pb2.VersionRecord] = []
        for data in grants:
            try:
                good_grants.append(decode_grant(data))
            except VersionError as exc:
                result.refused.append((b"", exc))
        for data in records:
            try:
                good_records.append(decode_version(data))
            except VersionError as exc:
                result.refused.append((b"", exc))
        inner = self.add_many(good_grants, good_records, at_ms=at_ms)
        result.accepted, result.duplicate = inner.accepted, inner.duplicate
        result.refused.extend(inner.refused)
        return result

    def merge(self, other: VersionSet) -> AddResult:
        """Add everything ``other`` holds (commutative, associative, idempotent on valid())."""
        return self.add_many(other._grants.values(), (v.record for v in other._records.values()))

    def copy(self) -> VersionSet:
        """The same stored records and grants (invalid ones included)."""
        out = VersionSet(self.file_id)
        out.add_many(self._grants.values(), (v.record for v in self._records.values()),
                     at_ms=2**62, trusted=True)
        return out

    # -- derived views ---------------------------------------------------------------------
    def valid_ids(self) -> set[bytes]:
        """Stored records that are valid under the grants now known (and whose parents are)."""
        if self._valid is None:
            valid: set[bytes] = set()
            for v in self.records():
                try:
                    self.authorize(v.record.writer_key, v.vector)
                except VersionError:
                    continue
                if all(p in valid for p in v.record.parents):
                    valid.add(v.id)
            self._valid = valid
        return self._valid

    def valid(self) -> list[Version]:
        ids = self.valid_ids()
        return [v for v in self.records() if v.id in ids]

    def heads(self) -> list[Version]:
        """Valid records no other valid record dominates, oldest first."""
        ids = self.valid_ids()
        referenced = {p for vid in ids for p in self._records[vid].record.parents}
        candidates = [self._records[vid] for vid in ids if vid not in referenced]
        heads = [c for c in candidates
                 if not any(dominates(o.vector, c.vector) for o in candidates if o is not c)]
        return sorted(heads, key=_causal_key)

    @property
    def conflict(self) -> bool:
        return len(self.heads()) > 1

    def vector(self) -> Vector:
        """The join of every valid version's vector."""
        return vmax(self._records[vid].vector for vid in self.valid_ids())

    def equivocations(self) -> list[tuple[bytes, int, list[bytes]]]:
        """(writer id, counter, version ids) where one writer signed two versions at a counter."""
        slots: dict[tuple[bytes, int], list[bytes]] = {}
        for v in self.records():
            slots.setdefault((v.writer, v.vector[v.writer]), []).append(v.id)
        return [(w, c, ids) for (w, c), ids in sorted(slots.items()) if len(ids) > 1]

    def next_vector(self, writer_key: bytes, parents: Iterable[bytes],
                    floor: int = 0) -> Vector:
        """The vector a new version by ``writer_key`` on ``parents`` must carry.

        Its own counter exceeds every counter it has used in this file (and ``floor``, the
        writer's persisted counter), so an honest writer never equivocates.
        """
        me = writer_id(writer_key)
        parents = list(parents)
        pv = vmax(self._records[p].vector for p in parents)
        used = max((v.vector.get(me, 0) for v in self._records.values() if v.writer == me),
                   default=0)
        pv[me] = max(pv.get(me, 0), used, floor) + 1
        return pv

    def fingerprint(self) -> tuple[frozenset[bytes], frozenset[bytes]]:
        """What two converged replicas agree on: the valid record ids and the grant ids."""
        return frozenset(self.valid_ids()), frozenset(self._grants)

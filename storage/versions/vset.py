"""A file's version set: the verified union of its records and grants, its heads and conflicts.

Rules a record must pass to enter a set (each refusal is its own error class):
  * structure, file binding, signature, clock (records.verify_version);
  * the writer is the owner, or holds a grant not revoked for this vector (grants.py);
  * a genesis is the owner's, with only its own vector entry; every other version keeps the
    other writers' counters at max(parents) and raises its own (lineage.py);
  * every parent is already a valid member (parents are sent before children);
  * the same record twice is a duplicate (same id), not a new version.

Validity is a pure function of the union (grants + records): a record stays stored once
accepted, but a later revocation makes it (and its descendants) invalid everywhere alike, so any
two replicas with the same union show the same valid records and heads, whatever the order of
arrival. Heads are the valid records whose vector no other valid record dominates; more than one
head is a conflict; a record naming several heads as parents resolves it. Equivocations (one
writer signing two records at one counter) are kept as conflicting heads (lineage.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from proto import versions_pb2
from storage.versions.batch import Added, add_in_causal_order, causal_steps
from storage.versions.errors import MissingParentError, VersionError
from storage.versions.grants import FileWriters
from storage.versions.lineage import check_descends, check_genesis
from storage.versions.precheck import Prepared, prepare_now
from storage.versions.records import (
    MAX_PARENTS,
    Vector,
    dominates,
    record_id,
    vector_of,
    verify_version,
    vmax,
    writer_id,
)
from storage.versions.version import AddResult as AddResult
from storage.versions.version import Version as Version
from storage.versions.version import causal_key

MAX_HEADS = 4 * MAX_PARENTS    # leaves compared for heads (see VersionSet.heads)


class VersionSet(FileWriters):
    """All verified records and grants of one file (who may write it: FileWriters)."""

    def __init__(self, file_id: bytes) -> None:
        super().__init__(file_id)
        self._records: dict[bytes, Version] = {}
        self._valid: set[bytes] | None = None
        self._heads: list[Version] | None = None

    # -- membership ------------------------------------------------------------------------
    def __contains__(self, vid: object) -> bool:
        return vid in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, vid: bytes) -> Version | None:
        return self._records.get(vid)

    def record_ids(self) -> set[bytes]:
        return set(self._records)

    def records(self) -> list[Version]:
        """Every stored record, parents before children."""
        return sorted(self._records.values(), key=causal_key)

    def add_grant(self, grant: versions_pb2.GrantRecord,
                  checked: Mapping[bytes, VersionError | None] | None = None) -> bool:
        """Verify and add an owner-signed grant or revocation; False if already known."""
        if not super().add_grant(grant, checked):
            return False
        self._valid = self._heads = None
        return True

    # -- records ---------------------------------------------------------------------------
    def add(self, record: versions_pb2.VersionRecord, *, at_ms: int | None = None,
            trusted: bool = False,
            checked: Mapping[bytes, VersionError | None] | None = None) -> bool:
        """Verify ``record`` against every rule and add it; False if it is a duplicate.
        ``checked``: verify_version's verdicts by record id, run already (precheck.py).

        ``trusted`` (records this replica accepted before, read back from its disk): the
        signature and structure are checked again, but not the writer's current authorization,
        and parents need only be stored, not valid. A record a later revocation made invalid
        must stay stored across a restart: a re-grant makes it valid again.
        """
        vid = record_id(record)
        if vid in self._records:        # the same signed bytes: verified when first added
            return False
        if checked is None or vid not in checked:
            verify_version(record, at_ms=at_ms)
        elif (verdict := checked[vid]) is not None:
            raise verdict
        self.bind(record.file)
        vector = vector_of(record.vector)
        me = writer_id(record.writer_key)
        if not trusted:
            self.authorize(record.writer_key, vector, vid)
        if not record.parents:
            check_genesis(record.writer_key, self.owner_key, vector, me)
        else:
            known = self._records if trusted else self.valid_ids()
            missing = [p for p in record.parents if p not in known]
            if missing:
                raise MissingParentError(f"parent {missing[0].hex()[:16]} is not known here")
            check_descends(vector, me, (self._records[p].vector for p in record.parents))
        self._records[vid] = Version(vid, record, vector, me)
        if trusted or self._valid is None:
            self._valid = None
        else:   # authorized under the grants now known, parents valid: valid, as valid_ids
            self._valid.add(vid)    # would find (recomputing it per record made a push O(n^2))
        self._heads = None
        return True

    def add_many(self, grants: Iterable[versions_pb2.GrantRecord],
                 records: Iterable[versions_pb2.VersionRecord], *,
                 at_ms: int | None = None, trusted: bool = False,
                 checked: Mapping[bytes, VersionError | None] | None = None) -> AddResult:
        """Add grants first, then records in causal order (retrying ones whose parents come later)."""
        result = AddResult()
        add_in_causal_order(self, grants, records, result, at_ms=at_ms, trusted=trusted,
                            checked=checked)
        return result

    def add_bytes(self, grants: Iterable[bytes], records: Iterable[bytes], *,
                  at_ms: int | None = None) -> AddResult:
        """Like add_many, from serialized records; undecodable ones are refused."""
        return self.add_prepared(prepare_now(list(grants), list(records), at_ms))

    def add_prepared(self, batch: Prepared) -> AddResult:
        """``add_bytes`` of a batch decoded (and perhaps checked) by precheck.py."""
        result = AddResult()
        for _ in self.add_steps(batch, result):
            pass
        return result

    def add_steps(self, batch: Prepared, result: AddResult) -> Iterator[Added]:
        """``add_prepared`` into ``result``, pausing every batch.STEP items (causal_steps)."""
        result.refused.extend(batch.refused)
        return causal_steps(self, batch.grants, batch.records, result, at_ms=batch.at_ms,
                            trusted=False, checked=batch.checked, ordered=batch.ordered)

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
                    self.authorize(v.record.writer_key, v.vector, v.id)
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
        """Valid records no other valid record dominates, oldest first.

        Only the MAX_HEADS heaviest leaves (records no valid record names as a parent) are
        compared, and the answer is kept until the set changes: comparing h leaves is O(h^2),
        every Digest a peer asks for reads the heads, and a file's writer can sign thousands
        of concurrent leaves (3,000 took a replica 4-12 s per Digest). Still a function of
        the union, so replicas agree; a dominating leaf is heavier than the one it dominates,
        so the heads among those kept are exact, and an honest file never has that many (a
        Revise merges at most MAX_PARENTS).
        """
        if self._heads is not None:
            return list(self._heads)
        ids = self.valid_ids()
        referenced = {p for vid in ids for p in self._records[vid].record.parents}
        leaves = sorted((self._records[vid] for vid in ids if vid not in referenced),
                        key=causal_key)[-MAX_HEADS:]
        heads = [c for c in leaves
                 if not any(dominates(o.vector, c.vector) for o in leaves if o is not c)]
        self._heads = heads
        return list(heads)

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

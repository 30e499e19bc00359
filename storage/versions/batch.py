"""Adding a batch of grants and records to a version set, in causal order.

Apart from the rules (vset.py, grants.py, lineage.py) because order is the batch's problem,
not a rule: replicas, disks and other sets hand over records in any order, while a record is
accepted only once its parents are members. Grants go first (they decide who may write),
then records by weight; a record whose parent is still missing is retried after the others,
until a round adds nothing. Undecodable bytes are refused one by one, never the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from proto import versions_pb2
from storage.versions.errors import MissingParentError, VersionError
from storage.versions.records import decode_grant, decode_version, grant_id, record_id

if TYPE_CHECKING:
    from storage.versions.vset import AddResult, VersionSet

STEP = 256       # grants or records added between two turns of the loop (causal_steps)


def add_in_causal_order(vs: VersionSet, grants: Iterable[versions_pb2.GrantRecord],
                        records: Iterable[versions_pb2.VersionRecord], result: AddResult, *,
                        at_ms: int | None, trusted: bool,
                        checked: Mapping[bytes, VersionError | None] | None = None) -> None:
    """Add grants, then records (retrying ones whose parents come later); count in ``result``.
    ``checked``: verdicts of the stand-alone checks, run already (precheck.py)."""
    for _ in causal_steps(vs, grants, records, result, at_ms=at_ms, trusted=trusted,
                          checked=checked):
        pass


Added = list[versions_pb2.GrantRecord | versions_pb2.VersionRecord]


def causal_order(records: Iterable[versions_pb2.VersionRecord]
                 ) -> list[versions_pb2.VersionRecord]:
    """Records by weight, then time, then id: parents before children (a retry catches the
    rest)."""
    return sorted(records, key=lambda r: (sum(e.counter for e in r.vector), r.time_ms,
                                          record_id(r)))


def causal_steps(vs: VersionSet, grants: Iterable[versions_pb2.GrantRecord],
                 records: Iterable[versions_pb2.VersionRecord], result: AddResult, *,
                 at_ms: int | None, trusted: bool,
                 checked: Mapping[bytes, VersionError | None] | None = None,
                 ordered: bool = False) -> Iterator[Added]:
    """``add_in_causal_order``, pausing after every STEP grants or records tried (and at the
    end) with what it added since the last pause, so an async caller can persist that and
    give the event loop a turn (store.py ``ingest_stepwise``). ``ordered``: ``records`` are
    in ``causal_order`` already (sorted off the loop, precheck.py)."""
    tried, new = 0, Added()
    for g in grants:
        try:
            if vs.add_grant(g, checked):
                result.accepted += 1
                new.append(g)
            else:
                result.duplicate += 1
        except VersionError as exc:
            result.refused.append((grant_id(g), exc))
        tried += 1
        if tried % STEP == 0:
            yield new
            new = Added()
    pending = list(records) if ordered else causal_order(records)
    last: VersionError = MissingParentError("parent never arrived")
    while pending:
        retry: list[versions_pb2.VersionRecord] = []
        progressed = False
        for r in pending:
            try:
                if vs.add(r, at_ms=at_ms, trusted=trusted, checked=checked):
                    result.accepted += 1
                    progressed = True
                    new.append(r)
                else:
                    result.duplicate += 1
            except MissingParentError as exc:
                retry.append(r)
                last = exc
            except VersionError as exc:
                result.refused.append((record_id(r), exc))
            tried += 1
            if tried % STEP == 0:
                yield new
                new = Added()
        if not progressed:
            result.refused.extend((record_id(r), last) for r in retry)
            break
        pending = retry
    yield new


def decode_all(grants: Iterable[bytes], records: Iterable[bytes],
               refused: list[tuple[bytes, VersionError]]
               ) -> tuple[list[versions_pb2.GrantRecord], list[versions_pb2.VersionRecord]]:
    """The serialized grants and records that decode; each one that does not goes to
    ``refused`` (with an empty id)."""
    good_grants: list[versions_pb2.GrantRecord] = []
    good_records: list[versions_pb2.VersionRecord] = []
    for data in grants:
        try:
            good_grants.append(decode_grant(data))
        except VersionError as exc:
            refused.append((b"", exc))
    for data in records:
        try:
            good_records.append(decode_version(data))
        except VersionError as exc:
            refused.append((b"", exc))
    return good_grants, good_records

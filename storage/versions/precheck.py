"""The stand-alone checks of a batch of version records and grants, off the event loop.

A versions.Push (or a Pull's answer) may carry up to 100,000 records and grants, and every
one's Ed25519 signature is checked (records.verify_version, verify_grant: ~50-70 µs each, so
seconds for a full batch). Those checks need nothing but the record and a clock, so a large
batch is decoded and checked on worker threads, CHUNK at a time (libsodium releases the GIL;
each hop gives the loop a turn), and the version set then applies the verdicts instead of
verifying again (vset.py ``add(checked=...)``): the rules that need the set (authorization,
parents, counters) still run in the set's own order, so results are those of an inline add.
A batch of at most INLINE items (a Revise's push: one record) is checked on the loop: a thread
hop costs more than it saves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from proto import versions_pb2
from storage.versions.batch import causal_order, decode_all
from storage.versions.errors import VersionError
from storage.versions.records import (
    grant_id,
    now_ms,
    record_id,
    verify_grant,
    verify_version,
)

INLINE = 32
CHUNK = 256

# record or grant id -> None (passed the stand-alone checks) or the error it raised
Verdicts = dict[bytes, VersionError | None]


@dataclass
class Prepared:
    """A decoded batch with the verdicts of its stand-alone checks."""

    grants: list[versions_pb2.GrantRecord] = field(default_factory=list)
    records: list[versions_pb2.VersionRecord] = field(default_factory=list)
    refused: list[tuple[bytes, VersionError]] = field(default_factory=list)   # undecodable
    checked: Verdicts = field(default_factory=dict)
    at_ms: int = 0
    ordered: bool = False       # records are in batch.causal_order


def check_chunk(grants: Sequence[bytes], records: Sequence[bytes], at_ms: int
                ) -> Prepared:
    """Decode ``grants`` and ``records`` and run ``verify_grant`` and
    ``verify_version(at_ms=at_ms)`` on each: one worker-thread hop's work."""
    p = Prepared(at_ms=at_ms)
    p.grants, p.records = decode_all(grants, records, p.refused)
    for g in p.grants:
        try:
            verify_grant(g)
            p.checked[grant_id(g)] = None
        except VersionError as exc:
            p.checked[grant_id(g)] = exc
    for r in p.records:
        try:
            verify_version(r, at_ms=at_ms)
            p.checked[record_id(r)] = None
        except VersionError as exc:
            p.checked[record_id(r)] = exc
    return p


def prepare_now(grants: Sequence[bytes], records: Sequence[bytes],
                at_ms: int | None = None) -> Prepared:
    """Decode only (the set verifies as it adds): a small batch, on the caller's thread."""
    p = Prepared(at_ms=now_ms() if at_ms is None else at_ms)
    p.grants, p.records = decode_all(grants, records, p.refused)
    return p


async def prepare(grants: Sequence[bytes], records: Sequence[bytes],
                  at_ms: int | None = None) -> Prepared:
    """Decode and check a batch, CHUNK items per worker-thread hop if it is large (grants
    first, then records, each in the order given, as ``decode_all``)."""
    if len(grants) + len(records) <= INLINE:
        return prepare_now(grants, records, at_ms)
    out = Prepared(at_ms=now_ms() if at_ms is None else at_ms)
    for i in range(0, len(grants) + len(records), CHUNK):
        g = grants[i:i + CHUNK]
        r = records[max(0, i - len(grants)):max(0, i + CHUNK - len(grants))]
        part = await asyncio.to_thread(check_chunk, g, r, out.at_ms)
        out.grants += part.grants
        out.records += part.records
        out.refused += part.refused
        out.checked.update(part.checked)
    out.records = await asyncio.to_thread(causal_order, out.records)
    out.ordered = True
    return out

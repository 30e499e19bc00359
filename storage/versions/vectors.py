"""Version vectors: a file's writers and how many versions each has written, compared entry-wise.

On the wire a vector is a list of (writer_id, counter) sorted by writer, counters > 0; a writer
is named by ``writer_id = node_id_for(writer_key)`` (20 bytes, as storage/versions/records.py).
In memory it is a dict writer_id -> counter, missing writers counting 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from proto import versions_pb2
from storage.versions.errors import MalformedRecordError

WRITER_ID_BYTES = 20
MAX_WRITERS = 256

Vector = dict[bytes, int]


def vector_of(entries: Iterable[versions_pb2.VectorEntry]) -> Vector:
    return {e.writer: e.counter for e in entries}


def vector_entries(vector: Mapping[bytes, int]) -> list[versions_pb2.VectorEntry]:
    return [versions_pb2.VectorEntry(writer=w, counter=c)
            for w, c in sorted(vector.items()) if c > 0]


def leq(a: Mapping[bytes, int], b: Mapping[bytes, int]) -> bool:
    """a ≤ b entry-wise (missing entries are 0)."""
    return all(c <= b.get(w, 0) for w, c in a.items())


def dominates(a: Mapping[bytes, int], b: Mapping[bytes, int]) -> bool:
    """a > b: a ≥ b entry-wise and a ≠ b."""
    return leq(b, a) and dict(a) != dict(b)


def vmax(vectors: Iterable[Mapping[bytes, int]]) -> Vector:
    out: Vector = {}
    for v in vectors:
        for w, c in v.items():
            if c > out.get(w, 0):
                out[w] = c
    return out


def check_entries(entries: Iterable[versions_pb2.VectorEntry], what: str) -> None:
    """A signed vector's structure: 20-byte writers, sorted and unique, counters > 0, bounded."""
    prev = b""
    n = 0
    for e in entries:
        n += 1
        if len(e.writer) != WRITER_ID_BYTES or e.counter <= 0:
            raise MalformedRecordError(f"{what}: entries need a 20-byte writer and counter > 0")
        if e.writer <= prev:
            raise MalformedRecordError(f"{what}: entries must be sorted by writer, unique")
        prev = e.writer
    if n > MAX_WRITERS:
        raise MalformedRecordError(f"{what}: more than {MAX_WRITERS} writers")

"""How a new version must relate to its parents: the vector rules of the version set.

Apart from the version set (vset.py) because these rules are pure arithmetic on one record's
vector and its parents' vectors, and they are what keeps counters honest:
  * a record with no parents is a genesis: only the owner, only its own vector entry;
  * for every other writer w: vector[w] == max(parents)[w] (a writer may not raise, or drop,
    another writer's counter) and vector[self] > max(parents)[self] (strictly newer than its
    parents; the writer's own counter may skip values, so a writer basing a version on someone
    else's older head never reuses its own counter).

Equivocation (one writer, one counter, two different records) cannot be refused without
breaking convergence (replicas would keep whichever arrived first), so both are kept: their
vectors are equal, neither dominates, both show as conflicting heads and
``VersionSet.equivocations()`` names the writer. An honest writer never equivocates: its
counter is persisted before it signs.
"""

from __future__ import annotations

from collections.abc import Iterable

from storage.versions.errors import ClaimedCounterError, NotNewerError, UnauthorizedWriterError
from storage.versions.records import Vector, vmax


def check_genesis(writer_key: bytes, owner_key: bytes | None, vector: Vector,
                  me: bytes) -> None:
    """Raise unless a version with no parents is the owner's and carries only its entry."""
    if owner_key is None or writer_key != owner_key:
        raise UnauthorizedWriterError("only the owner may write a version with no parent")
    if set(vector) != {me}:
        raise ClaimedCounterError("a first version may only carry its writer's entry")


def check_descends(vector: Vector, me: bytes, parent_vectors: Iterable[Vector]) -> None:
    """Raise unless ``vector`` (by writer id ``me``) keeps every other writer's counter at
    max(parents) and raises its own above it."""
    pv = vmax(parent_vectors)
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

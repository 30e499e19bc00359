"""One verified version as a set holds it, the order sets list versions in, and an add's outcome.

Apart from the set (vset.py) because readers, writers and the API pass versions and add
results around without needing the rules that admitted them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proto import versions_pb2
from storage.versions.errors import VersionError
from storage.versions.vectors import Vector


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


def causal_key(v: Version) -> tuple[int, int, bytes]:
    """Sort key putting parents before children (a child's vector is heavier)."""
    return (v.weight, v.record.time_ms, v.id)


@dataclass
class AddResult:
    accepted: int = 0
    duplicate: int = 0
    refused: list[tuple[bytes, VersionError]] = field(default_factory=list)

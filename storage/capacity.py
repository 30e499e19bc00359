"""Reserved space: a node stops taking new data before its disk fills.

Like Tahoe-LAFS's ``reserved_space`` (and a Storj node's allocated space): a holder refuses a
fragment, manifest or document record that would leave less than the reserve free on its data
volume, with RESOURCE_EXHAUSTED, which a Push already treats as "use a spare peer". Without it a
node wrote until ENOSPC, leaving its own SQLite indexes, logs and the rest of the machine with
no room at all.

The reserve also travels in the node's signed peer record (``reserved_bytes`` beside
``free_bytes``), so placement ranks a peer whose usable space is under ``FULL_MARGIN`` last
and a Push never spends a round trip on a full peer (storage/placement.py). The record is
only as fresh as its last republish: a peer that filled up since still answers
RESOURCE_EXHAUSTED, and the Push moves on as before.

The default reserve can also come from ``$TW_MESH_RESERVED_SPACE`` (the flag wins). The test
suite sets it to 0: its nodes share one volume, and a CI disk seen with under 300 MB free
would otherwise make every node refuse everything; the tests of the reserve set it
explicitly.

Version records (storage/versions/) are not refused: they are a few hundred bytes, and a
replica that dropped them would only be caught up by anti-entropy later.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from mesh.errors import MeshError, ResourceExhaustedError

DEFAULT_RESERVED = 1 << 30       # Tahoe-LAFS's default reserved_space: 1G ...
DEFAULT_SHARE = 0.10             # ... but never more than a tenth of a small volume
FULL_MARGIN = 64 << 20           # less usable space than this: ranked last by placement
RESERVE_ENV = "TW_MESH_RESERVED_SPACE"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in ``text``: a number with an optional binary unit, e.g. 0, 4096, 512M, 1.5GiB."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 0, 500M, 1G, 2TiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def default_reserve(total: int) -> int:
    return min(DEFAULT_RESERVED, int(total * DEFAULT_SHARE))


class ReserveSettingError(MeshError, ValueError):
    """``$TW_MESH_RESERVED_SPACE`` is not a size."""


class StorageFull(ResourceExhaustedError):
    """A store would eat into the node's reserved space."""


class Capacity:
    """The data volume's free space against the reserve (None: the default for its size)."""

    def __init__(self, path: Path, reserved: int | None = None) -> None:
        self.path = path
        if reserved is None:
            text = os.environ.get(RESERVE_ENV, "").strip()
            try:
                reserved = parse_size(text) if text else default_reserve(
                    shutil.disk_usage(path).total)
            except ValueError as exc:       # a one-line error at `tw-mesh join`, no traceback
                raise ReserveSettingError(f"${RESERVE_ENV}: {exc}") from exc
        self.reserved = reserved
        self.refused = 0

    def free(self) -> int:
        st = os.statvfs(self.path)        # a few microseconds: asked on every store
        return st.f_bavail * st.f_frsize

    def check(self, incoming: int) -> None:
        """StorageFull unless ``incoming`` more bytes leave the reserve free."""
        if not self.reserved:
            return
        free = self.free()
        if free - incoming < self.reserved:
            self.refused += 1
            raise StorageFull(f"storage full: {free >> 20} MiB free, {self.reserved >> 20} MiB "
                              "reserved (--reserved-space): store it on another peer")

    def status(self) -> dict[str, Any]:
        free = self.free()
        usable = max(0, free - self.reserved)
        return {"reserved_bytes": self.reserved, "usable_bytes": usable,
                "full": usable < FULL_MARGIN, "stores_refused_full": self.refused}


def looks_full(capacity_bytes: int, free_bytes: int, reserved_bytes: int) -> bool:
    """Whether a peer record shows less than FULL_MARGIN usable (unknown capacity: no)."""
    return bool(capacity_bytes) and free_bytes < reserved_bytes + FULL_MARGIN

"""What repair counts, and the key it remembers a signed manifest by.

In a module of their own because the repair loop (repair.py), the rebuilds (rebuild.py) and
rebalancing (rebalance.py) all write to the same counters, which the node's Status shows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from storage.manifest import Manifest


@dataclass
class RepairCounters:
    passes: int = 0
    files_checked: int = 0
    files_led: int = 0
    stripes_rebuilt: int = 0
    fragments_rebuilt: int = 0
    fragments_moved: int = 0
    bytes_fetched: int = 0
    bytes_stored: int = 0
    stripes_unrecoverable: int = 0
    failures: int = 0
    manifests_copied: int = 0


def manifest_id(m: Manifest) -> bytes:
    return hashlib.sha256(m.signed.body).digest()[:16]

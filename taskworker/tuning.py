"""Process-level tuning for a node.

glibc returns every allocation above 128 KiB-32 MiB (dynamic threshold) to the kernel with
munmap and faults it back in on the next stripe; for 4 MiB stripes that cost ~25k page faults
per 64 MiB and capped the codec at ~1.3 GB/s (benchmarks/RESULTS.md, codec section). Raising the
mmap and trim thresholds keeps stripe-sized buffers in the heap and reuses them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 * 2**20      # buffers below this come from the heap and are reused
TRIM_THRESHOLD = 256 * 2**20     # keep up to this much freed heap before returning it


def tune_malloc() -> bool:
    """Apply the thresholds; False where this is not glibc (harmless: only slower)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        log.debug("mallopt refused the thresholds")
    return ok

"""glibc malloc settings for a process that moves bulk data over the channel.

Every 1 MiB frame costs a few 1 MiB allocations: gRPC's receive buffers (in its event-engine
threads), the received message, the plaintext, the sealed wire bytes. With glibc's defaults
those are served by fresh pages again and again: below the (dynamic) mmap threshold an arena
that ends with more than ``M_TRIM_THRESHOLD`` free at its top gives it back to the kernel, and
the next frame faults the pages in again; above it, each allocation is its own mmap. On this
project's VMs a page fault costs microseconds, and measured on a 64 MiB stream (channel_bench)
the faults were most of the CPU per MiB: the receiving process took ~380 faults per MiB sealed
and ~170 plaintext.

``tune()`` fixes the mmap threshold at 8 MiB (frames are ≤ 1 MiB by default, fragments are
a few MiB) and lets an arena keep up to 32 MiB free at its top before trimming, so the steady
state reuses the same pages. Measured on 3 × 512 MiB streams per setting (receiving process,
faults per MiB / CPU ms per MiB over both processes): trim 8 MiB 57–111 / 0.77–0.89, 16 MiB
3–10 / 0.65–0.68, 32 MiB 3–4 / 0.59–0.68 (gRPC's receive buffers come and go in bursts of
several MiB). The cost is resident memory an arena may keep after use, up to 32 MiB each; the
receiving process's RSS after those streams was 80–107 MB, against 71–125 MB with glibc's
defaults (fragmentation varies more than the setting). It helps plaintext gRPC in the same
process just as much; channel_bench measures both under the same settings.

Clients of the local API apply it too (the CLI's api_channel, TaskWorker): a 1 MiB unary
gRPC call cost 1.69 ms of CPU over client and server with glibc's defaults and 0.59 ms tuned
(p50 1.53 → 0.50 ms, one process, 200 calls).

It is process-wide and done once, by the first ChannelPool or ChannelServer. It does nothing
when the process was started with ``MALLOC_*_`` settings of its own, when
``TW_MESH_MALLOC_TUNE=0``, or when the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 8 << 20
TRIM_THRESHOLD = 32 << 20

_state: dict[str, bool] = {}


def tune() -> bool:
    """Apply the settings once per process; True if they are in force."""
    if "tuned" not in _state:
        _state["tuned"] = _apply()
    return _state["tuned"]


def _apply() -> bool:
    if os.environ.get("TW_MESH_MALLOC_TUNE", "1") == "0":
        return False
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return False          # the operator chose settings: leave them alone
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):
        return False          # not glibc: other mallocs have other knobs
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) \
        and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        log.debug("mallopt refused the channel's allocator settings")
    return ok

"""XOR schedules run as numpy bulk XORs over packets (compiled by storage._xor_schedule).

Execution walks the fragments one tile at a time (the same offsets of every packet) so a tile's
packets stay in cache while each output is built; temp space is kept per thread between calls
rather than allocated per call.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from storage._xor_schedule import Schedule, compile_schedule

__all__ = ["Schedule", "compile_schedule", "run"]

# Most bytes one numpy op touches per operand. Long contiguous runs win here: (4,2) on 4 MiB
# stripes with 128 KiB packets ran ~20% faster as 128 KiB ops than as 32 KiB ones (per-op
# overhead, and fewer memory streams to start), and as 2-D ops over four 32 KiB packets no
# faster than as 32 KiB ones. Tiles smaller than a packet (8-16 KiB, to stay in L2) were slower.
TILE_BYTES = 128 * 1024
# Temp buffers are one tile each: wide codes (hundreds of temps) get smaller tiles, down to
# MIN_TILE_BYTES, so their temp space stays near TEMP_BYTES (the 32 KiB tiles before made
# (20,10) take 27 MiB; uncapped 128 KiB tiles would take 70 MiB).
MIN_TILE_BYTES = 32 * 1024
TEMP_BYTES = 32 * 2**20
SCRATCH_BYTES = 8 * 2**20  # per-thread temp space kept between calls (see _scratch)
SMALL_BYTES = 32 * 1024  # fragments up to this size take the Python-int path (_run_small)


def _segments(size: int, packet: int, tile: int) -> list[tuple[int, int, int, int, int]]:
    """Tiles (start, chunks, packet, word0, word1) covering a fragment of `size` bytes.

    XOR is elementwise, so any rectangle of (chunk, offset-in-packet) positions can be done as
    a unit: small packets are grouped, large ones split, so each op touches <= tile bytes.
    """
    step = tile // 8  # words per tile
    out: list[tuple[int, int, int, int, int]] = []

    def split(start: int, pkt: int) -> None:
        out.extend((start, 1, pkt, w, min(w + step, pkt // 8)) for w in range(0, pkt // 8, step))

    chunk = 8 * packet
    n_full = size // chunk
    if packet >= tile:
        for c in range(n_full):
            split(c * chunk, packet)
    else:
        group = tile // packet
        out.extend(
            (c * chunk, min(group, n_full - c), packet, 0, packet // 8)
            for c in range(0, n_full, group)
        )
    if size > n_full * chunk:
        split(n_full * chunk, (size - n_full * chunk) // 8)
    return out


def run(
    sched: Schedule,
    inputs: Sequence[np.ndarray],
    outputs: Sequence[np.ndarray],
    packet: int,
) -> None:
    """Apply a schedule whose inputs/outputs are the 8 packets of each given fragment.

    Fragments are 1-D uint8 arrays of equal length: whole chunks of 8*packet bytes, then one
    tail chunk of 8*tail bytes (tail a multiple of 8, at most packet).
    """
    size = len(inputs[0])
    if size <= SMALL_BYTES:
        _run_small(sched, inputs, outputs, packet)
        return
    head = size - size % (8 * packet)
    if head and size - head <= SMALL_BYTES:
        # A short tail chunk (a sealed 4 MiB stripe leaves 64 bytes per fragment) costs as
        # many numpy calls as a full one: Python ints do it ~3x faster (13 vs 42 us).
        _run_small(sched, [f[head:] for f in inputs], [f[head:] for f in outputs], packet)
        inputs, outputs = [f[:head] for f in inputs], [f[:head] for f in outputs]
    frags = [f.view(np.uint64) for f in (*inputs, *outputs)]  # sizes are multiples of 64
    tile = min(TILE_BYTES, max(MIN_TILE_BYTES, TEMP_BYTES // max(sched.n_tmp, 1))) // 8 * 8
    segments = _segments(len(inputs[0]), packet, tile)
    widest = max(chunks * (w1 - w0) for _, chunks, _, w0, w1 in segments)
    temps = _scratch(sched.n_tmp * widest).reshape(sched.n_tmp, widest)
    shaped: dict[tuple[int, int], list[np.ndarray]] = {}  # temp views per tile shape
    n_in, xor = len(inputs), np.bitwise_xor
    for start, chunks, pkt, w0, w1 in segments:
        words, first = pkt // 8, start // 8
        key = (chunks, w1 - w0)
        if key not in shaped:
            flat = temps[:, : chunks * (w1 - w0)]
            shaped[key] = list(flat if chunks == 1 else flat.reshape(-1, chunks, w1 - w0))
        bufs: list[np.ndarray] = []
        for i, frag in enumerate(frags):
            if i == n_in:
                bufs.extend(shaped[key])
            v = frag[first : first + chunks * 8 * words].reshape(chunks, 8, words)
            # 1-D views when possible: numpy's contiguous 1-D loop is ~1.5x faster here.
            if chunks == 1:
                bufs.extend(v[0] if w1 - w0 == words else v[0, :, w0:w1])
            else:
                bufs.extend(v[:, :, w0:w1].transpose(1, 0, 2))
        for dst, a, b in sched.ops:
            if b >= 0:
                xor(bufs[a], bufs[b], bufs[dst])
            elif a >= 0:
                bufs[dst][...] = bufs[a]
            else:
                bufs[dst][...] = 0


_local = threading.local()


def _scratch(words: int) -> np.ndarray:
    """Temp space for run(): one array per thread, kept between calls up to SCRATCH_BYTES
    (no multi-MiB allocation, and no page faults if malloc gave it back, per call)."""
    if words * 8 > SCRATCH_BYTES:
        return np.empty(words, np.uint64)
    buf: np.ndarray | None = getattr(_local, "buf", None)
    if buf is None or len(buf) < words:
        buf = _local.buf = np.empty(words, np.uint64)
    return buf[:words]


def _run_small(
    sched: Schedule, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray], packet: int
) -> None:
    """Same result as run(), with each packet as a Python int: for small stripes numpy's
    per-call overhead dominates, and an int XOR of a few hundred bytes costs far less."""
    size, pos = len(inputs[0]), 0
    base = sched.n_in + sched.n_tmp
    while pos < size:
        pkt = packet if size - pos >= 8 * packet else (size - pos) // 8
        vals: list[int] = []
        for frag in inputs:
            raw = frag[pos : pos + 8 * pkt].tobytes()
            vals.extend(int.from_bytes(raw[j * pkt : (j + 1) * pkt], "little") for j in range(8))
        vals.extend([0] * (sched.n_tmp + sched.n_out))
        for dst, a, b in sched.ops:
            vals[dst] = (vals[a] if a >= 0 else 0) ^ (vals[b] if b >= 0 else 0)
        for o, frag in enumerate(outputs):
            out = b"".join(vals[base + 8 * o + j].to_bytes(pkt, "little") for j in range(8))
            frag[pos : pos + 8 * pkt] = np.frombuffer(out, np.uint8)
        pos += 8 * pkt

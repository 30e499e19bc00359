"""XOR schedules: a GF(2) matrix turned into numpy bulk XORs over packets.

A schedule computes ``out[r] = XOR of in[c] for every c with bits[r, c] == 1`` where each in/out
is a whole packet. Pairs of inputs shared by several outputs are XORed once into a temporary
(greedy common-pair elimination, as in Plank's "smart scheduling"), which cuts the XOR count
noticeably for dense decode matrices. Each temporary is computed just before the first output
that reads it, and temporaries share buffers once dead (liveness allocation), so fewer buffers
are live at once. Execution walks the fragments one tile at a time (the same offsets of every
packet) so a tile's packets stay in cache while each output is built; temp space is kept per
thread between calls rather than allocated per call.
"""

from __future__ import annotations

import heapq
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

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
_MAX_PAIR_WORK = 600_000  # above (20,10)-sized matrices pair elimination takes seconds


@dataclass(frozen=True)
class Schedule:
    """Ops over a buffer space: inputs [0, n_in), temps [n_in, n_in+n_tmp), then outputs.

    Each op is (dst, a, b): dst = a ^ b, or dst = a (copy) when b == -1, or dst = 0 when a == -1.
    """

    n_in: int
    n_tmp: int
    n_out: int
    ops: tuple[tuple[int, int, int], ...]

    @property
    def xor_count(self) -> int:
        return sum(1 for _, a, b in self.ops if a >= 0 and b >= 0)


def compile_schedule(bits: np.ndarray, eliminate_pairs: bool = True) -> Schedule:
    """Build a schedule for an (n_out x n_in) 0/1 matrix."""
    n_out, n_in = bits.shape
    rows: list[set[int]] = [set(np.flatnonzero(bits[r]).tolist()) for r in range(n_out)]
    temps: list[tuple[int, int]] = []
    if eliminate_pairs and sum(len(r) ** 2 for r in rows) <= _MAX_PAIR_WORK:
        counts: Counter[tuple[int, int]] = Counter()
        for r in rows:
            counts.update(combinations(sorted(r), 2))
        heap = [(-c, p) for p, c in counts.items() if c > 1]
        heapq.heapify(heap)
        while heap:
            neg, (a, b) = heapq.heappop(heap)
            if counts.get((a, b), 0) != -neg:
                continue  # stale entry; the current count was pushed separately
            t = n_in + len(temps)
            temps.append((a, b))
            touched: set[tuple[int, int]] = set()
            for r in rows:
                if a in r and b in r:
                    r -= {a, b}
                    for x in r:
                        for key in ((min(a, x), max(a, x)), (min(b, x), max(b, x))):
                            counts[key] -= 1
                            touched.add(key)
                        counts[(x, t)] += 1
                        touched.add((x, t))
                    r.add(t)
            del counts[(a, b)]
            for key in touched:
                if counts[key] > 1:
                    heapq.heappush(heap, (-counts[key], key))
    # Emit each temp just before the first output chain that needs it, then give temps
    # registers by liveness: fewer temp buffers are live at once, so more stay in cache.
    # An output that is exactly one temp holds that temp itself (no copy op).
    base = n_in + len(temps)
    home: dict[int, int] = {}
    for out_row, srcs in enumerate(rows):
        if len(srcs) == 1 and min(srcs) >= n_in:
            home.setdefault(min(srcs), base + out_row)
    ops: list[tuple[int, int, int]] = []
    emitted: set[int] = set()

    def need(x: int) -> None:  # depth-first, without recursion: temp chains can be long
        stack = [x]
        while stack:
            t = stack[-1]
            if t < n_in or t in emitted:
                stack.pop()
                continue
            a, b = temps[t - n_in]
            missing = [y for y in (a, b) if y >= n_in and y not in emitted]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            ops.append((home.get(t, t), home.get(a, a), home.get(b, b)))
            emitted.add(t)

    for out_row, srcs in enumerate(rows):
        dst = base + out_row
        order = sorted(srcs)
        for s in order:
            need(s)
        order = [home.get(s, s) for s in order]
        if not order:
            ops.append((dst, -1, -1))
        elif order == [dst]:
            pass  # this output already holds its one temp
        elif len(order) == 1:
            ops.append((dst, order[0], -1))
        else:
            ops.append((dst, order[0], order[1]))
            ops.extend((dst, dst, s) for s in order[2:])
    return _allocate(n_in, len(temps), n_out, ops)


def _allocate(n_in: int, n_tmp: int, n_out: int, ops: list[tuple[int, int, int]]) -> Schedule:
    """Renumber temps onto as few buffers as their lifetimes allow: a temp's buffer is free
    after its last read and may be the destination of that same op (XOR is elementwise, so
    an exact overlap is safe)."""

    def is_tmp(x: int) -> bool:
        return n_in <= x < n_in + n_tmp

    last = {x: i for i, op in enumerate(ops) for x in op[1:] if is_tmp(x)}
    slot: dict[int, int] = {}
    free: list[int] = []
    n_slots = 0
    for i, (dst, a, b) in enumerate(ops):
        for x in {a, b}:
            if is_tmp(x) and last[x] == i:
                free.append(slot[x])
        if is_tmp(dst):
            if not free:
                free.append(n_slots)
                n_slots += 1
            slot[dst] = free.pop()

    def remap(x: int) -> int:
        if x < n_in:
            return x
        return n_in + slot[x] if is_tmp(x) else x - n_tmp + n_slots

    renamed = tuple((remap(d), remap(a), remap(b)) for d, a, b in ops)
    return Schedule(n_in, n_slots, n_out, renamed)


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

"""Compiling a GF(2) bit matrix into an XOR schedule; storage._xor runs the result.

A schedule computes ``out[r] = XOR of in[c] for every c with bits[r, c] == 1`` where each in/out
is a whole packet. Pairs of inputs shared by several outputs are XORed once into a temporary
(greedy common-pair elimination, as in Plank's "smart scheduling"), which cuts the XOR count
noticeably for dense decode matrices. Each temporary is computed just before the first output
that reads it, and temporaries share buffers once dead (liveness allocation), so fewer buffers
are live at once.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from itertools import combinations

import numpy as np

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

"""The generator matrix a Codec encodes with, and the XOR schedules compiled from it, cached.

By default the parity matrix is reedsolo's own systematic RS code (``RSCodec(nsym=m)``, prim
0x11d, generator 2, fcr 0), read off by encoding unit vectors; ``"cauchy"`` selects a "good"
Cauchy matrix instead. Why reedsolo's is the default: it has more one-bits (228 vs 115 for
(4,2)), but after pair elimination it needs 74 vs 64 XORs per chunk for (4,2) and 535 vs 422
for (10,4), i.e. 16-27% more kernel work. Measured end to end (``benchmarks.codec_bench
--stripe-mib 4``, 64 MiB, three quiet runs at load 0.8, 2026-11-28 09:06 UTC) that is 17-19%
lower encode MB/s for (4,2) (about 7.5 vs 9.2 GB/s) and 19-22% for (10,4) (3.3 vs 4.2 GB/s),
while decode is within 4% either way (XOR counts are close: 67 vs 80 for (4,2) with fragments
0,1 erased). That is under the 30% bar that would justify giving up reedsolo compatibility, and
both stay above 5x zfec for (4,2) encode. Re-measured with 128 KiB packets (thread CPU time,
best of 11 interleaved runs, 2026-11-28 10:38 UTC, 4 MiB stripes): reedsolo's matrix takes
19-20% longer to encode (4,2) and (10,4) (9.4 vs 11.2 GB/s, 3.9 vs 4.7 GB/s) and 0-4% longer
to decode.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from storage import _gf, _xor

MatrixKind = Literal["reedsolo", "cauchy"]


@lru_cache(maxsize=32)
def encode_schedule(
    k: int, m: int, kind: MatrixKind
) -> tuple[tuple[tuple[int, ...], ...], _xor.Schedule]:
    """The m x k parity matrix and the schedule that computes the parity rows from the data."""
    parity = _gf.reedsolo_parity(k, m) if kind == "reedsolo" else _gf.cauchy_parity(k, m)
    return parity, _xor.compile_schedule(_gf.expand(parity, k))


@lru_cache(maxsize=256)
def decode_schedule(
    k: int, m: int, kind: MatrixKind, chosen: tuple[int, ...], wanted: tuple[int, ...]
) -> _xor.Schedule:
    """Schedule writing data rows `wanted` out of the k fragments `chosen` (a wanted row that
    is itself chosen becomes a plain copy).

    Cached per erasure pattern: the matrix inverse and pair elimination run once per
    (k, m, kind, chosen, wanted), not per stripe.
    """
    if len(set(chosen)) != k or not set(wanted) <= set(range(k)):
        raise ValueError(f"bad decode pattern: chosen {chosen}, wanted {wanted}")
    parity = encode_schedule(k, m, kind)[0]
    rows = [[int(i == j) for j in range(k)] if i < k else list(parity[i - k]) for i in chosen]
    inverse = _gf.invert(rows)
    return _xor.compile_schedule(_gf.expand([inverse[d] for d in wanted], k))

"""GF(2^8) arithmetic and generator matrices for the storage codec.

The field is reedsolo's default one (primitive polynomial 0x11d, generator 2), so a parity
matrix read off ``reedsolo.RSCodec`` and our own matrix algebra agree on every product.
Matrices are small (at most 255 x 255) and built once per (k, m), so plain Python is fine here;
the bulk work happens in :mod:`storage._xor`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import reedsolo

PRIM = 0x11D
Matrix = list[list[int]]

_EXP = [0] * 512
_LOG = [0] * 256
_x = 1
for _i in range(255):
    _EXP[_i] = _x
    _LOG[_x] = _i
    _x <<= 1
    if _x & 0x100:
        _x ^= PRIM
for _i in range(255, 512):
    _EXP[_i] = _EXP[_i - 255]


def mul(a: int, b: int) -> int:
    """Product of two field elements."""
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def inv(a: int) -> int:
    """Multiplicative inverse; 0 has none."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return _EXP[255 - _LOG[a]]


def invert(matrix: Matrix) -> Matrix:
    """Gauss-Jordan inverse of a square matrix; ValueError if it is singular."""
    size = len(matrix)
    a = [list(row) + [int(i == j) for j in range(size)] for i, row in enumerate(matrix)]
    for col in range(size):
        pivot = next((r for r in range(col, size) if a[r][col]), None)
        if pivot is None:
            raise ValueError("matrix is singular")
        a[col], a[pivot] = a[pivot], a[col]
        scale = inv(a[col][col])
        a[col] = [mul(scale, v) for v in a[col]]
        for r in range(size):
            factor = a[r][col]
            if r != col and factor:
                a[r] = [v ^ mul(factor, p) for v, p in zip(a[r], a[col], strict=True)]
    return [row[size:] for row in a]


@lru_cache(maxsize=64)
def reedsolo_parity(k: int, m: int) -> tuple[tuple[int, ...], ...]:
    """m x k parity matrix of reedsolo's systematic RS(k+m, k) code.

    RS encoding is linear, so encoding the unit vector e_j yields column j of the matrix.
    Row i is the i-th parity symbol reedsolo appends after the message.
    """
    rs = reedsolo.RSCodec(nsym=m, nsize=255)
    cols = []
    for j in range(k):
        unit = bytearray(k)
        unit[j] = 1
        cols.append(bytes(rs.encode(unit))[k:])
    return tuple(tuple(cols[j][i] for j in range(k)) for i in range(m))


@lru_cache(maxsize=64)
def cauchy_parity(k: int, m: int) -> tuple[tuple[int, ...], ...]:
    """m x k Cauchy matrix scaled to few one-bits (Plank's "good" Cauchy construction).

    Every square submatrix of a Cauchy matrix is invertible, and scaling rows or columns keeps
    that, so [I; P] stays MDS. Columns are scaled so row 0 is all ones (plain XOR parity);
    each later row is divided by whichever of its entries leaves the fewest bitmatrix ones.
    """
    rows = [[inv(i ^ (m + j)) for j in range(k)] for i in range(m)]
    for j in range(k if m else 0):
        s = inv(rows[0][j])
        for i in range(m):
            rows[i][j] = mul(rows[i][j], s)
    for i in range(1, m):
        best = min((sum(ones(mul(v, inv(d))) for v in rows[i]), d) for d in set(rows[i]))[1]
        rows[i] = [mul(v, inv(best)) for v in rows[i]]
    return tuple(tuple(r) for r in rows)


def ones(e: int) -> int:
    """Number of ones in the 8x8 bitmatrix of e (the XOR cost of multiplying by e)."""
    return int(bitmatrix(e).sum())


@lru_cache(maxsize=256)
def _bitmatrix(e: int) -> bytes:
    out = np.zeros((8, 8), dtype=np.uint8)
    for j in range(8):
        prod = mul(e, 1 << j)
        for i in range(8):
            out[i, j] = (prod >> i) & 1
    return out.tobytes()


def bitmatrix(e: int) -> np.ndarray:
    """8x8 matrix B over GF(2) with bit i of e*x equal to XOR_j B[i, j] & bit j of x."""
    return np.frombuffer(_bitmatrix(e), dtype=np.uint8).reshape(8, 8)


def expand(matrix: Matrix | tuple[tuple[int, ...], ...], cols: int) -> np.ndarray:
    """Replace each coefficient of an r x cols matrix by its bitmatrix: (8r) x (8cols) 0/1."""
    r, c = len(matrix), cols
    out = np.zeros((8 * r, 8 * c), dtype=np.uint8)
    for i, row in enumerate(matrix):
        for j, e in enumerate(row):
            out[8 * i : 8 * i + 8, 8 * j : 8 * j + 8] = bitmatrix(e)
    return out

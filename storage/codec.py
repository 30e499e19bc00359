"""Systematic Reed-Solomon erasure codec over GF(2^8): k data + m parity fragments.

Why a bitmatrix: reedsolo run one byte column at a time managed ~1 MB/s here. Instead every
generator coefficient is expanded into its 8x8 bitmatrix over GF(2) and the code runs as bulk
numpy XORs of whole packets (Jerasure's technique), which reaches GB/s in one thread.

Generator: by default the parity matrix is reedsolo's own systematic RS code (``RSCodec(nsym=m)``,
prim 0x11d, generator 2, fcr 0), read off by encoding unit vectors, so every symbol column of a
stripe is a reedsolo codeword (tests decode columns with reedsolo). A symbol is bit-sliced: it
takes one bit from each of 8 packets (layout below), which is what turns multiplication into
whole-packet XORs. ``matrix="cauchy"`` selects a "good" Cauchy matrix instead. Why reedsolo's
is the default: it has more one-bits (228 vs 115 for (4,2)), but after pair elimination it
needs 74 vs 64 XORs per chunk for (4,2) and 535 vs 422 for (10,4), i.e. 16-27% more kernel
work and 0-28% lower end-to-end encode MB/s (decode equal) in benchmarks/RESULTS.md: under
the 30% bar that would justify giving up reedsolo compatibility.

On-disk layout (format version 1), for a stripe of L bytes and packet size P:
  * F = fragment_size(L): ceil(L / k) rounded up to whole chunks of 8*P bytes, except that the
    last chunk may be shorter, 8*T bytes with T a multiple of 8 (so F is a multiple of 64).
  * Data fragment d (0 <= d < k) holds stripe bytes [d*F, (d+1)*F), zero-padded past L.
    Parity fragment k+i holds parity row i; n = k + m fragments in all.
  * Inside a chunk of 8*Q bytes (Q = P, or T for the tail chunk), packet j is bytes
    [j*Q, (j+1)*Q). The GF(2^8) symbol at byte offset o, bit b of a chunk is
    sum_j ((packet_j[o] >> b) & 1) << j, and across fragments d=0..n-1 those symbols form
    the codeword ``reedsolo.RSCodec(m).encode(data symbols)``.
  * P (and the matrix kind) must be recorded with the fragments (manifest): the same bytes
    decoded with another P are garbage.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

import numpy as np

from mesh.errors import MeshError
from storage import _gf, _xor

MatrixKind = Literal["reedsolo", "cauchy"]
FORMAT_VERSION = 1
DEFAULT_PACKET = 32768  # 32 KiB: per-op numpy overhead vs cache fit measured best here


class NotEnoughFragmentsError(MeshError):
    """Fewer than k distinct usable fragments were supplied to decode."""


@lru_cache(maxsize=32)
def _encoder(k: int, m: int, kind: MatrixKind) -> tuple[tuple[tuple[int, ...], ...], _xor.Schedule]:
    parity = _gf.reedsolo_parity(k, m) if kind == "reedsolo" else _gf.cauchy_parity(k, m)
    return parity, _xor.compile_schedule(_gf.expand(parity, k))


@lru_cache(maxsize=256)
def _decoder(k: int, m: int, kind: MatrixKind, chosen: tuple[int, ...]) -> _xor.Schedule:
    """Schedule rebuilding the data fragments absent from `chosen` (k indices) out of them."""
    parity = _encoder(k, m, kind)[0]
    rows = [[int(i == j) for j in range(k)] if i < k else list(parity[i - k]) for i in chosen]
    inverse = _gf.invert(rows)
    missing = [d for d in range(k) if d not in chosen]
    return _xor.compile_schedule(_gf.expand([inverse[d] for d in missing], k))


class Codec:
    """Encode a stripe into k+m fragments; rebuild it from any k of them."""

    def __init__(
        self, k: int, m: int, packet_size: int = DEFAULT_PACKET, matrix: MatrixKind = "reedsolo"
    ) -> None:
        for name, v in (("k", k), ("m", m), ("packet_size", packet_size)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{name} must be an int, got {v!r}")
        if k < 1 or m < 0:
            raise ValueError(f"need k >= 1 and m >= 0, got k={k}, m={m}")
        if k + m > 255:
            raise ValueError(f"k + m must be <= 255 in GF(2^8), got {k + m}")
        if packet_size < 8 or packet_size % 8:
            raise ValueError(f"packet_size must be a positive multiple of 8, got {packet_size}")
        if matrix not in ("reedsolo", "cauchy"):
            raise ValueError(f"matrix must be 'reedsolo' or 'cauchy', got {matrix!r}")
        self.k, self.m, self.n = k, m, k + m
        self.packet_size = packet_size
        self.matrix: MatrixKind = matrix
        self._parity, self._enc = _encoder(k, m, matrix)

    def __repr__(self) -> str:
        return (
            f"Codec(k={self.k}, m={self.m}, packet_size={self.packet_size}, matrix={self.matrix!r})"
        )

    def params(self) -> dict[str, int | str]:
        """Everything a reader needs to decode these fragments; store it in the manifest."""
        return {
            "format": FORMAT_VERSION,
            "k": self.k,
            "m": self.m,
            "packet_size": self.packet_size,
            "matrix": self.matrix,
        }

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> Codec:
        """Inverse of params(); ValueError on an unknown format or bad values."""
        if params.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported codec format {params.get('format')!r}")
        return cls(
            params.get("k"),  # type: ignore[arg-type]  # validated by __init__
            params.get("m"),  # type: ignore[arg-type]
            params.get("packet_size"),  # type: ignore[arg-type]
            params.get("matrix"),  # type: ignore[arg-type]
        )

    @property
    def parity_matrix(self) -> tuple[tuple[int, ...], ...]:
        """The m x k GF(2^8) parity matrix P of the generator [I; P]."""
        return self._parity

    def fragment_size(self, stripe_len: int) -> int:
        """Bytes in each fragment of a stripe of stripe_len bytes (see the layout above)."""
        if stripe_len < 0:
            raise ValueError(f"stripe_len must be >= 0, got {stripe_len}")
        per = -(-stripe_len // self.k)
        chunk = 8 * self.packet_size
        full, rem = divmod(per, chunk)
        return full * chunk + -(-rem // 64) * 64

    def encode(self, stripe: bytes | bytearray | memoryview) -> list[bytes]:
        """Return the n = k + m fragments of a stripe, data fragments first."""
        return [bytes(f) for f in self.encode_views(stripe)]

    def encode_views(self, stripe: bytes | bytearray | memoryview) -> list[memoryview]:
        """encode() without copies: data fragments are views of the caller's buffer (only a
        padded tail is new memory) and parity fragments views of one new array. Keep the
        stripe unchanged while the fragments are in use; Push hashes them and writes them to
        the wire straight from these views."""
        src = memoryview(stripe).cast("B")
        size = self.fragment_size(len(src))
        flat = np.frombuffer(src, dtype=np.uint8)
        rows: list[np.ndarray] = []
        tail = np.zeros(0, np.uint8)
        for d in range(self.k):
            row = flat[d * size : (d + 1) * size]
            if len(row) < size:
                if not len(tail):                # all padded rows share one zeroed block
                    tail = np.zeros((self.k - d) * size, np.uint8)
                pad = tail[(d - self.k) * size :][:size]
                pad[: len(row)] = row
                row = pad
            rows.append(row)
        frags = [r.data for r in rows]
        if self.m and size:
            parity = np.empty((self.m, size), dtype=np.uint8)
            _xor.run(self._enc, rows, list(parity), self.packet_size)
            frags.extend(p.data for p in parity)
        else:
            zeros = memoryview(bytes(size))
            frags.extend(zeros for _ in range(self.m))
        return frags

    def decode(
        self, fragments: Mapping[int, bytes | bytearray | memoryview], stripe_len: int
    ) -> bytes:
        """Rebuild the stripe from any k fragments (a dict index -> fragment bytes)."""
        size = self.fragment_size(stripe_len)
        views: dict[int, memoryview] = {}
        for i, frag in fragments.items():
            if not isinstance(i, int) or not 0 <= i < self.n:
                raise ValueError(f"fragment index {i!r} outside 0..{self.n - 1}")
            views[i] = memoryview(frag).cast("B")
            if len(views[i]) != size:
                raise ValueError(
                    f"fragment {i} has {len(views[i])} bytes, expected {size} for a "
                    f"{stripe_len}-byte stripe"
                )
        if len(views) < self.k:
            raise NotEnoughFragmentsError(
                f"need {self.k} of {self.n} fragments, got {len(views)}: {sorted(views)}"
            )
        present = [i for i in range(self.k) if i in views]
        spare = sorted(i for i in views if i >= self.k)[: self.k - len(present)]
        chosen = tuple(present + spare)
        missing = [d for d in range(self.k) if d not in views]
        parts: dict[int, memoryview] = {d: views[d] for d in present}
        if missing and size:
            rebuilt = np.empty((len(missing), size), dtype=np.uint8)
            inputs = [np.frombuffer(views[i], dtype=np.uint8) for i in chosen]
            _xor.run(
                _decoder(self.k, self.m, self.matrix, chosen),
                inputs,
                list(rebuilt),
                self.packet_size,
            )
            parts.update((d, r.data) for d, r in zip(missing, rebuilt, strict=True))
        # One copy into the result: join takes the buffers as they are; cut the padding off.
        full, rest = divmod(stripe_len, size) if size else (0, 0)
        pieces = [parts[d] for d in range(full)]
        if rest:
            pieces.append(parts[full][:rest])
        return b"".join(pieces)

"""Systematic Reed-Solomon erasure codec over GF(2^8): k data + m parity fragments.

Why a bitmatrix: reedsolo run one byte column at a time managed ~1 MB/s here. Instead every
generator coefficient is expanded into its 8x8 bitmatrix over GF(2) and the code runs as bulk
numpy XORs of whole packets (Jerasure's technique), which reaches GB/s in one thread.

Generator: see storage/_generator.py (reedsolo's systematic RS code by default, so every symbol
column of a stripe is a reedsolo codeword; or ``matrix="cauchy"``). A symbol is bit-sliced: it
takes one bit from each of 8 packets (layout below), so multiplication is whole-packet XORs.

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

import numpy as np

from mesh.errors import MeshError
from storage import _xor
from storage._generator import MatrixKind as MatrixKind
from storage._generator import decode_schedule as _decoder  # codec_bench and tests use _decoder
from storage._generator import encode_schedule

FORMAT_VERSION = 1
# 128 KiB: a 4 MiB (4,2) stripe is one chunk, each packet an eighth of a fragment, so every
# XOR runs over 128 KiB in one piece; measured ~20% faster than 32 KiB packets (whose 4 MiB
# stripes take 32 KiB ops). P is recorded in each manifest: files written with 32 KiB
# packets still decode with their own P.
DEFAULT_PACKET = 131072


class NotEnoughFragmentsError(MeshError):
    """Fewer than k distinct usable fragments were supplied to decode."""


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
        self._parity, self._enc = encode_schedule(k, m, matrix)

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
                if not len(tail):  # all padded rows share one block, zeroed past the data
                    # (np.empty, then zeros past the data: 16 us per 1 MiB row; np.zeros: 22)
                    tail = np.empty((self.k - d) * size, np.uint8)
                    tail[len(row) :] = 0
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

    def _views(
        self, fragments: Mapping[int, bytes | bytearray | memoryview], stripe_len: int
    ) -> tuple[int, dict[int, memoryview]]:
        """Fragment size and validated byte views; raises on a bad index, length or count."""
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
        return size, views

    def _rebuild(
        self, views: dict[int, memoryview], size: int, targets: Mapping[int, np.ndarray]
    ) -> None:
        """Write data row d into targets[d] (size bytes) for each d, out of k of the views."""
        wanted = tuple(sorted(targets))
        if not wanted or not size:
            return
        present = [i for i in range(self.k) if i in views]
        spare = sorted(i for i in views if i >= self.k)[: self.k - len(present)]
        chosen = tuple(present + spare)
        inputs = [np.frombuffer(views[i], dtype=np.uint8) for i in chosen]
        sched = _decoder(self.k, self.m, self.matrix, chosen, wanted)
        _xor.run(sched, inputs, [targets[d] for d in wanted], self.packet_size)

    def decode(
        self, fragments: Mapping[int, bytes | bytearray | memoryview], stripe_len: int
    ) -> bytes:
        """Rebuild the stripe from any k fragments (a dict index -> fragment bytes).

        Returns new bytes; decode_into() saves a copy of the rebuilt rows when a buffer will do.
        """
        size, views = self._views(fragments, stripe_len)
        full, rest = divmod(stripe_len, size) if size else (0, 0)
        rows = full + bool(rest)  # data rows past these are all padding: never rebuilt
        rebuilt = np.empty((sum(d not in views for d in range(rows)), size), dtype=np.uint8)
        slots = iter(rebuilt)
        targets = {d: next(slots) for d in range(rows) if d not in views}
        self._rebuild(views, size, targets)
        # One copy into the result: join takes the buffers as they are; cut the padding off.
        parts = {**views, **{d: t.data for d, t in targets.items()}}
        pieces = [parts[d] for d in range(full)]
        if rest:
            pieces.append(parts[full][:rest])
        return b"".join(pieces)

    def decode_into(
        self,
        fragments: Mapping[int, bytes | bytearray | memoryview],
        stripe_len: int,
        out: bytearray | memoryview | np.ndarray | None = None,
    ) -> memoryview:
        """decode() into a buffer: a read-write memoryview of the stripe's stripe_len bytes.

        Missing data rows are rebuilt in place and present ones copied once, so each stripe
        byte is written once (decode() also copies rebuilt rows into its bytes). `out`, if
        given, is a writable buffer of at least stripe_len bytes that the result is a view of
        (reuse one across stripes; only its first stripe_len bytes are written); by default a
        new array of k * fragment_size bytes.
        """
        size, views = self._views(fragments, stripe_len)
        if out is None:
            buf = np.empty(self.k * size, dtype=np.uint8)
        else:
            buf = np.frombuffer(out, dtype=np.uint8) if not isinstance(out, np.ndarray) else out
            if buf.ndim != 1 or buf.dtype != np.uint8 or len(buf) < stripe_len:
                raise ValueError(f"out must be a 1-D byte buffer of >= {stripe_len} bytes")
            if not buf.flags.writeable:
                raise ValueError("out must be writable")
        full, rest = divmod(stripe_len, size) if size else (0, 0)
        rows = full + bool(rest)
        # Missing rows are rebuilt in place where they fit (in a caller's buffer, only within
        # stripe_len: bytes past it stay untouched), the rest copied in; a memcpy per present
        # row measured faster than copy ops inside the kernel.
        limit = len(buf) if out is None else stripe_len
        targets = {
            d: buf[d * size : (d + 1) * size]
            for d in range(rows)
            if d not in views and (d + 1) * size <= limit
        }
        cut = [d for d in range(rows) if d not in targets]
        targets.update((d, np.empty(size, dtype=np.uint8)) for d in cut if d not in views)
        # Present rows first: the kernel then reads them again from cache, not from memory
        # (measured 2-8% faster than copying them after it).
        for d in cut:
            if d in views:
                n = min(size, stripe_len - d * size)
                buf[d * size : d * size + n] = np.frombuffer(views[d], dtype=np.uint8)[:n]
        self._rebuild(views, size, targets)
        for d in cut:
            if d not in views:  # a missing row that did not fit: rebuilt in scratch
                n = min(size, stripe_len - d * size)
                buf[d * size : d * size + n] = targets[d][:n]
        return buf[:stripe_len].data

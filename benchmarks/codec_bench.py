"""Erasure-codec throughput: tw-mesh's bitmatrix codec against zfec and pyeclib, same run.

Run: ``.venv/bin/python -m benchmarks.codec_bench [--size-mib 64] [--runs 5]``.
Figures are MB/s (10^6 bytes) of original data, medians of --runs runs. Decode always has
fragments 0..m-1 erased, so the matrix-inverse path runs rather than a concatenation; ours
is ``Codec.decode_into``, the call Get makes (``decode``, returning bytes, adds one copy).
zfec (Tahoe-LAFS's codec) and pyeclib's ``isa_l_rs_cauchy`` (ISA-L in the wheel) are measured
on the same buffer; pyeclib gets 1 MiB segments, its fastest setting here, and (as every codec
in --stripe-mib mode) drops each segment's output before the next, as a streaming Push would.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage import _xor
from storage.codec import DEFAULT_PACKET, Codec, _decoder

RESULTS = Path(__file__).with_name("RESULTS.md")
PYECLIB_SEGMENT = 1 << 20


@dataclass
class Row:
    codec: str
    k: int
    m: int
    encode_mbs: float
    decode_mbs: float


# A contender: name -> (encode, decode) zero-argument callables, already checked for correctness.
Contender = tuple[str, Callable[[], object], Callable[[], object]]


def ours(stripes: list[bytes], k: int, m: int, matrix: str, packet: int) -> Contender:
    codec = Codec(k, m, packet_size=packet, matrix=matrix)  # type: ignore[arg-type]
    kept = [{i: f for i, f in enumerate(codec.encode(s)) if i >= m} for s in stripes]

    def encode() -> None:  # like a streaming Push: each stripe's output is dropped before the next
        for s in stripes:  # the views Push hashes and sends (encode() would add bytes copies)
            codec.encode_views(s)

    def decode() -> None:  # decode_into, as Get calls it: the stripe in a new buffer, no bytes copy
        for f, s in zip(kept, stripes, strict=True):
            codec.decode_into(f, len(s))

    assert [codec.decode(f, len(s)) for f, s in zip(kept, stripes, strict=True)] == stripes
    assert [codec.decode_into(f, len(s)) for f, s in zip(kept, stripes, strict=True)] == stripes
    return f"tw-mesh {matrix}", encode, decode


def kernel(stripes: list[bytes], k: int, m: int, packet: int) -> Contender:
    """Only the XOR schedules, into preallocated numpy buffers: the codec minus its own copies
    and allocations. Each stripe's own fragments, so inputs come from memory as in the codec
    (one stripe over and over would sit in the last-level cache and flatter the kernel)."""
    codec = Codec(k, m, packet_size=packet)
    coded = [[np.frombuffer(f, np.uint8) for f in codec.encode(s)] for s in stripes]
    data = [frags[:k] for frags in coded]  # padded like the codec's rows
    chosen = tuple(range(m, k + m)) if m <= k else tuple(range(k))
    wanted = tuple(d for d in range(k) if d not in chosen)
    picked = [[frags[i] for i in chosen] for frags in coded]
    sizes = {len(frags[0]) for frags in coded}  # a last, shorter stripe gets its own buffers
    parity = {n: list(np.empty((m, n), np.uint8)) for n in sizes}
    rebuilt = {n: list(np.empty((len(wanted), n), np.uint8)) for n in sizes}
    dec = _decoder(k, m, "reedsolo", chosen, wanted)

    def encode() -> None:
        for rows in data:
            _xor.run(codec._enc, rows, parity[len(rows[0])], packet)

    def decode() -> None:
        for ins in picked:
            _xor.run(dec, ins, rebuilt[len(ins[0])], packet)

    return "tw-mesh reedsolo, XOR kernel only", encode, decode


def zfec_contender(stripes: list[bytes], k: int, m: int, packet: int) -> Contender:
    import zfec

    n = k + m
    enc, dec = zfec.Encoder(k, n), zfec.Decoder(k, n)
    nums = tuple(range(m, n))

    def encode_one(data: bytes) -> list[bytes]:
        size = -(-len(data) // k)
        padded = data + bytes(size * k - len(data))
        return list(enc.encode(tuple(padded[i * size : (i + 1) * size] for i in range(k))))

    kept = [tuple(encode_one(s)[m:]) for s in stripes]

    def decode_one(blocks: tuple[bytes, ...], n_bytes: int) -> bytes:
        return b"".join(dec.decode(blocks, nums))[:n_bytes]

    def encode() -> None:
        for s in stripes:
            encode_one(s)

    def decode() -> None:
        for b, s in zip(kept, stripes, strict=True):
            decode_one(b, len(s))

    assert [decode_one(b, len(s)) for b, s in zip(kept, stripes, strict=True)] == stripes
    return "zfec", encode, decode


def pyeclib_contender(stripes: list[bytes], k: int, m: int, packet: int) -> Contender:
    from pyeclib.ec_iface import ECDriver

    drv = ECDriver(k=k, m=m, ec_type="isa_l_rs_cauchy")
    data = b"".join(stripes)
    segs = range(0, len(data), PYECLIB_SEGMENT)

    kept = [drv.encode(data[s : s + PYECLIB_SEGMENT])[m:] for s in segs]

    def encode() -> None:  # each segment's output dropped at once: pyeclib's best case
        for s in segs:
            drv.encode(data[s : s + PYECLIB_SEGMENT])

    def decode() -> None:
        for f in kept:
            drv.decode(f)

    assert b"".join(drv.decode(f) for f in kept) == data
    return "pyeclib isa_l_rs_cauchy", encode, decode


def _secs(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(size: int, stripe: int, runs: int, codes: list[tuple[int, int]], packet: int) -> list[Row]:
    """Runs are interleaved across contenders so load from other processes hits all alike."""
    data = os.urandom(size)
    stripes = [data[i : i + stripe] for i in range(0, size, stripe)] if stripe else [data]
    rows: list[Row] = []
    for k, m in codes:
        contenders = [
            ours(stripes, k, m, "reedsolo", packet),
            ours(stripes, k, m, "cauchy", packet),
        ]
        contenders.append(kernel(stripes, k, m, packet))
        for make in (zfec_contender, pyeclib_contender):
            try:
                contenders.append(make(stripes, k, m, packet))
            except ImportError as e:  # the bench extra is optional
                print(f"skipping {make.__name__}: {e}", file=sys.stderr)
        times: dict[str, tuple[list[float], list[float]]] = {c[0]: ([], []) for c in contenders}
        for _ in range(runs):
            for name, enc, dec in contenders:
                times[name][0].append(_secs(enc))
                times[name][1].append(_secs(dec))
        for name, (te, td) in times.items():
            mbs = (size / statistics.median(te) / 1e6, size / statistics.median(td) / 1e6)
            rows.append(Row(name, k, m, *mbs))
            print(rows[-1], flush=True)
    return rows


def tune_malloc() -> bool:
    """Keep freed big blocks in glibc's heap: fresh bytes objects then skip page faults."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 512 << 20) and libc.mallopt(m_trim_threshold, 1 << 30)
    return bool(ok)


def table(rows: list[Row], size: int, stripe: int, runs: int, packet: int, tuned: bool) -> str:
    base = {(r.k, r.m): r for r in rows if r.codec == "zfec"}
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### Codec throughput, {now}",
        f"`{platform.machine()}`, nproc {os.cpu_count()}, Python {platform.python_version()}, "
        f"{size / 2**20:g} MiB buffer"
        + (f" in {stripe / 2**20:g} MiB stripes" if stripe else " in one call")
        + (", glibc malloc tuned (mallopt)" if tuned else ", default malloc")
        + f", median of {runs} interleaved runs, packet {packet} B, "
        "MB/s of original data; decode with fragments 0..m-1 erased; ratio = / zfec.",
        "",
        "| codec | (k,m) | encode MB/s | decode MB/s | enc × zfec | dec × zfec |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        z = base.get((r.k, r.m))
        ratio = (
            f"{r.encode_mbs / z.encode_mbs:.1f}× | {r.decode_mbs / z.decode_mbs:.1f}×"
            if z
            else "– | –"
        )
        lines.append(
            f"| {r.codec} | ({r.k},{r.m}) | {r.encode_mbs:.0f} | {r.decode_mbs:.0f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.codec_bench", description=__doc__.split("\n")[0]
    )
    p.add_argument("--size-mib", type=float, default=64, help="buffer size in MiB (default 64)")
    p.add_argument("--runs", type=int, default=5, help="runs per figure; the median is reported")
    p.add_argument(
        "--codes", default="4,2 10,4", help="space-separated k,m pairs (default '4,2 10,4')"
    )
    p.add_argument(
        "--packet-size", type=int, default=DEFAULT_PACKET, help="codec packet size in bytes"
    )
    p.add_argument(
        "--no-append", action="store_true", help=f"do not append the table to {RESULTS.name}"
    )
    p.add_argument(
        "--stripe-mib",
        type=float,
        default=0,
        help="encode the buffer as stripes of this many MiB, as streaming Push does (default: "
        "the whole buffer in one call)",
    )
    p.add_argument(
        "--tune-malloc",
        action="store_true",
        help="set glibc mallopt so freed large blocks are reused (applies to every contender)",
    )
    args = p.parse_args(argv)
    codes = [(int(a), int(b)) for a, b in (c.split(",") for c in args.codes.split())]
    size, stripe = int(args.size_mib * 2**20), int(args.stripe_mib * 2**20)
    tuned = tune_malloc() if args.tune_malloc else False
    rows = run(size, stripe, args.runs, codes, args.packet_size)
    text = table(rows, size, stripe, args.runs, args.packet_size, tuned)
    print(text)
    if not args.no_append:
        if not RESULTS.exists():
            RESULTS.write_text("# Benchmark results\n\nAppended by the scripts in benchmarks/.\n")
        with RESULTS.open("a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

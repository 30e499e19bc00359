"""Codec: round trips, every erasure pattern, reedsolo compatibility, and a pinned format."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
from collections.abc import Iterator

import numpy as np
import pytest
import reedsolo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import _gf, _xor
from storage.codec import Codec, NotEnoughFragmentsError


@pytest.fixture(autouse=True, params=["numpy", "python-int"])
def xor_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run every test through both XOR engines: numpy tiles and the small-stripe int path."""
    saved = _xor.SMALL_BYTES
    _xor.SMALL_BYTES = 0 if request.param == "numpy" else 1 << 40
    yield str(request.param)
    _xor.SMALL_BYTES = saved


def symbols(frag: bytes, packet: int) -> np.ndarray:
    """GF(2^8) symbols of a fragment in layout order (see the storage.codec docstring)."""
    arr = np.frombuffer(frag, dtype=np.uint8)
    out = []
    chunk, pos = 8 * packet, 0
    while pos < len(arr):
        q = packet if len(arr) - pos >= chunk else (len(arr) - pos) // 8
        c = arr[pos : pos + 8 * q].reshape(8, q)  # packet j, offset o
        bits = np.unpackbits(c[..., None], axis=-1, bitorder="little")  # j, o, b
        sym = np.zeros((q, 8), dtype=np.uint8)
        for j in range(8):
            sym |= bits[j] << j
        out.append(sym.ravel())
        pos += 8 * q
    return np.concatenate(out) if out else np.zeros(0, np.uint8)


@pytest.mark.parametrize(
    "args",
    [(0, 2), (4, -1), (200, 56), (4, 2, 12), (4, 2, 0), (4.0, 2), (True, 2)],
)
def test_bad_arguments_raise_value_error(args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        Codec(*args)  # type: ignore[arg-type]


def test_bad_matrix_kind() -> None:
    with pytest.raises(ValueError, match="matrix"):
        Codec(4, 2, matrix="vandermonde")  # type: ignore[arg-type]


def test_fragment_size_layout() -> None:
    c = Codec(4, 2, packet_size=4096)
    assert c.fragment_size(0) == 0
    assert c.fragment_size(1) == 64
    assert c.fragment_size(4 * 32768) == 32768
    assert c.fragment_size(4 * 32768 + 1) == 32768 + 64
    assert Codec(4, 2).fragment_size(64 << 20) == 16 << 20


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    k=st.integers(1, 12),
    m=st.integers(0, 6),
    size=st.integers(0, 6000),
    packet=st.sampled_from([8, 64, 512]),
    kind=st.sampled_from(["reedsolo", "cauchy"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_random_erasures(
    k: int, m: int, size: int, packet: int, kind: str, seed: int
) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(size)
    c = Codec(k, m, packet_size=packet, matrix=kind)  # type: ignore[arg-type]
    frags = c.encode(data)
    assert len(frags) == k + m
    assert all(len(f) == c.fragment_size(size) for f in frags)
    keep = rng.sample(range(k + m), rng.randint(k, k + m))
    assert c.decode({i: frags[i] for i in keep}, size) == data


@pytest.mark.parametrize("kind", ["reedsolo", "cauchy"])
@pytest.mark.parametrize("k,m", [(1, 3), (2, 2), (3, 3), (4, 2), (5, 3), (6, 4)])
def test_every_erasure_pattern_decodes(kind: str, k: int, m: int) -> None:
    data = os.urandom(3 * k * 64 + 5)
    c = Codec(k, m, packet_size=64, matrix=kind)  # type: ignore[arg-type]
    frags = c.encode(data)
    for keep in itertools.combinations(range(k + m), k):
        assert c.decode({i: frags[i] for i in keep}, len(data)) == data, keep


@pytest.mark.parametrize("k,m", [(8, 4), (10, 4), (10, 6)])
def test_generator_is_mds(k: int, m: int) -> None:
    """Any k rows of [I; P] are invertible: exhaustive, the MDS property of RS codes."""
    rows = [[int(i == j) for j in range(k)] for i in range(k)]
    rows += [list(r) for r in _gf.reedsolo_parity(k, m)]
    for keep in itertools.combinations(range(k + m), k):
        _gf.invert([rows[i] for i in keep])  # raises on a singular submatrix


def test_large_code_samples_are_mds() -> None:
    k, m = 40, 20
    rows = [[int(i == j) for j in range(k)] for i in range(k)]
    rows += [list(r) for r in _gf.reedsolo_parity(k, m)]
    rng = random.Random(7)
    for _ in range(20):
        _gf.invert([rows[i] for i in rng.sample(range(k + m), k)])


def test_max_n_round_trip() -> None:
    c = Codec(200, 55, packet_size=8)
    data = os.urandom(200 * 64 * 2)
    frags = c.encode(data)
    keep = list(range(55, 255))
    assert c.decode({i: frags[i] for i in keep}, len(data)) == data


@pytest.mark.parametrize("k,m,packet", [(4, 2, 8), (10, 4, 16), (3, 5, 64)])
def test_symbol_columns_are_reedsolo_codewords(k: int, m: int, packet: int) -> None:
    data = os.urandom(k * 8 * packet * 3 + 200)
    c = Codec(k, m, packet_size=packet)
    frags = c.encode(data)
    cols = np.stack([symbols(f, packet) for f in frags], axis=1)  # one row per codeword
    rs = reedsolo.RSCodec(nsym=m)
    rng = random.Random(1)
    for row in rng.sample(range(len(cols)), 40):
        word = bytes(cols[row])
        assert bytes(rs.encode(word[:k])) == word
        erase = rng.sample(range(k + m), m)
        damaged = bytearray(word)
        for e in erase:
            damaged[e] = rng.randrange(256)
        msg = rs.decode(damaged, erase_pos=erase, only_erasures=True)[0]
        assert bytes(msg) == word[:k]
    # Symbols of the data fragments are the stripe's bits, re-sliced: round-trip them too.
    assert cols[:, :k].size == k * c.fragment_size(len(data))


def test_reedsolo_corrects_errors_in_a_column() -> None:
    k, m = 4, 4
    c = Codec(k, m, packet_size=8)
    frags = c.encode(os.urandom(4 * 64 * 2))
    word = bytes(np.stack([symbols(f, 8) for f in frags], axis=1)[5])
    bad = bytearray(word)
    bad[1] ^= 0x5A
    bad[6] ^= 0x01
    assert bytes(reedsolo.RSCodec(nsym=m).decode(bad)[0]) == word[:k]


def test_too_few_fragments() -> None:
    c = Codec(4, 2, packet_size=64)
    frags = c.encode(b"x" * 1000)
    with pytest.raises(NotEnoughFragmentsError, match="need 4 of 6"):
        c.decode({0: frags[0], 4: frags[4], 5: frags[5]}, 1000)


def test_wrong_fragment_length_and_index() -> None:
    c = Codec(4, 2, packet_size=64)
    frags = c.encode(b"x" * 1000)
    good = {i: frags[i] for i in range(4)}
    with pytest.raises(ValueError, match="bytes, expected"):
        c.decode({**good, 1: frags[1][:-1]}, 1000)
    with pytest.raises(ValueError, match="outside"):
        c.decode({**good, 6: frags[0]}, 1000)


def test_memoryview_input_and_fragments() -> None:
    data = bytearray(os.urandom(5000))
    c = Codec(3, 2, packet_size=64)
    frags = c.encode(memoryview(data))
    assert frags == c.encode(bytes(data))
    assert c.decode({i: memoryview(frags[i]) for i in (1, 3, 4)}, len(data)) == data


def test_empty_stripe() -> None:
    c = Codec(4, 2)
    frags = c.encode(b"")
    assert frags == [b""] * 6
    assert c.decode({2: b"", 3: b"", 4: b"", 5: b""}, 0) == b""


def test_format_is_pinned() -> None:
    """The layout is an on-disk format: these digests change only with a format version."""
    data = bytes((i * i + 7 * i) % 251 for i in range(2000))
    expected = {
        "reedsolo": "c7b124e5203bd30ee0b44c75709c1499e58469d3d8e8c425a75e28ea9f25d302",
        "cauchy": "35de45094db94aef52156d5385957ba3dba0f5a77ae85f90c1fee3882c8a1145",
    }
    for kind, digest in expected.items():
        frags = Codec(4, 2, packet_size=64, matrix=kind).encode(data)  # type: ignore[arg-type]
        assert hashlib.sha256(b"".join(frags)).hexdigest() == digest


def test_decode_cache_reused_and_bounded() -> None:
    c = Codec(6, 3, packet_size=8)
    data = os.urandom(6 * 64)
    frags = c.encode(data)
    for keep in itertools.combinations(range(9), 6):
        assert c.decode({i: frags[i] for i in keep}, len(data)) == data
    from storage.codec import _decoder

    assert _decoder.cache_info().currsize <= 256


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.integers(1, 24),
    cols=st.integers(1, 40),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_xor_schedule_equals_matrix_product(
    rows: int, cols: int, density: float, seed: int
) -> None:
    """Pair elimination must not change the result: out[r] = XOR of in[c] where bits[r, c]."""
    rng = np.random.default_rng(seed)
    bits = (rng.random((rows, cols)) < density).astype(np.uint8)
    values = [int(v) for v in rng.integers(0, 2**63, cols)]
    for eliminate in (True, False):
        sched = _xor.compile_schedule(bits, eliminate_pairs=eliminate)
        buf = values + [0] * (sched.n_tmp + sched.n_out)
        for dst, a, b in sched.ops:
            buf[dst] = (buf[a] if a >= 0 else 0) ^ (buf[b] if b >= 0 else 0)
        for r in range(rows):
            want = 0
            for c in np.flatnonzero(bits[r]):
                want ^= values[c]
            assert buf[cols + sched.n_tmp + r] == want


def test_pair_elimination_saves_xors() -> None:
    bits = _gf.expand(_gf.reedsolo_parity(10, 4), 10)
    plain = _xor.compile_schedule(bits, eliminate_pairs=False).xor_count
    assert _xor.compile_schedule(bits).xor_count < plain * 0.6


def test_mid_size_code_round_trip() -> None:
    c = Codec(20, 10, packet_size=64)
    data = os.urandom(20 * 512 * 3 + 77)
    frags = c.encode(data)
    keep = random.Random(3).sample(range(30), 20)
    assert c.decode({i: frags[i] for i in keep}, len(data)) == data


def test_params_round_trip() -> None:
    c = Codec(10, 4, packet_size=4096, matrix="cauchy")
    d = Codec.from_params(c.params())
    assert (d.k, d.m, d.packet_size, d.matrix) == (10, 4, 4096, "cauchy")
    with pytest.raises(ValueError, match="format"):
        Codec.from_params({**c.params(), "format": 99})
    with pytest.raises(ValueError):
        Codec.from_params({**c.params(), "k": "4"})


@pytest.mark.parametrize("packet", [32768, 65536, 131072, 262144])
def test_large_packets_with_tiled_tail(packet: int) -> None:
    """Large packets: whole chunks grouped or split into tiles, and so is a long tail chunk."""
    c = Codec(4, 2, packet_size=packet)
    n = 4 * (8 * packet * 2 + 6 * packet) + 13
    data = os.urandom(n)
    frags = c.encode(data)
    assert len(frags[0]) == 8 * packet * 2 + 6 * packet + 64
    assert c.decode({0: frags[0], 2: frags[2], 4: frags[4], 5: frags[5]}, n) == data


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    k=st.integers(1, 10),
    m=st.integers(0, 5),
    size=st.integers(0, 5000),
    packet=st.sampled_from([8, 64, 512]),
    kind=st.sampled_from(["reedsolo", "cauchy"]),
    out=st.sampled_from(["none", "exact", "larger", "ndarray"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_decode_into_round_trip(
    k: int, m: int, size: int, packet: int, kind: str, out: str, seed: int
) -> None:
    """decode_into equals decode for any erasures and any out buffer, padding never leaks."""
    rng = random.Random(seed)
    data = rng.randbytes(size)
    c = Codec(k, m, packet_size=packet, matrix=kind)  # type: ignore[arg-type]
    frags = c.encode(data)
    keep = rng.sample(range(k + m), rng.randint(k, k + m))
    given_frags = {i: frags[i] for i in keep}
    buf: bytearray | np.ndarray | None = None
    if out == "exact":
        buf = bytearray(b"\xee" * size)
    elif out == "larger":
        buf = bytearray(b"\xee" * (size + 100))
    elif out == "ndarray":
        buf = np.full(k * c.fragment_size(size) + 3, 0xEE, np.uint8)
    view = c.decode_into(given_frags, size, buf)
    assert view.nbytes == size and not view.readonly
    assert bytes(view) == data == c.decode(given_frags, size)
    if isinstance(buf, bytearray):
        assert bytes(buf[:size]) == data  # the result is a view of the caller's buffer
        assert buf[size:] == b"\xee" * (len(buf) - size)


def test_decode_into_rejects_bad_out() -> None:
    c = Codec(4, 2, packet_size=64)
    frags = dict(enumerate(c.encode(b"y" * 1000)))
    with pytest.raises(ValueError, match="out must be"):
        c.decode_into(frags, 1000, bytearray(999))
    with pytest.raises(ValueError, match="writable"):
        c.decode_into(frags, 1000, bytes(1000))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out must be"):
        c.decode_into(frags, 1000, np.zeros((2, 1000), np.uint8))


def test_decode_into_every_erasure_pattern_with_reused_buffer() -> None:
    """One out buffer across stripes and patterns, as a reader may reuse it."""
    k, m = 5, 3
    c = Codec(k, m, packet_size=64)
    buf = bytearray(4 * k * 512)
    for n in (k * 512 * 3 + 5, k * 512, 700, 1):  # cut last row, whole rows, short stripes
        data = os.urandom(n)
        frags = c.encode(data)
        for keep in itertools.combinations(range(k + m), k):
            assert c.decode_into({i: frags[i] for i in keep}, n, buf) == data, (n, keep)


def test_decoder_schedules_keyed_by_erasure_pattern() -> None:
    """The cache holds one schedule per (k, m, matrix, chosen, wanted): patterns never share."""
    from storage.codec import _decoder

    k, m = 4, 2
    data = os.urandom(4 * 8 * 8 * 4)
    frags = Codec(k, m, packet_size=8).encode(data)
    size = len(frags[0])
    inputs = [np.frombuffer(f, np.uint8) for f in frags]
    seen: dict[tuple[tuple[int, ...], tuple[int, ...]], _xor.Schedule] = {}
    for chosen in itertools.permutations(range(k + m), k):
        if list(chosen[: sum(i < k for i in chosen)]) != sorted(i for i in chosen if i < k):
            continue  # keep the test small: present data rows first, as Codec orders them
        wanted = tuple(d for d in range(k) if d not in chosen) or (0,)
        sched = _decoder(k, m, "reedsolo", chosen, wanted)
        assert _decoder(k, m, "reedsolo", chosen, wanted) is sched  # cached
        out = np.empty((len(wanted), size), np.uint8)
        _xor.run(sched, [inputs[i] for i in chosen], list(out), 8)
        for row, d in zip(out, wanted, strict=True):
            assert row.tobytes() == frags[d], (chosen, wanted)
        seen[(chosen, wanted)] = sched
    assert _decoder(k, m, "cauchy", (2, 3, 4, 5), (0, 1)) is not seen[((2, 3, 4, 5), (0, 1))]
    assert _decoder(4, 3, "reedsolo", (2, 3, 4, 5), (0, 1)) is not seen[((2, 3, 4, 5), (0, 1))]
    with pytest.raises(ValueError, match="bad decode pattern"):
        _decoder(k, m, "reedsolo", (1, 2, 3), (0,))
    with pytest.raises(ValueError, match="bad decode pattern"):
        _decoder(k, m, "reedsolo", (1, 2, 3, 4), (4,))


def test_decode_skips_padding_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stripe shorter than one fragment needs data row 0 only: nothing else is rebuilt."""
    from storage import codec as codec_mod

    calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    real = codec_mod._decoder

    def spy(
        k: int, m: int, kind: codec_mod.MatrixKind, chosen: tuple[int, ...], wanted: tuple[int, ...]
    ) -> _xor.Schedule:
        calls.append((chosen, wanted))
        return real(k, m, kind, chosen, wanted)

    monkeypatch.setattr(codec_mod, "_decoder", spy)
    c = Codec(4, 2, packet_size=8)
    data = os.urandom(40)
    frags = c.encode(data)
    assert c.decode_into({i: frags[i] for i in (1, 3, 4, 5)}, 40) == data
    assert c.decode({i: frags[i] for i in (1, 3, 4, 5)}, 40) == data
    assert calls == [((1, 3, 4, 5), (0,))] * 2
    calls.clear()
    assert c.decode_into({i: frags[i] for i in (0, 2, 4, 5)}, 40) == data  # row 0 present
    assert calls == []


def test_short_tail_chunk_takes_the_int_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sealed stripe (4 MiB + 48 bytes) leaves a 64-byte tail chunk per fragment: whole
    chunks go through numpy and the tail through Python ints, with the same result."""
    data = os.urandom((4 << 20) + 48)
    c = Codec(4, 2)
    monkeypatch.setattr(_xor, "SMALL_BYTES", 32 * 1024)
    mixed = c.encode(data)
    assert len(mixed[0]) == (1 << 20) + 64
    monkeypatch.setattr(_xor, "SMALL_BYTES", 0)
    assert c.encode(data) == mixed
    monkeypatch.setattr(_xor, "SMALL_BYTES", 32 * 1024)
    assert c.decode_into({i: mixed[i] for i in (1, 2, 4, 5)}, len(data)) == data


def test_tile_size_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide codes get smaller tiles (their temps share TEMP_BYTES): any tile, same fragments."""
    data = os.urandom(10 * 70_000 + 5)
    c = Codec(10, 4, packet_size=4096)
    want = c.encode(data)
    monkeypatch.setattr(_xor, "TEMP_BYTES", 1)
    monkeypatch.setattr(_xor, "MIN_TILE_BYTES", 1000)  # rounded down to 8-byte words
    assert c.encode(data) == want
    keep = {i: want[i] for i in (0, 3, 5, 6, 8, 9, 10, 11, 12, 13)}
    assert c.decode(keep, len(data)) == data

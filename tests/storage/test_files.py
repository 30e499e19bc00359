"""storage.files without gRPC: in-process nodes (real stores on disk) behind a fake network."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import nacl.signing
import pytest

from mesh.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError, UnavailableError
from storage.cid import cid_for
from storage.documents import DocumentStore, is_file_id
from storage.files import FileStore, PushOptions, restripe
from storage.fragstore import FragmentStore
from storage.manifest import ManifestStore
from storage.peer import StorageClient, StorageHandlers


class FakeNetwork:
    def __init__(self, root: Path, n: int) -> None:
        self.handlers: dict[bytes, StorageHandlers] = {}
        self.dirs: dict[bytes, Path] = {}
        for i in range(n):
            node_id = hashlib.blake2b(f"node{i}".encode(), digest_size=20).digest()
            d = root / f"node{i}"
            self.dirs[node_id] = d
            self.handlers[node_id] = StorageHandlers(FragmentStore(d), ManifestStore(d),
                                                     DocumentStore(d), node_id)
        self.self_id = next(iter(self.handlers))
        self.down: set[bytes] = set()
        self.suspected: list[bytes] = []
        files = FileStore(self)                      # as StorageService wires each node's
        for h in self.handlers.values():
            h.deletes.replicas = files.fetch_manifests
            h.deletes.records = files.documents.record

    async def closest(self, key: bytes, n: int) -> list[bytes]:
        live = [x for x in self.handlers if x not in self.down]
        live.sort(key=lambda x: int.from_bytes(x, "big") ^ int.from_bytes(key, "big"))
        return live[:n]

    async def client(self, node_id: bytes) -> StorageClient:
        if node_id in self.down or node_id not in self.handlers:
            raise UnavailableError(f"peer {node_id.hex()[:8]} down")
        return StorageClient.local(node_id, self.handlers[node_id])

    def address(self, node_id: bytes) -> str:
        return f"fake:{node_id.hex()[:8]}"

    def suspect(self, node_id: bytes) -> None:
        self.suspected.append(node_id)

    def suspects(self) -> list[bytes]:
        return list(self.suspected)

    def acquit(self, node_id: bytes) -> None:
        while node_id in self.suspected:
            self.suspected.remove(node_id)


@pytest.fixture
def net(tmp_path: Path) -> FakeNetwork:
    return FakeNetwork(tmp_path, 6)


def _user() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey.generate()


async def _chunks(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


SMALL = PushOptions(stripe_size=65536)


@pytest.mark.parametrize("size", [0, 1, 1000, 65536, 65537, 300_001])
async def test_round_trip_stream_and_unary(net: FakeNetwork, size: int) -> None:
    files = FileStore(net)
    alice = _user()
    data = os.urandom(size)
    for result in (await files.push(_chunks(data), alice, SMALL),
                   await files.push_bytes(data, alice, SMALL)):
        assert result.cid == cid_for(data)
        assert is_file_id(result.file_id)
        assert not result.under_replicated
        reader = await files.open(result.cid, alice)
        assert await reader.read_all() == data
        by_id = await files.open(result.file_id, alice)
        assert by_id.manifest.file_id == result.file_id
        assert await by_id.read_all() == data


async def test_restripe_marks_last() -> None:
    out = [(i, len(b), last) async for i, b, last in restripe(_chunks(b"x" * 25, 7), 10)]
    assert out == [(0, 10, False), (1, 10, False), (2, 5, True)]
    out = [(i, len(b), last) async for i, b, last in restripe(_chunks(b"x" * 20, 3), 10)]
    assert out == [(0, 10, False), (1, 10, True)]
    data = os.urandom(1000)
    for chunk in (1, 7, 10, 99, 100, 101, 1000, 5000):
        for size in (10, 100, 333):
            got = [(i, b, last) async for i, b, last in restripe(_chunks(data, chunk), size)]
            assert b"".join(b for _, b, _ in got) == data
            assert [i for i, _, _ in got] == list(range(len(got)))
            assert [last for _, _, last in got] == [False] * (len(got) - 1) + [True]
            assert all(len(b) == size for _, b, _ in got[:-1])


async def test_any_m_down_still_reads_m_plus_one_names_missing(net: FakeNetwork) -> None:
    files = FileStore(net)
    alice = _user()
    data = os.urandom(200_000)
    r = await files.push_bytes(data, alice, SMALL)
    manifest = (await files.resolve(r.cid, alice))[0]
    holders = list(manifest.body.holders)
    assert len(holders) == 6
    # manifests live on the 3 closest to the CID; keep those up, kill 2 fragment holders
    keep = set(await net.closest(__import__("storage.manifest").manifest.manifest_key(r.cid), 3))
    victims = [h for h in holders if h not in keep][:2] or holders[:2]
    net.down.update(victims[:2])
    assert await (await files.open(r.cid, alice)).read_all() == data
    third = next(h for h in holders if h not in net.down)
    net.down.add(third)
    with pytest.raises((UnavailableError, NotFoundError)) as info:
        await (await files.open(r.cid, alice)).read_all()
    assert "missing" in str(info.value) or "no manifest" in str(info.value)


async def test_corrupt_fragment_detected_and_read_still_correct(net: FakeNetwork) -> None:
    files = FileStore(net)
    alice = _user()
    data = os.urandom(100_000)
    r = await files.push_bytes(data, alice, SMALL)
    manifest = (await files.resolve(r.cid, alice))[0]
    frag0 = manifest.body.stripes[0].fragments[0]
    holder = manifest.body.holders[frag0.holder]
    path = net.dirs[holder] / "fragments" / frag0.hash.hex()[:2] / frag0.hash.hex()
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0xFF
    path.write_bytes(bytes(raw))
    st = await files.stat(r.cid, alice)
    assert st.health == "healthy"          # a shallow stat trusts the index
    st = await files.stat(r.cid, alice, deep=True)
    assert st.health == "degraded"
    assert net.handlers[holder].fragments.corrupt_count == 1
    assert await (await files.open(r.cid, alice)).read_all() == data


async def test_stat_finds_fragments_repair_moved_off_their_recorded_holders(
        net: FakeNetwork) -> None:
    """Repair cannot re-sign the manifest: two holders that each got the other's fragment back
    (seen on real nodes after both lost theirs) leave the file healthy, and Stat says so."""
    files = FileStore(net)
    alice = _user()
    r = await files.push_bytes(os.urandom(50_000), alice, SMALL)        # one stripe
    manifest = (await files.resolve(r.cid, alice))[0]
    a, b = (manifest.body.stripes[0].fragments[i] for i in (0, 1))
    ha, hb = (manifest.body.holders[f.holder] for f in (a, b))
    for frag, old, new in ((a, ha, hb), (b, hb, ha)):
        store_old, store_new = net.handlers[old].fragments, net.handlers[new].fragments
        data = store_old.get(frag.hash.hex())
        assert data is not None
        store_new.put(data, manifest.file_id, 0)
    for frag, old in ((a, ha), (b, hb)):
        net.handlers[old].fragments.delete(frag.hash.hex())
        assert not net.handlers[old].fragments.has(frag.hash.hex())
    st = await files.stat(r.cid, alice)
    assert st.health == "healthy"
    assert [f.holder for f in st.fragments[:2]] == [hb, ha]     # where they are now
    net.down.add(hb)                                             # and one holder lost again
    st = await files.stat(r.cid, alice)
    assert st.health == "degraded"


async def test_stat_of_a_file_on_fewer_peers_than_fragments_says_under_replicated(
        tmp_path: Path) -> None:
    small = FakeNetwork(tmp_path, 3)                 # (4,2) on 3 peers: two fragments each
    files = FileStore(small)
    alice = _user()
    r = await files.push_bytes(os.urandom(50_000), alice, SMALL)
    assert r.under_replicated
    st = await files.stat(r.cid, alice)
    assert st.health == "under-replicated"
    assert all(f.healthy for f in st.fragments)
    small.down.add(next(iter(small.handlers)))      # one peer lost: two fragments gone
    assert (await files.stat(r.cid, alice)).health == "degraded"


async def test_stat_looks_further_before_calling_a_stripe_crowded(tmp_path: Path) -> None:
    """After churn: repair put fragment b on a's holder P (b's recorded holder is gone), and
    rebalance then moved a on to a free peer Q, keeping P's copy (the recorded one). P alone
    seems to hold both; the copy on Q spreads them, and Stat must find it."""
    net = FakeNetwork(tmp_path, 7)
    files = FileStore(net)
    alice = _user()
    r = await files.push_bytes(os.urandom(50_000), alice, SMALL)        # one stripe
    manifest = (await files.resolve(r.cid, alice))[0]
    a, b = (manifest.body.stripes[0].fragments[i] for i in (0, 1))
    p_, gone = (manifest.body.holders[f.holder] for f in (a, b))
    q = next(x for x in net.handlers if x not in manifest.body.holders)
    b_data = net.handlers[gone].fragments.get(b.hash.hex())
    a_data = net.handlers[p_].fragments.get(a.hash.hex())
    assert b_data is not None and a_data is not None
    net.handlers[p_].fragments.put(b_data, manifest.file_id, 1)
    net.down.add(gone)
    assert (await files.stat(r.cid, alice)).health == "under-replicated"   # P has a and b
    net.handlers[q].fragments.put(a_data, manifest.file_id, 0)
    assert (await files.stat(r.cid, alice)).health == "healthy"


async def test_private_public_readers(net: FakeNetwork) -> None:
    files = FileStore(net)
    alice, bob, carol = _user(), _user(), _user()
    data = b"secret " * 100
    r = await files.push_bytes(data, alice, PushOptions(filename="../../etc/passwd"))
    with pytest.raises(PermissionDeniedError):
        await files.open(r.cid, bob)
    with pytest.raises(PermissionDeniedError):
        await files.open(r.file_id, bob)
    reader = await files.open(r.cid, alice)
    assert reader.filename == "../../etc/passwd"
    pub = await files.push_bytes(b"hello world", alice, PushOptions(public=True))
    assert await (await files.open(pub.cid, bob)).read_all() == b"hello world"
    shared = await files.push_bytes(b"for carol", alice,
                                    PushOptions(readers=[bytes(carol.verify_key)]))
    assert await (await files.open(shared.cid, carol)).read_all() == b"for carol"
    with pytest.raises(PermissionDeniedError):
        await files.open(shared.cid, bob)
    # grant and revoke
    assert await files.grant(r.file_id, alice, bytes(bob.verify_key)) >= 1
    assert await (await files.open(r.file_id, bob)).read_all() == data
    with pytest.raises(PermissionDeniedError):
        await files.grant(r.file_id, bob, bytes(carol.verify_key))
    await files.grant(r.cid, alice, bytes(bob.verify_key), revoke=True)
    with pytest.raises(PermissionDeniedError):
        await files.open(r.file_id, bob)
    # grants build on the newest manifest, not on one this node kept from the Push
    dave = _user()
    assert await files.grant(r.file_id, alice, bytes(carol.verify_key)) >= 1
    assert await files.grant(r.file_id, alice, bytes(dave.verify_key)) >= 1
    assert await (await files.open(r.file_id, carol)).read_all() == data
    assert await (await files.open(r.file_id, dave)).read_all() == data
    # bob storing the same content gets his own readable manifest for the same CID
    mine = await files.push_bytes(data, bob, PushOptions())
    assert mine.cid == r.cid and mine.file_id != r.file_id
    assert await (await files.open(r.cid, bob)).read_all() == data


async def test_no_plaintext_on_any_node(net: FakeNetwork) -> None:
    files = FileStore(net)
    marker = b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
    await files.push_bytes(marker * 50, _user(), PushOptions(filename="marker-name.txt"))
    for d in net.dirs.values():
        for p in d.rglob("*"):
            if p.is_file():
                blob = p.read_bytes()
                assert marker not in blob and b"marker-name" not in blob, p


async def test_bad_refs_and_options(net: FakeNetwork) -> None:
    files = FileStore(net)
    alice = _user()
    for bad in ("", "nope", "bafy", "../../etc/passwd", "f" + "0" * 31):
        with pytest.raises(InvalidArgumentError):
            await files.open(bad, alice)
    with pytest.raises(NotFoundError):
        await files.open(cid_for(b"never stored"), alice)
    with pytest.raises(NotFoundError):
        await files.open("f" + "0" * 32, alice)
    for opts in (PushOptions(k=0), PushOptions(k=200, m=100), PushOptions(stripe_size=10)):
        with pytest.raises(InvalidArgumentError):
            await files.push_bytes(b"x", alice, opts)


async def test_fewer_peers_than_fragments(tmp_path: Path) -> None:
    net = FakeNetwork(tmp_path, 3)
    files = FileStore(net)
    alice = _user()
    data = os.urandom(50_000)
    r = await files.push_bytes(data, alice, PushOptions(k=4, m=2))
    assert r.under_replicated and r.warnings
    assert await (await files.open(r.cid, alice)).read_all() == data


async def test_a_repeated_push_warning_is_logged_once_a_minute_but_always_returned(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = FakeNetwork(tmp_path, 3)
    files = FileStore(net)
    alice = _user()
    caplog.set_level(logging.DEBUG, logger="storage.push")
    results = [await files.push_bytes(os.urandom(5_000), alice, PushOptions(k=4, m=2))
               for _ in range(3)]
    assert all(r.under_replicated and r.warnings for r in results)
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "storage.push"]
    assert [lvl for lvl, _ in logged] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert all("share a holder" in msg for _, msg in logged)


async def test_holder_down_at_push_uses_spare(net: FakeNetwork) -> None:
    files = FileStore(net)
    alice = _user()
    data = os.urandom(70_000)

    victim = list(net.handlers)[3]
    orig = net.client

    async def client(node_id: bytes) -> StorageClient:
        if node_id == victim:
            raise UnavailableError("refused")
        return await orig(node_id)

    net.client = client  # type: ignore[method-assign]
    r = await files.push_bytes(data, alice, PushOptions(k=3, m=1, stripe_size=65536))
    assert r.fragments_placed == 8
    manifest = (await files.resolve(r.cid, alice))[0]
    assert victim not in manifest.body.holders
    assert await (await files.open(r.cid, alice)).read_all() == data
    # the small (one round trip) fragment path, inlining off: the corrected manifest wins
    files = FileStore(net, inline_max=0)
    for size in range(100, 1700, 200):
        small = os.urandom(size)
        r = await files.push_bytes(small, alice, PushOptions(k=2, m=4))
        assert r.fragments_placed == 6
        manifest = (await files.resolve(r.cid, alice))[0]
        assert all(manifest.holder_of(0, i) != victim for i in range(6))
        assert await (await files.open(r.cid, alice)).read_all() == small


async def test_manifest_lying_about_cid_is_an_error_not_silent(net: FakeNetwork) -> None:
    from storage.files import IntegrityError
    from storage.manifest import manifest_key, sign_manifest

    files = FileStore(net)
    alice = _user()
    data = os.urandom(150_000)
    r = await files.push(_chunks(data), alice, SMALL)
    manifest = (await files.resolve(r.cid, alice))[0]
    body = type(manifest.body)()
    body.CopyFrom(manifest.body)
    body.cid = cid_for(b"something else" + bytes(len(data) - 14))
    forged = sign_manifest(body, alice)
    for node_id in await net.closest(manifest_key(body.cid), 3):
        net.handlers[node_id].manifests.put(forged)
    reader = await files.open(body.cid, alice)
    got = []
    with pytest.raises(IntegrityError):
        async for stripe in reader.stripes():
            got.append(stripe)
    assert len(got) == len(body.stripes) - 1      # the last stripe is held back


async def test_rebuilt_fragment_found_at_placement_peer(net: FakeNetwork) -> None:
    """Repair puts a lost fragment i on the i-th closest live peer to the placement key; Get
    finds it there although the owner-signed manifest still names the dead holder."""
    files = FileStore(net)
    alice = _user()
    data = os.urandom(200_000)
    r = await files.push_bytes(data, alice, PushOptions(stripe_size=65536))
    manifest = (await files.resolve(r.cid, alice))[0]
    from storage.manifest import manifest_key

    keep = set(await net.closest(manifest_key(r.cid), 3))
    victims = [h for h in manifest.body.holders if h not in keep][:3]
    victims += [h for h in manifest.body.holders if h not in victims][: 3 - len(victims)]
    net.down.update(victims)
    with pytest.raises(UnavailableError):
        await (await files.open(r.cid, alice)).read_all()
    ranked = await net.closest(manifest.body.placement_key, 10)
    for s, stripe in enumerate(manifest.body.stripes):
        for i, frag in enumerate(stripe.fragments):
            holder = manifest.holder_of(s, i)
            if holder in victims:
                blob = net.handlers[holder].fragments.get(frag.hash.hex())
                assert blob is not None
                net.handlers[ranked[i % len(ranked)]].fragments.put(blob, r.file_id, s * 256 + i)
    assert await (await files.open(r.cid, alice)).read_all() == data

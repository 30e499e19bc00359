"""Issue 10 (2): disk faults on real nodes — damaged fragments, a lost index, a full disk.

Fragment files are truncated, bit-flipped and deleted behind the nodes' backs: reads stay
byte-exact (fragments are checked against their hashes, the erasure code rebuilds the rest) and
the scrubber + repair (short --scrub-interval/--repair-interval) bring every stripe back to full
redundancy. The SQLite fragment index removed (or replaced with junk) is rebuilt from the files
on restart. A node whose data directory is a full 8 MiB tmpfs keeps running: Pushes through it
and to it fail cleanly or place fragments elsewhere, and repair restores redundancy once space
is back.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto import taskworker_pb2 as pb
from proto import taskworker_pb2_grpc as pbg
from tests.support.nodes import NodeCluster, NodeProc
from tests.support.tmpfs import small_tmpfs
from tests.system.test_repair import check_gets, health, manifests, push_files, wait_healthy

FAST = ["--sweep-interval", "0.5", "--repair-interval", "1", "--repair-grace", "2",
        "--scrub-interval", "1"]
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def fragment_paths(nodes: list[NodeProc]) -> list[Path]:
    return sorted(p for node in nodes for p in (node.data_dir / "fragments").glob("??/*")
                  if len(p.name) == 64 and "." not in p.name)


def damage(path: Path, how: str) -> None:
    if how == "truncate":
        with open(path, "r+b") as fh:
            fh.truncate(max(0, path.stat().st_size // 3))
    elif how == "flip":
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            at = random.Random(path.name).randrange(max(size, 1))
            byte = os.pread(fd, 1, at) or b"\0"
            os.pwrite(fd, bytes([byte[0] ^ 0x01]), at)
        finally:
            os.close(fd)
    else:
        path.unlink()


async def _stat_health(stub: pbg.FileServiceStub, cid: str, deadline: float) -> str:
    """The file's Stat health once "healthy", or the last Stat seen by ``deadline``."""
    while True:
        seen = await stub.Stat(pb.StatRequest(file_id=cid), timeout=30)
        if seen.health == "healthy":
            return "healthy"
        if time.monotonic() > deadline:
            return str(seen)
        await asyncio.sleep(0.5)


async def test_damaged_fragments_read_exact_then_repaired(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 6, extra=FAST) as cluster:
        files = await push_files(cluster, 12, seed=5)
        bodies = manifests(cluster.nodes)
        await wait_healthy(bodies, cluster, 30)
        # damage every fragment on two nodes (m=2: each stripe stays decodable), mixed kinds
        victims = cluster.nodes[2:4]
        paths = fragment_paths(victims)
        kinds = ("truncate", "flip", "delete")
        for i, path in enumerate(paths):
            damage(path, kinds[i % 3])
        assert health(bodies, cluster.live())[0] > 0
        await check_gets(cluster, 0, files)            # byte-exact despite the damage
        await check_gets(cluster, 3, files)            # also through a damaged node
        took = await wait_healthy(bodies, cluster, 90)
        for node in cluster.nodes:
            assert node.alive, node.log_path.read_text()[-2000:]
        # Every fragment is back on some disk, some on other peers than their signed manifest
        # names (repair cannot re-sign it): Stat, which looks for them where repair puts them,
        # must come to agree (a holder may still claim a rotted copy until its scrubber runs).
        stub = cluster.stub(1, pbg.FileServiceStub)
        deadline = time.monotonic() + 60
        for cid in files:
            seen = await _stat_health(stub, cid, deadline)
            assert seen == "healthy", seen
        print(f"disk: {len(paths)} fragments damaged ({', '.join(kinds)}), reads exact, "
              f"repaired in {took:.1f}s")


def wipe_index(node: NodeProc, how: str) -> None:
    db = node.data_dir / "fragments" / "index.sqlite3"
    for side in ("", "-wal", "-shm"):
        Path(str(db) + side).unlink(missing_ok=True)
    if how == "junk":
        db.write_bytes(b"this is not a database" * 100)


@pytest.mark.slow
async def test_index_removed_or_corrupt_is_rebuilt(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 6, extra=FAST) as cluster:
        files = await push_files(cluster, 6, seed=6)
        bodies = manifests(cluster.nodes)
        await wait_healthy(bodies, cluster, 30)
        for index, how in ((1, "remove"), (2, "junk")):
            node = cluster.nodes[index]
            node.kill()
            wipe_index(node, how)
            held = len(fragment_paths([node]))
            await cluster.restart(index)
            stub = cluster.stub(index, pbg.NodeServiceStub)
            status = (await stub.Status(pb.StatusRequest(), timeout=10)).json
            assert str(held) in status, status[:2000]     # fragment count back in status
        await cluster.wait_converged()
        missing, crowded = health(bodies, cluster.live())
        assert (missing, crowded) == (0, 0)
        cluster.nodes[0].kill()                          # the rebuilt indexes serve reads
        await check_gets(cluster, 1, files)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    yield from small_tmpfs(tmp_path, "8m")


def fill(mnt: Path, leave: int = 64 * 1024) -> Path:
    """Fill the filesystem until at most ``leave`` bytes are free."""
    filler = mnt / "filler"
    free = shutil.disk_usage(mnt).free
    with open(filler, "ab") as fh:
        try:
            fh.write(b"\0" * max(0, free - leave))
        except OSError:
            pass
    return filler


async def test_full_disk_fails_cleanly_then_repairs(tmp_path: Path, small_disk: Path) -> None:
    async with NodeCluster(tmp_path, 5, extra=FAST) as cluster:
        full = NodeProc(small_disk / "node", FAST)
        full.log_path = tmp_path / "full-node.log"          # the log itself not on the full disk
        full.start([cluster.nodes[0].peer])
        cluster.nodes.append(full)
        await full.wait_ready()
        await cluster.wait_converged()
        fill(small_disk)
        rng = random.Random(9)
        outcomes: dict[str, int] = {}
        pushed: dict[str, bytes] = {}
        for entry in (0, 5, 0, 5, 2, 5):                  # through healthy nodes and the full one
            data = rng.randbytes(rng.randint(200_000, 1_500_000))
            stub = cluster.stub(entry, pbg.FileServiceStub)
            started = time.monotonic()
            try:
                r = await stub.Push(pb.PushRequest(file_data=data, public=True), timeout=60)
                pushed[r.cid] = data
                outcomes["OK"] = outcomes.get("OK", 0) + 1
            except grpc.aio.AioRpcError as exc:
                outcomes[exc.code().name] = outcomes.get(exc.code().name, 0) + 1
                assert exc.code() not in BAD, f"{exc.code().name}: {exc.details()}"
                assert exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 60
            assert full.alive, full.log_path.read_text()[-3000:]
        assert outcomes.get("OK", 0) >= 3, outcomes       # healthy entry nodes place elsewhere
        # still serving its API and membership
        await cluster.peers_of(5)
        for cid, data in pushed.items():
            got = await cluster.stub(5, pbg.FileServiceStub).Get(pb.GetRequest(file_id=cid),
                                                                 timeout=60)
            assert got.file_data == data
        (small_disk / "filler").unlink()                  # space back: repair restores redundancy
        bodies = {c: b for c, b in manifests(cluster.nodes).items() if c in pushed}
        took = await wait_healthy(bodies, cluster, 90)
        assert full.alive
        print(f"full disk: push outcomes {outcomes}; healthy {took:.1f}s after space came back")

"""Issue 4 on six real `tw-mesh join` processes: Push/Get/Stat through the local API and CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from proto import taskworker_pb2, taskworker_pb2_grpc
from storage.cid import cid_for
from storage.manifest import manifest_key
from storage.placement import placement_key
from tests.support.nodes import ROOT, NodeCluster, run_cli

Stub = taskworker_pb2_grpc.FileServiceStub


async def _ids(cluster: NodeCluster) -> list[str]:
    return [(await cluster.peers_of(i)).self_id for i in range(len(cluster.nodes))]


async def _status(cluster: NodeCluster, i: int) -> dict[str, object]:
    stub = cluster.stub(i, taskworker_pb2_grpc.NodeServiceStub)
    doc: dict[str, object] = json.loads((await stub.Status(taskworker_pb2.StatusRequest())).json)
    return doc


async def _push_stream(stub: Stub, data: bytes, chunk: int = 1 << 20, timeout: float = 300,
                       **header: object) -> taskworker_pb2.PushResponse:
    async def chunks() -> AsyncIterator[taskworker_pb2.PushChunk]:
        yield taskworker_pb2.PushChunk(header=taskworker_pb2.PushRequest(**header))  # type: ignore[arg-type]
        for i in range(0, len(data), chunk):
            yield taskworker_pb2.PushChunk(data=data[i:i + chunk])
    resp: taskworker_pb2.PushResponse = await stub.PushStream(chunks(), timeout=timeout)
    return resp


async def _get_stream(stub: Stub, ref: str, user: str = "") -> tuple[str, bytes]:
    header, parts = None, []
    async for c in stub.GetStream(taskworker_pb2.GetRequest(file_id=ref, user_id=user),
                                  timeout=300):
        if c.HasField("header"):
            header = c.header
        else:
            parts.append(c.data)
    assert header is not None
    return header.cid, b"".join(parts)


def _get_into_a_closed_pipe(ref: str, api: str) -> tuple[int, bytes]:
    """`tw-mesh get REF | head -c 10`: (exit status, stderr)."""
    reader = subprocess.Popen([sys.executable, "-m", "taskworker.cli", "get", ref, "--api", api],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None and reader.stderr is not None
    assert len(reader.stdout.read(10)) == 10
    reader.stdout.close()
    err = reader.stderr.read()
    reader.stderr.close()
    return reader.wait(60), err


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    code: grpc.StatusCode = info.value.code()
    return code


def _holders_of_manifest(cluster: NodeCluster, ids: list[str], cid: str) -> set[int]:
    key = int.from_bytes(manifest_key(cid), "big")
    ranked = sorted(range(len(ids)), key=lambda i: int.from_bytes(bytes.fromhex(ids[i]), "big") ^ key)
    return set(ranked[:3])


def _plant_lying_manifest(cluster: NodeCluster, cid: str, lie: str) -> None:
    """Re-sign node 0's default user's manifest of ``cid`` as if it were ``lie``'s."""
    from proto import storage_pb2
    from storage.keyring import Keyring
    from storage.manifest import ManifestStore, sign_manifest

    owner = Keyring(cluster.nodes[0].data_dir).get("default")
    signed = None
    for node in cluster.nodes:      # the nodes' manifest stores (SQLite, WAL: shared safely)
        signed = next(iter(ManifestStore(node.data_dir).get(cid)), signed)
    assert signed is not None
    body = storage_pb2.ManifestBody.FromString(signed.body)
    body.cid = lie
    forged = sign_manifest(body, owner)
    for node in cluster.nodes:
        ManifestStore(node.data_dir).put(forged)


async def test_storage_end_to_end(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 6) as cluster:
        ids = await _ids(cluster)
        stub = cluster.stub(0, Stub)
        other = cluster.stub(3, Stub)

        # 0 B, 1 B, 1 MiB: unary and streaming, read back from another node, by CID and file_id
        for size in (0, 1, 1 << 20):
            data = os.urandom(size)
            r = await stub.Push(taskworker_pb2.PushRequest(file_data=data, filename="f.bin"))
            assert r.cid == cid_for(data) and r.file_id and r.k == 4 and r.m == 2
            assert not r.under_replicated
            g = await stub.Get(taskworker_pb2.GetRequest(file_id=r.cid))
            assert g.file_data == data and g.cid == r.cid and g.filename == "f.bin"
            g = await stub.Get(taskworker_pb2.GetRequest(file_id=r.file_id))
            assert g.file_data == data
            s = await _push_stream(stub, data)
            assert s.cid == r.cid and s.file_id != r.file_id
            assert await _get_stream(stub, s.file_id) == (r.cid, data)

        # per-file k, m
        data = os.urandom(300_000)
        r = await stub.Push(taskworker_pb2.PushRequest(file_data=data, k=3, m=3))
        assert (r.k, r.m) == (3, 3)
        st = await stub.Stat(taskworker_pb2.StatRequest(file_id=r.cid))
        assert st.health == "healthy" and len(st.fragments) == 6

        # private file: another user of the same node (and the default user of another node)
        # cannot read it; a path-like filename is only metadata
        marker = b"PLAINTEXT-MARKER-" + os.urandom(6).hex().encode()
        secret = marker * 3000
        made = run_cli("user", "create", "bob", "--data-dir", str(cluster.nodes[0].data_dir))
        assert made.returncode == 0, made.stderr
        r = await stub.Push(taskworker_pb2.PushRequest(file_data=secret,
                                                       filename="../../etc/passwd"))
        assert await _code(stub.Get(taskworker_pb2.GetRequest(file_id=r.cid, user_id="bob"))) \
            == grpc.StatusCode.PERMISSION_DENIED
        assert await _code(other.Get(taskworker_pb2.GetRequest(file_id=r.file_id))) \
            == grpc.StatusCode.PERMISSION_DENIED
        g = await stub.Get(taskworker_pb2.GetRequest(file_id=r.cid))
        assert g.file_data == secret and g.filename == "../../etc/passwd"
        assert not (tmp_path / "etc").exists()
        pub = await stub.Push(taskworker_pb2.PushRequest(file_data=b"open", public=True))
        assert (await other.Get(taskworker_pb2.GetRequest(file_id=pub.cid))).file_data == b"open"
        for node in cluster.nodes:
            for p in node.data_dir.rglob("*"):
                if p.is_file():
                    assert marker not in p.read_bytes(), f"plaintext marker in {p}"

        # malformed and unknown
        for bad in ("", "hello", "../../etc/passwd", "bafkrei" + "a" * 10):
            assert await _code(stub.Get(taskworker_pb2.GetRequest(file_id=bad))) \
                == grpc.StatusCode.INVALID_ARGUMENT
        assert await _code(stub.Get(taskworker_pb2.GetRequest(file_id=cid_for(b"nothing")))) \
            == grpc.StatusCode.NOT_FOUND
        assert await _code(stub.Get(taskworker_pb2.GetRequest(file_id="f" + "0" * 32))) \
            == grpc.StatusCode.NOT_FOUND
        assert await _code(stub.Push(taskworker_pb2.PushRequest(file_data=b"x", k=200, m=100))) \
            == grpc.StatusCode.INVALID_ARGUMENT
        assert await _code(stub.Push(taskworker_pb2.PushRequest(file_data=b"x",
                                                                user_id="../evil"))) \
            == grpc.StatusCode.INVALID_ARGUMENT
        assert await _code(stub.Push(taskworker_pb2.PushRequest(file_data=b"x",
                                                                user_id="nobody"))) \
            == grpc.StatusCode.NOT_FOUND

        # a corrupted fragment on disk is detected and the Get is still right
        data = os.urandom(1 << 20)
        r = await stub.Push(taskworker_pb2.PushRequest(file_data=data))
        st = await stub.Stat(taskworker_pb2.StatRequest(file_id=r.cid))
        victim = ids.index(st.fragments[0].holder)
        for blob in (cluster.nodes[victim].data_dir / "fragments").glob("??/*"):
            if len(blob.name) == 64:
                raw = bytearray(blob.read_bytes())
                if raw:
                    raw[len(raw) // 2] ^= 0x5A
                    blob.write_bytes(bytes(raw))
        assert (await stub.Get(taskworker_pb2.GetRequest(file_id=r.cid))).file_data == data
        assert (await _status(cluster, victim))["services"]["storage"][  # type: ignore[index]
            "corrupt_fragments_dropped"] >= 1

        # CLI: put / get / stat, and a failed get leaves no partial file
        src = tmp_path / "in.bin"
        src.write_bytes(os.urandom(200_000))
        api = cluster.nodes[1].api
        put = run_cli("put", str(src), "--json", api=api)
        assert put.returncode == 0, put.stderr
        doc = json.loads(put.stdout)
        assert doc["cid"] == cid_for(src.read_bytes()) and doc["file_id"]
        out = tmp_path / "out.bin"
        got = run_cli("get", doc["cid"], "-o", str(out), api=api)
        assert got.returncode == 0, got.stderr
        assert out.read_bytes() == src.read_bytes()
        piped = run_cli("get", doc["file_id"], api=api)
        assert piped.stdout == src.read_bytes()
        # a reader that goes away early (`tw-mesh get CID | head -c 10`): a quiet exit 141
        big = run_cli("put", "-", api=api, input_data=os.urandom(8 << 20)).stdout.decode()
        code, err = _get_into_a_closed_pipe(big.strip(), api)
        assert code == 141 and b"error" not in err, err
        stdin_put = run_cli("put", "-", api=api, input_data=b"from stdin")
        assert stdin_put.stdout.decode().strip() == cid_for(b"from stdin")
        stat = run_cli("stat", doc["cid"], "--json", api=api)
        assert json.loads(stat.stdout)["health"] == "healthy"
        missing = tmp_path / "missing.bin"
        failed = run_cli("get", cid_for(b"not stored"), "-o", str(missing), api=api)
        assert failed.returncode == 1 and b"NOT_FOUND" in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1
        granted = run_cli("share", r.cid, "bob", api=cluster.nodes[0].api)
        assert granted.returncode == 0, granted.stderr
        as_bob = run_cli("get", r.cid, "--user", "bob", api=cluster.nodes[0].api)
        assert as_bob.returncode == 0 and as_bob.stdout == data, as_bob.stderr
        revoked = run_cli("share", r.cid, "bob", "--revoke", api=cluster.nodes[0].api)
        assert revoked.returncode == 0, revoked.stderr
        denied = run_cli("get", r.cid, "-o", str(missing), "--user", "bob",
                         api=cluster.nodes[0].api)
        assert denied.returncode == 1 and b"PERMISSION_DENIED" in denied.stderr
        assert not [n for n in os.listdir(tmp_path) if n.startswith((".missing", "missing"))]

        # a mid-stream failure (a manifest whose CID does not match its bytes, planted on every
        # node) ends the CLI get with an error and no output file, after stripes were streamed
        big = os.urandom(9 * 2**20)
        rb = await _push_stream(stub, big)
        lie = cid_for(b"not these bytes")
        _plant_lying_manifest(cluster, rb.cid, lie)
        bad_out = tmp_path / "lie.bin"
        lied = run_cli("get", lie, "-o", str(bad_out), api=cluster.nodes[0].api)
        assert lied.returncode == 1 and b"DATA_LOSS" in lied.stderr, lied.stderr
        assert not [n for n in os.listdir(tmp_path) if "lie.bin" in n]

        # kill -9 any m fragment holders: Get still works; m+1: an error naming what is missing
        data = os.urandom(1 << 20)
        r = await stub.Push(taskworker_pb2.PushRequest(file_data=data))
        keep = _holders_of_manifest(cluster, ids, r.cid) | {0}
        victims = [i for i in range(1, 6) if i not in keep]
        victims += [i for i in range(1, 6) if i not in victims and i != 0]
        for v in victims[:2]:
            cluster.nodes[v].kill()
        assert (await stub.Get(taskworker_pb2.GetRequest(file_id=r.cid))).file_data == data
        assert (await _get_stream(stub, r.file_id))[1] == data
        cluster.nodes[victims[2]].kill()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Get(taskworker_pb2.GetRequest(file_id=r.cid))
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND)
        assert "missing" in (info.value.details() or ""), info.value.details()


async def test_a_frozen_fragment_holder_is_hedged_around(tmp_path: Path) -> None:
    """SIGSTOP a data fragment's holder: its kernel still accepts the connection but nothing
    answers, like a path stuck in TCP retransmission backoff. The Get asks another holder after
    storage/fetch.py's hedge delay. Without the hedge it waits until the liveness sweep calls
    the peer down (~3 s here) and, for a peer that still answers pings (a lossy path), until
    the 30 s fetch deadline."""
    async with NodeCluster(tmp_path, 6) as cluster:
        ids = await _ids(cluster)
        stub = cluster.stub(0, Stub)
        data = os.urandom(300_000)
        r = await stub.Push(taskworker_pb2.PushRequest(file_data=data), timeout=60)
        st = await stub.Stat(taskworker_pb2.StatRequest(file_id=r.cid))
        data_holders = [ids.index(f.holder) for f in st.fragments if f.index < st.k]
        frozen = next(h for h in data_holders if h != 0)
        proc = cluster.nodes[frozen].proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            got = await stub.Get(taskworker_pb2.GetRequest(file_id=r.cid), timeout=20)
            assert got.file_data == data
            status = await _status(cluster, 0)
            assert status["services"]["storage"]["fragment_hedges"] >= 1  # type: ignore[index]
            assert status["channel"]["hedged_calls"] >= 0   # type: ignore[index]  (stores')
        finally:
            os.killpg(proc.pid, signal.SIGCONT)


async def test_push_goes_around_a_holder_that_hangs_while_counted_live(tmp_path: Path) -> None:
    """A holder frozen (SIGSTOP) while the pushing node still counts it live (a slow liveness
    sweep here; in production, a stuck disk on a node that still answers pings). 7 nodes, (4,2):
    one spare beside the 6 holders of each file. The frozen holder's stores are given up after
    the tail delay (storage/tail.py) and its fragment goes to the spare, so the file keeps 6
    distinct holders; the next Push ranks the suspect last (storage/placement.py) and does not
    wait on it at all. Without that, a one-stripe Push waited out two 30 s store deadlines
    (fragment, then the corrected manifest), a multi-stripe one a deadline per stripe window,
    and a Stat 30 s for it; now Stat reports it unreachable after the read tail.

    Resumed, the holder runs the store it was given up on: a copy no manifest records, which
    the pushing node deletes (storage/late_copies.py; --late-copy-delay shortens its wait)."""
    extra = ["--sweep-interval", "600", "--late-copy-delay", "2"]
    async with NodeCluster(tmp_path, 7, extra=extra) as cluster:
        ids = await _ids(cluster)
        stub = cluster.stub(0, Stub)
        r0 = await stub.Push(taskworker_pb2.PushRequest(file_data=os.urandom(300_000)),
                             timeout=60)
        small, big = os.urandom(1_000_000), os.urandom(9 << 20)   # one stripe; three

        def holders(data: bytes) -> set[int]:
            key = int.from_bytes(placement_key("cid", cid_for(data)), "big")
            return set(sorted(range(7), key=lambda i: int(ids[i], 16) ^ key)[:6])

        st0 = await stub.Stat(taskworker_pb2.StatRequest(file_id=r0.cid))
        frozen = min((holders(small) & holders(big) & {ids.index(f.holder)
                                                       for f in st0.fragments}) - {0})
        proc = cluster.nodes[frozen].proc
        assert proc is not None
        held = (await _status(cluster, frozen))["services"]["storage"]["fragments"]  # type: ignore[index]
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            pushed = [await stub.Push(taskworker_pb2.PushRequest(file_data=d, public=True),
                                      timeout=20) for d in (small, big)]
            # the first Push waits out the tail delay, the second ranks the suspect last
            assert any("unanswered" in w and ids[frozen][:16] in w for w in pushed[0].warnings)
            assert not any("unanswered" in w for w in pushed[1].warnings), pushed[1].warnings
            for r, data in zip(pushed, (small, big), strict=True):
                assert not r.under_replicated, r.warnings      # the spare took the share
                st = await stub.Stat(taskworker_pb2.StatRequest(file_id=r.cid))
                assert len({f.holder for f in st.fragments}) == 6
                assert ids[frozen] not in {f.holder for f in st.fragments}
                assert (await _get_stream(stub, r.cid))[1] == data
            storage = (await _status(cluster, 0))["services"]["storage"]  # type: ignore[index]
            assert storage["store_spares"] >= 1 and ids[frozen][:16] in storage["suspect_peers"]
            st = await stub.Stat(taskworker_pb2.StatRequest(file_id=r0.cid), timeout=8)
            assert [f.reachable for f in st.fragments if f.holder == ids[frozen]] == [False]
            assert st.health == "degraded"
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
        # the late store lands when the holder resumes; node 0 deletes that copy
        deadline = time.monotonic() + 180
        while True:
            now_held = (await _status(cluster, frozen))["services"]["storage"]["fragments"]  # type: ignore[index]
            storage = (await _status(cluster, 0))["services"]["storage"]  # type: ignore[index]
            if now_held == held and storage["late_copies_collected"] >= 1:
                break
            assert time.monotonic() < deadline, (held, now_held, storage)
            await asyncio.sleep(0.5)
        assert storage["late_copies_pending"] == 0 and storage["late_copies_abandoned"] == 0
        for r, data in zip(pushed, (small, big), strict=True):   # the late stores changed
            got = await _get_stream(cluster.stub(frozen, Stub), r.file_id)  # nothing (public:
            assert got[1] == data                         # the frozen node holds no owner key)
            st = await stub.Stat(taskworker_pb2.StatRequest(file_id=r.cid))
            assert st.health == "healthy" and len({f.holder for f in st.fragments}) == 6


async def test_inline_small_file_kill_replicas(tmp_path: Path) -> None:
    """A 1 KiB file lives inline in its m+1 manifest replicas (storage/inline.py): Stat names
    them, kill -9 any m and Get still works, kill the last and Get fails NOT_FOUND at a node
    that never had the file (one that wrote or read it keeps serving it: storage/known.py)."""
    async with NodeCluster(tmp_path, 5) as cluster:
        ids = await _ids(cluster)
        data = os.urandom(1024)
        r = await cluster.stub(0, Stub).Push(taskworker_pb2.PushRequest(file_data=data,
                                                                         public=True))
        replicas = sorted(_holders_of_manifest(cluster, ids, r.cid))
        others = [i for i in range(5) if i not in replicas]       # 2 of 5; node 0 first
        entry, fresh = (0, others[1]) if 0 in others else (others[0], others[1])
        stub = cluster.stub(entry, Stub)
        st = await stub.Stat(taskworker_pb2.StatRequest(file_id=r.cid))
        assert st.health == "healthy"
        assert {f.holder for f in st.fragments} == {ids[i] for i in replicas}
        for v in replicas[:2]:
            cluster.nodes[v].kill()
        assert (await stub.Get(taskworker_pb2.GetRequest(file_id=r.cid))).file_data == data
        assert (await stub.Get(taskworker_pb2.GetRequest(file_id=r.file_id))).file_data == data
        st = await stub.Stat(taskworker_pb2.StatRequest(file_id=r.cid))
        assert st.health == "degraded" and sum(f.healthy for f in st.fragments) == 1
        cluster.nodes[replicas[2]].kill()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await cluster.stub(fresh, Stub).Get(taskworker_pb2.GetRequest(file_id=r.cid))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "no manifest found" in (info.value.details() or ""), info.value.details()
        # the node that wrote or read it still has the signed manifest, data inline, in memory
        assert (await stub.Get(taskworker_pb2.GetRequest(file_id=r.cid))).file_data == data


async def test_hundred_mib_streams(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 6) as cluster:
        stub = cluster.stub(0, Stub)
        data = os.urandom(100 * 2**20)
        r = await _push_stream(stub, data, filename="big.bin", public=True)
        assert r.cid == cid_for(data) and r.size == len(data)
        cid, back = await _get_stream(cluster.stub(4, Stub), r.cid)
        assert cid == r.cid
        assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
        del back
        # unary Get refuses what it cannot carry, with a pointer to GetStream
        code = await _code(stub.Get(taskworker_pb2.GetRequest(file_id=r.cid)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_fewer_nodes_than_fragments_is_under_replicated(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 2) as cluster:
        stub = cluster.stub(0, Stub)
        data = os.urandom(100_000)
        r = await stub.Push(taskworker_pb2.PushRequest(file_data=data, public=True))
        assert r.under_replicated and r.warnings
        assert (await cluster.stub(1, Stub).Get(
            taskworker_pb2.GetRequest(file_id=r.cid))).file_data == data


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
async def test_one_gib_stream_in_bounded_memory(tmp_path: Path) -> None:
    """PushStream/GetStream hold a few stripes, not the file: the entry node's peak RSS after
    256 MiB and after 1 GiB more (up and down) stay about the same, far below the file."""
    async with NodeCluster(tmp_path, 6) as cluster:
        stub = cluster.stub(0, Stub)
        assert cluster.nodes[0].proc is not None
        pid = cluster.nodes[0].proc.pid
        block = os.urandom(1 << 20)
        peaks = []
        for size in (256 << 20, 1 << 30):
            want = hashlib.sha256()

            async def chunks(size: int = size,
                             want: Any = want) -> AsyncIterator[taskworker_pb2.PushChunk]:
                yield taskworker_pb2.PushChunk(header=taskworker_pb2.PushRequest(filename="big"))
                for i in range(size >> 20):
                    piece = i.to_bytes(8, "big") + block[8:]
                    want.update(piece)
                    yield taskworker_pb2.PushChunk(data=piece)

            r = await stub.PushStream(chunks(), timeout=1800)
            assert r.size == size
            got, n = hashlib.sha256(), 0
            async for c in stub.GetStream(taskworker_pb2.GetRequest(file_id=r.cid), timeout=1800):
                got.update(c.data)
                n += len(c.data)
            assert n == size and got.digest() == want.digest()
            peaks.append(_peak_rss_mib(pid))
        print(f"entry node peak RSS: {peaks[0]:.0f} MiB after 256 MiB, {peaks[1]:.0f} after 1 GiB")
        assert peaks[1] < 640, peaks
        assert peaks[1] - peaks[0] < 160, peaks

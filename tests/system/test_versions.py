"""Issue 5 on real `tw-mesh join` processes: Revise/Synchronous/Log/Grant, partitions, attacks.

Partitions and withholding use test hooks read only by storage/versions (TW_MESH_VERSIONS_TEST_HOOKS
and DATA/versions-test.json): version exchange between listed peers is dropped both ways; the
rest of the mesh (DHT, fragments, manifests) keeps working.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import nacl.signing
import pytest

from mesh.channel import ChannelPool
from mesh.channel.client import ChannelTimeouts
from mesh.identity import Identity
from proto import taskworker_pb2, taskworker_pb2_grpc, versions_pb2
from storage.cid import cid_for
from storage.versions.records import (
    decode_version,
    encode,
    file_id_text,
    parse_file_id,
    record_id,
    sign_version,
    vector_of,
    writer_id,
)
from storage.versions.service import replica_key
from storage.versions.store import VersionStore
from storage.versions.vset import VersionSet
from tests.support.nodes import NodeCluster, run_cli

Stub = taskworker_pb2_grpc.FileServiceStub
ENV = {"TW_MESH_VERSIONS_TEST_HOOKS": "1"}
EXTRA = ["--sweep-interval", "0.5", "--sync-interval", "0.5"]
DEADLINE = 60.0
SLOW = ChannelTimeouts(handshake=30.0, call=60.0)     # a busy CI machine, not a threshold


def disk_sets(cluster: NodeCluster, fid: str) -> list[VersionSet]:
    """Each node's own replica, read from its disk (no call to the node: no sync triggered)."""
    out = []
    for node in cluster.nodes:
        store = VersionStore(node.data_dir, durable=False)
        try:
            out.append(store.get(parse_file_id(fid)).copy())
        finally:
            store.close()
    return out


async def until(cond: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.3)


def hooks(cluster: NodeCluster, i: int, **cfg: object) -> None:
    (cluster.nodes[i].data_dir / "versions-test.json").write_text(json.dumps(cfg))


def user_key(cluster: NodeCluster, i: int, name: str) -> nacl.signing.SigningKey:
    raw = (cluster.nodes[i].data_dir / "users" / f"{name}.key").read_bytes()
    return nacl.signing.SigningKey(bytes.fromhex(raw.split(b"\n", 1)[1].decode().strip()))


def create_user(cluster: NodeCluster, i: int, name: str) -> str:
    out = run_cli("user", "create", name, "--data-dir", str(cluster.nodes[i].data_dir))
    assert out.returncode == 0, out.stderr
    return out.stdout.decode().split()[1]


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    code: grpc.StatusCode = info.value.code()
    return code


async def heads_everywhere(cluster: NodeCluster, fid: str, want: int,
                           nodes: list[int] | None = None) -> list[set[str]]:
    """Wait (anti-entropy only, no Synchronous call) until each node's Log shows ``want`` heads."""
    deadline = time.monotonic() + DEADLINE
    nodes = list(range(len(cluster.nodes))) if nodes is None else nodes
    while True:
        got = []
        for i in nodes:
            log = await cluster.stub(i, Stub).Log(taskworker_pb2.LogRequest(file_id=fid))
            got.append(set(log.heads))
        if all(len(h) == want for h in got) and all(h == got[0] for h in got):
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"heads did not converge to {want}: {got}")
        await asyncio.sleep(0.3)


async def disk_heads_everywhere(cluster: NodeCluster, fid: str, want: set[str]) -> None:
    """Wait until every node's own replica (read from its disk, no call to the node, so no
    sync is triggered) has exactly the heads ``want``: only anti-entropy can bring that."""
    deadline = time.monotonic() + DEADLINE
    while True:
        got = []
        for node in cluster.nodes:
            store = VersionStore(node.data_dir, durable=False)
            try:
                got.append({h.id.hex() for h in store.get(parse_file_id(fid)).heads()})
            finally:
                store.close()
        if all(h == want for h in got):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"replicas did not converge to {want}: {got}")
        await asyncio.sleep(0.3)


async def test_partitioned_writers_conflict_then_merge(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 3, extra=EXTRA, env=ENV) as cluster:
        ids = [(await cluster.peers_of(i)).self_id for i in range(3)]
        s0, s1, s2 = (cluster.stub(i, Stub) for i in range(3))
        r = await s0.Push(taskworker_pb2.PushRequest(file_data=b"v1", filename="doc.txt"))
        fid = r.file_id
        bob = create_user(cluster, 1, "bob")
        create_user(cluster, 2, "mallory")
        # nobody but the owner (and granted writers) revises
        assert await code_of(s2.Revise(taskworker_pb2.ReviseRequest(
            file_id=fid, file_data=b"evil", user_id="mallory"))) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(s1.Revise(taskworker_pb2.ReviseRequest(
            file_id=fid, file_data=b"early", user_id="bob"))) == grpc.StatusCode.PERMISSION_DENIED
        out = run_cli("grant", fid, bob, api=cluster.nodes[0].api)
        assert out.returncode == 0, out.stderr
        # only the owner grants
        assert await code_of(s1.Grant(taskworker_pb2.GrantRequest(
            file_id=fid, user_id="bob", grantee=bob))) == grpc.StatusCode.PERMISSION_DENIED
        await heads_everywhere(cluster, fid, 1)

        # partition {0} | {1, 2}: both sides revise the same head
        hooks(cluster, 0, block=[ids[1], ids[2]])
        hooks(cluster, 1, block=[ids[0]])
        hooks(cluster, 2, block=[ids[0]])
        a = await s0.Revise(taskworker_pb2.ReviseRequest(file_id=fid, file_data=b"owner edit"))
        b = await s1.Revise(taskworker_pb2.ReviseRequest(file_id=fid, file_data=b"bob edit",
                                                         user_id="bob"))
        assert (await s0.Get(taskworker_pb2.GetRequest(file_id=fid))).file_data == b"owner edit"
        assert (await s1.Get(taskworker_pb2.GetRequest(file_id=fid, user_id="bob"))).file_data \
            == b"bob edit"

        # heal: anti-entropy alone brings both heads to every replica, shown as a conflict
        for i in range(3):
            hooks(cluster, i)
        await disk_heads_everywhere(cluster, fid, {a.version, b.version})
        heads = await heads_everywhere(cluster, fid, 2)
        assert heads[0] == {a.version, b.version}
        for i, stub in enumerate((s0, s1, s2)):
            g = await stub.Get(taskworker_pb2.GetRequest(file_id=fid, user_id="bob" if i == 1 else ""))
            assert not g.file_data and {c.version for c in g.conflicts} == {a.version, b.version}
        # each conflicting version's content is retrievable (by version id and by CID)
        got = await s1.Get(taskworker_pb2.GetRequest(file_id=fid, version=a.version, user_id="bob"))
        assert got.file_data == b"owner edit" and got.version == a.version
        got = await s0.Get(taskworker_pb2.GetRequest(file_id=b.cid))
        assert got.file_data == b"bob edit"
        # a revise without naming the base is refused while heads conflict
        assert await code_of(s0.Revise(taskworker_pb2.ReviseRequest(
            file_id=fid, file_data=b"x"))) == grpc.StatusCode.FAILED_PRECONDITION

        # a merge naming both heads resolves it everywhere
        merged = await s1.Revise(taskworker_pb2.ReviseRequest(
            file_id=fid, file_data=b"merged", user_id="bob", base_versions=[a.version, b.version]))
        assert len(merged.vector) == 2
        await disk_heads_everywhere(cluster, fid, {merged.version})
        await heads_everywhere(cluster, fid, 1)
        for stub, user in ((s0, ""), (s1, "bob")):
            g = await stub.Get(taskworker_pb2.GetRequest(file_id=fid, user_id=user))
            assert g.file_data == b"merged" and g.version == merged.version and not g.conflicts
        # the content stays private to the owner and the writers
        assert await code_of(s2.Get(taskworker_pb2.GetRequest(file_id=fid))) \
            == grpc.StatusCode.PERMISSION_DENIED

        # CLI: log --json, sync
        out = run_cli("log", fid, "--json", api=cluster.nodes[2].api)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert len(doc["versions"]) == 4 and doc["heads"] == [merged.version]
        assert not doc["conflict"]
        out = run_cli("sync", fid, api=cluster.nodes[0].api)
        assert out.returncode == 0 and merged.version in out.stdout.decode()
        path = tmp_path / "new.txt"
        path.write_bytes(b"via cli")
        out = run_cli("revise", fid, str(path), api=cluster.nodes[0].api)
        assert out.returncode == 0, out.stderr
        assert (await s1.Get(taskworker_pb2.GetRequest(file_id=fid, user_id="bob"))).file_data \
            == b"via cli"

        # a replica keeps its records across a restart (checked while cut off from the others)
        cluster.nodes[2].kill()
        hooks(cluster, 2, block=[ids[0], ids[1]])
        await cluster.restart(2)
        log = await cluster.stub(2, Stub).Log(taskworker_pb2.LogRequest(file_id=fid))
        assert len(log.versions) == 5 and len(log.heads) == 1


async def _peer_push(cluster: NodeCluster, i: int, bundle: versions_pb2.Bundle
                     ) -> versions_pb2.PushReply:
    """Push a bundle straight to node i over the sealed channel, as any peer could."""
    ident = (await cluster.peers_of(i)).self_id
    pool = ChannelPool(Identity.generate(), timeouts=SLOW)
    try:
        body = await cluster.nodes[i].member(pool, bytes.fromhex(ident)).unary(
            "versions.Push", bundle.SerializeToString())
    finally:
        await pool.close()
    return versions_pb2.PushReply.FromString(body)


async def test_attacks_refused_and_never_spread(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 3, extra=EXTRA, env=ENV) as cluster:
        s0, s1 = cluster.stub(0, Stub), cluster.stub(1, Stub)
        r = await s0.Push(taskworker_pb2.PushRequest(file_data=b"v1"))
        fid = r.file_id
        # never revised: the owner's log creates the first version from the document record
        first = await s0.Log(taskworker_pb2.LogRequest(file_id=fid))
        assert [v.cid for v in first.versions] == [r.cid] and len(first.heads) == 1
        bob_hex = create_user(cluster, 1, "bob")
        await s0.Grant(taskworker_pb2.GrantRequest(file_id=fid, grantee=bob_hex))
        v2 = await s1.Revise(taskworker_pb2.ReviseRequest(file_id=fid, file_data=b"v2",
                                                          user_id="bob"))
        await heads_everywhere(cluster, fid, 1)
        owner = Identity(user_key(cluster, 0, "default"))
        bob = Identity(user_key(cluster, 1, "bob"))
        log = await s0.Log(taskworker_pb2.LogRequest(file_id=fid))
        genesis = log.versions[0]
        # fetch the real records to build attacks from
        ident = (await cluster.peers_of(0)).self_id
        pool = ChannelPool(Identity.generate(), timeouts=SLOW)
        raw = await cluster.nodes[0].member(pool, bytes.fromhex(ident)).unary(
            "versions.Pull", versions_pb2.PullRequest(file_id=parse_file_id(fid),
                                                      all=True).SerializeToString())
        await pool.close()
        bundle = versions_pb2.Bundle.FromString(raw)
        records = [decode_version(x) for x in bundle.records]
        top = next(x for x in records if x.cid == v2.cid)
        binding = top.file
        top_vec = vector_of(top.vector)
        parent = [record_id(top)]

        forged = versions_pb2.VersionRecord()
        forged.CopyFrom(top)
        forged.cid = cid_for(b"forged")
        claimed = sign_version(bob, binding, cid_for(b"claim"),
                               {**top_vec, writer_id(bob.public_key): top_vec[writer_id(bob.public_key)] + 1,
                                writer_id(owner.public_key): 9}, parent)
        replay_old = sign_version(owner, binding, cid_for(b"v1"),
                                  {writer_id(owner.public_key): 1}, parent)
        cases = {"forged": forged, "claimed": claimed, "replayed": replay_old}
        for name, rec in cases.items():
            reply = await _peer_push(cluster, 2, versions_pb2.Bundle(
                file_id=parse_file_id(fid), records=[encode(rec)]))
            assert reply.accepted == 0 and len(reply.refused) == 1, (name, reply)
        # an exact replay of an old record is only a duplicate
        reply = await _peer_push(cluster, 2, versions_pb2.Bundle(
            file_id=parse_file_id(fid), records=list(bundle.records)))
        assert reply.accepted == 0 and reply.duplicate == len(bundle.records)

        # revoke bob; his later versions are refused, his earlier one stays
        await s0.Grant(taskworker_pb2.GrantRequest(file_id=fid, grantee=bob_hex, revoke=True))

        async def revoked_everywhere() -> bool:
            return all(len(vs.grant_ids()) == 2 for vs in disk_sets(cluster, fid))
        await until(revoked_everywhere, "the revocation did not reach every replica")
        assert await code_of(s1.Revise(taskworker_pb2.ReviseRequest(
            file_id=fid, file_data=b"after revoke", user_id="bob"))) \
            == grpc.StatusCode.PERMISSION_DENIED
        late = sign_version(bob, binding, cid_for(b"late"),
                            {**top_vec, writer_id(bob.public_key): top_vec[writer_id(bob.public_key)] + 5},
                            parent)
        reply = await _peer_push(cluster, 2, versions_pb2.Bundle(
            file_id=parse_file_id(fid), records=[encode(late)]))
        assert reply.accepted == 0 and "Revoked" in reply.refused[0]

        # after anti-entropy rounds, none of them is anywhere; bob's v2 still is
        await asyncio.sleep(2.0)
        bad = {forged.cid, claimed.cid, late.cid}
        for i in range(3):
            log = await cluster.stub(i, Stub).Log(taskworker_pb2.LogRequest(file_id=fid))
            cids = {v.cid for v in log.versions}
            assert not (bad & cids) and v2.cid in cids and genesis.cid in cids
            assert log.heads == [v2.version]
        assert file_id_text(parse_file_id(fid)) == fid

        # equivocation: the owner's key signs two versions at one counter. Both are kept (no
        # replica can know which came first), shown as conflicting heads and flagged by log.
        ow = writer_id(owner.public_key)
        twin_vec = {**top_vec, ow: top_vec[ow] + 7}
        twins = [sign_version(owner, binding, cid_for(x), twin_vec, parent) for x in (b"x", b"y")]
        reply = await _peer_push(cluster, 2, versions_pb2.Bundle(
            file_id=parse_file_id(fid), records=[encode(t) for t in twins]))
        assert reply.accepted == 2
        async def twins_on_node0() -> bool:
            return all(record_id(t) in disk_sets(cluster, fid)[0] for t in twins)
        await until(twins_on_node0, "anti-entropy did not bring the twins to node 0")
        out = run_cli("log", fid, "--json", api=cluster.nodes[0].api)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["conflict"] and len(doc["equivocations"]) == 1
        assert set(doc["equivocations"][0]["versions"]) == {record_id(t).hex() for t in twins}


async def _file_away_from_node0(cluster: NodeCluster, ids: list[str],
                                **push: object) -> tuple[str, list[int]]:
    """Push from node 0 until a file's 2 version replicas do not include node 0; its file_id
    and the replicas' indexes (skips the test if 20 tries all land on node 0)."""
    s0 = cluster.stub(0, Stub)
    node_stub = cluster.stub(0, taskworker_pb2_grpc.NodeServiceStub)
    for _ in range(20):
        r = await s0.Push(taskworker_pb2.PushRequest(file_data=b"v1", **push))  # type: ignore[arg-type]
        closest = await node_stub.Closest(taskworker_pb2.ClosestRequest(
            key=replica_key(parse_file_id(r.file_id)), n=2))
        replicas = [ids.index(p.node_id) for p in closest.peers]
        if 0 not in replicas:
            return r.file_id, replicas
    pytest.skip("no file placed away from node 0")


async def test_withholding_replicas_noticed(tmp_path: Path) -> None:
    extra = [*EXTRA, "--versions-replicas", "2"]
    async with NodeCluster(tmp_path, 5, extra=extra, env=ENV) as cluster:
        ids = [(await cluster.peers_of(i)).self_id for i in range(5)]
        s0 = cluster.stub(0, Stub)
        fid, replicas = await _file_away_from_node0(cluster, ids, public=True)
        reader, fresh = [i for i in range(1, 5) if i not in replicas][:2]
        v2 = await s0.Revise(taskworker_pb2.ReviseRequest(file_id=fid, file_data=b"v2"))
        rs = cluster.stub(reader, Stub)
        assert (await rs.Get(taskworker_pb2.GetRequest(file_id=fid))).file_data == b"v2"
        # both replicas now withhold v2
        for i in replicas:
            hooks(cluster, i, withhold=True)
        fs = cluster.stub(fresh, Stub)
        stale = await fs.Get(taskworker_pb2.GetRequest(file_id=fid))
        assert stale.file_data == b"v1"          # a reader that never saw v2 cannot tell
        got = taskworker_pb2.GetResponse()

        async def read_elsewhere() -> bool:
            nonlocal got
            try:
                got = await rs.Get(taskworker_pb2.GetRequest(file_id=fid))
            except grpc.aio.AioRpcError as exc:       # a peer too slow to answer on a busy box
                if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                return False
            return True
        # warm: the reader still holds the v2 it verified (sync.py's in-memory view) and
        # notices the replicas lag behind it
        await until(read_elsewhere, "the reader lost v2 to the withholding replicas")
        assert got.file_data == b"v2" and got.version == v2.version
        status = json.loads((await cluster.stub(reader, taskworker_pb2_grpc.NodeServiceStub)
                             .Status(taskworker_pb2.StatusRequest())).json)
        assert status["services"]["versions"]["lagging_replicas"] >= 1
        # cold (restarted: only the highest vector it saw is on disk): it asks wider and
        # reads v2 from peers beyond the withholding replicas
        cluster.nodes[reader].kill()
        await cluster.restart(reader)
        await cluster.wait_converged()
        rs = cluster.stub(reader, Stub)
        got = taskworker_pb2.GetResponse()
        await until(read_elsewhere, "the reader never found v2 beyond the withholding replicas")
        assert got.file_data == b"v2" and got.version == v2.version   # read elsewhere
        status = json.loads((await cluster.stub(reader, taskworker_pb2_grpc.NodeServiceStub)
                             .Status(taskworker_pb2.StatusRequest())).json)
        assert status["services"]["versions"]["withheld_seen"] >= 1
        assert status["services"]["versions"]["lagging_replicas"] >= 1


async def test_a_reader_cut_off_from_every_replica_still_revises_what_it_read(
        tmp_path: Path) -> None:
    """A granted writer whose node holds no records, once it has read the file, revises it
    while cut off from every replica (the partition test's minority side, made certain)."""
    extra = [*EXTRA, "--versions-replicas", "2"]
    async with NodeCluster(tmp_path, 4, extra=extra, env=ENV) as cluster:
        ids = [(await cluster.peers_of(i)).self_id for i in range(4)]
        s0 = cluster.stub(0, Stub)
        fid, replicas = await _file_away_from_node0(cluster, ids, filename="doc")
        far = next(i for i in range(1, 4) if i not in replicas)
        bob = create_user(cluster, far, "bob")
        assert run_cli("grant", fid, bob, api=cluster.nodes[0].api).returncode == 0
        sf = cluster.stub(far, Stub)
        seen = await sf.Synchronous(taskworker_pb2.SynchronousRequest(file_id=fid,
                                                                      user_id="bob"))
        assert len(seen.heads) == 1
        assert len(disk_sets(cluster, fid)[far]) == 0       # a reader: nothing on its disk
        # cut the far node off from every other node's version exchange
        hooks(cluster, far, block=[ids[i] for i in range(4) if i != far])
        for i in range(4):
            if i != far:
                hooks(cluster, i, block=[ids[far]])
        edit = await sf.Revise(taskworker_pb2.ReviseRequest(file_id=fid, file_data=b"bob edit",
                                                            user_id="bob"), timeout=60)
        got = await sf.Get(taskworker_pb2.GetRequest(file_id=fid, user_id="bob"))
        assert got.file_data == b"bob edit" and got.version == edit.version
        # healed: anti-entropy from the writer's node brings the edit to the replicas
        for i in range(4):
            hooks(cluster, i)

        async def replicas_have_edit() -> bool:
            sets = disk_sets(cluster, fid)
            return all({h.id.hex() for h in sets[i].heads()} == {edit.version}
                       for i in replicas)
        await until(replicas_have_edit, "the edit never reached the replicas")
        g = await s0.Get(taskworker_pb2.GetRequest(file_id=fid))
        assert g.file_data == b"bob edit" and g.version == edit.version


async def test_get_latest_reads_ahead_only_what_the_sync_confirms(tmp_path: Path) -> None:
    """Get-latest starts reading the head a node expects while it syncs; a newer head found by
    the sync wins, and a cached manifest that names no key for the reader is not used."""
    extra = ["--sweep-interval", "0.5", "--sync-interval", "0"]   # no background pushes
    async with NodeCluster(tmp_path, 3, extra=extra, env=ENV) as cluster:
        ids = [(await cluster.peers_of(i)).self_id for i in range(3)]
        s0, s1 = cluster.stub(0, Stub), cluster.stub(1, Stub)
        status0 = cluster.stub(0, taskworker_pb2_grpc.NodeServiceStub)

        async def vstatus() -> dict[str, int]:
            st = json.loads((await status0.Status(taskworker_pb2.StatusRequest())).json)
            out: dict[str, int] = st["services"]["versions"]
            return out

        fid = (await s0.Push(taskworker_pb2.PushRequest(file_data=b"v1" * 40_000))).file_id
        v2 = await s0.Revise(taskworker_pb2.ReviseRequest(file_id=fid, file_data=b"v2" * 40_000))
        for _ in range(2):
            g = await s0.Get(taskworker_pb2.GetRequest(file_id=fid))
            assert g.file_data == b"v2" * 40_000 and g.version == v2.version
        st = await vstatus()
        assert st["read_ahead_used"] == 2 and st["read_ahead_dropped"] == 0
        assert st["manifest_cache_hits"] >= 2

        # bob (node 1) revises while node 0 hears nothing from node 1: node 0 still expects v2,
        # node 2's digest shows v3 (read ahead too), the sync verifies v3, and v3 is returned
        bob = create_user(cluster, 1, "bob")
        assert run_cli("grant", fid, bob, api=cluster.nodes[0].api).returncode == 0
        hooks(cluster, 0, block=[ids[1]])
        hooks(cluster, 1, block=[ids[0]])
        v3 = await s1.Revise(taskworker_pb2.ReviseRequest(file_id=fid, file_data=b"v3",
                                                          user_id="bob"))
        g = await s0.Get(taskworker_pb2.GetRequest(file_id=fid))
        assert g.file_data == b"v3" and g.version == v3.version
        st = await vstatus()
        assert st["read_ahead_dropped"] == 1 and st["read_ahead_used"] == 3

        # carol, granted after v4 was stored (and its manifest cached here), still reads it:
        # the grant sealed the key to her in a newer manifest
        hooks(cluster, 0)
        hooks(cluster, 1)
        v4 = await s0.Revise(taskworker_pb2.ReviseRequest(file_id=fid, file_data=b"v4" * 4000))
        carol = create_user(cluster, 0, "carol")
        assert run_cli("grant", fid, carol, api=cluster.nodes[0].api).returncode == 0
        g = await s0.Get(taskworker_pb2.GetRequest(file_id=fid, user_id="carol"))
        assert g.file_data == b"v4" * 4000 and g.version == v4.version

        # the Revise pushed v4's manifest with its record: replica node 1 reads v4 without
        # fetching the manifest (once the push reached it; it may have been the background one)
        async def node1_has_v4() -> bool:
            return any(v.id.hex() == v4.version for v in disk_sets(cluster, fid)[1].valid())
        await until(node1_has_v4, "v4 never reached node 1")
        g = await s1.Get(taskworker_pb2.GetRequest(file_id=fid, user_id="bob"))
        assert g.file_data == b"v4" * 4000 and g.version == v4.version
        st1 = json.loads((await cluster.stub(1, taskworker_pb2_grpc.NodeServiceStub).Status(
            taskworker_pb2.StatusRequest())).json)["services"]["versions"]
        assert st1["manifest_cache_hits"] >= 1


async def test_a_node_holding_no_records_gets_the_heads_manifest_from_a_replica(
        tmp_path: Path) -> None:
    extra = ["--sweep-interval", "0.5", "--sync-interval", "0", "--versions-replicas", "2"]
    async with NodeCluster(tmp_path, 4, extra=extra) as cluster:
        ids = [(await cluster.peers_of(i)).self_id for i in range(4)]
        s0 = cluster.stub(0, Stub)
        fid = (await s0.Push(taskworker_pb2.PushRequest(file_data=b"a" * 9000))).file_id
        closest = await cluster.stub(0, taskworker_pb2_grpc.NodeServiceStub).Closest(
            taskworker_pb2.ClosestRequest(key=replica_key(parse_file_id(fid)), n=2))
        replicas = [ids.index(p.node_id) for p in closest.peers]
        far = next(i for i in range(1, 4) if i not in replicas)
        reader = create_user(cluster, far, "reader")
        assert run_cli("grant", fid, reader, api=cluster.nodes[0].api).returncode == 0
        v2 = await s0.Revise(taskworker_pb2.ReviseRequest(file_id=fid, file_data=b"b" * 9000))

        async def replicas_have_v2() -> bool:
            sets = disk_sets(cluster, fid)
            return all(any(v.id.hex() == v2.version for v in sets[i].valid()) for i in replicas)
        await until(replicas_have_v2, "v2 never reached both replicas")
        await asyncio.sleep(0.5)           # the manifest is taken right after the records
        g = await cluster.stub(far, Stub).Get(taskworker_pb2.GetRequest(file_id=fid,
                                                                        user_id="reader"))
        assert g.file_data == b"b" * 9000 and g.version == v2.version
        st = json.loads((await cluster.stub(far, taskworker_pb2_grpc.NodeServiceStub).Status(
            taskworker_pb2.StatusRequest())).json)["services"]["versions"]
        assert st["manifest_cache_hits"] == 1 and st["read_ahead_used"] == 1
        # the far node keeps what it verified: its next Get pulls only the new version
        pulled = st["records_pulled"]
        v3 = await s0.Revise(taskworker_pb2.ReviseRequest(file_id=fid, file_data=b"c" * 9000))

        async def replicas_have_v3() -> bool:
            sets = disk_sets(cluster, fid)
            return all(any(v.id.hex() == v3.version for v in sets[i].valid()) for i in replicas)
        await until(replicas_have_v3, "v3 never reached both replicas")
        g = await cluster.stub(far, Stub).Get(taskworker_pb2.GetRequest(file_id=fid,
                                                                        user_id="reader"))
        assert g.file_data == b"c" * 9000 and g.version == v3.version
        st = json.loads((await cluster.stub(far, taskworker_pb2_grpc.NodeServiceStub).Status(
            taskworker_pb2.StatusRequest())).json)["services"]["versions"]
        assert pulled >= 2 and st["records_pulled"] - pulled == 1


async def test_a_frozen_replica_counted_live_holds_nothing_up(tmp_path: Path) -> None:
    """A version replica frozen (SIGSTOP) while the mesh still counts it live (a slow liveness
    sweep here; a stuck disk in production): Revise, Get-latest and Synchronous leave it out
    after the sync's read tail (storage/tail.py, READ_TAIL_S), then as a suspect as soon as the
    others answered, instead of waiting CALL_TIMEOUT (10 s) for it each time; once it runs
    again, anti-entropy catches it up."""
    extra = ["--sweep-interval", "600", "--sync-interval", "0.5"]
    async with NodeCluster(tmp_path, 6, extra=extra) as cluster:
        ids = [(await cluster.peers_of(i)).self_id for i in range(6)]
        s0 = cluster.stub(0, Stub)
        r = await s0.Push(taskworker_pb2.PushRequest(file_data=b"v1", public=True))
        closest = await cluster.stub(0, taskworker_pb2_grpc.NodeServiceStub).Closest(
            taskworker_pb2.ClosestRequest(key=replica_key(parse_file_id(r.file_id)), n=3))
        frozen = next(i for i in (ids.index(p.node_id) for p in closest.peers) if i != 0)
        proc = cluster.nodes[frozen].proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            await s0.Revise(taskworker_pb2.ReviseRequest(file_id=r.file_id, file_data=b"v2"),
                            timeout=8)
            got = await s0.Get(taskworker_pb2.GetRequest(file_id=r.file_id), timeout=8)
            assert got.file_data == b"v2"
            await s0.Synchronous(taskworker_pb2.SynchronousRequest(file_id=r.file_id), timeout=8)
            status = json.loads((await cluster.stub(0, taskworker_pb2_grpc.NodeServiceStub)
                                 .Status(taskworker_pb2.StatusRequest())).json)
            versions = status["services"]["versions"]
            assert versions["replicas_cut"] >= 1
            assert versions["replicas_cut"] + versions["replicas_skipped"] >= 3
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
        v2 = cid_for(b"v2")

        async def caught_up() -> bool:
            return any(v.cid == v2 for v in disk_sets(cluster, r.file_id)[frozen].heads())
        await until(caught_up, "anti-entropy did not bring v2 to the replica that was frozen")


async def test_a_frozen_replica_is_cut_once_then_skipped_while_suspected(tmp_path: Path) -> None:
    """Read tails feed and consult the node's suspects (storage/tail.py, read_tail): the first
    sync with a replica frozen while counted live waits the read tail and cuts it
    (``replicas_cut`` +1), which makes it a suspect of the node; every later sync (Synchronous,
    Get-latest) still asks it but goes on as soon as the other replicas answered
    (``replicas_skipped`` +1 per sync, no further cut). No background syncs, so node 0's
    counters count only these calls; the first Synchronous, before the freeze, gives the pushed
    file its first version record (so each later one is a single sync)."""
    extra = ["--sweep-interval", "600", "--sync-interval", "0"]
    async with NodeCluster(tmp_path, 6, extra=extra) as cluster:
        ids = [(await cluster.peers_of(i)).self_id for i in range(6)]
        s0, n0 = cluster.stub(0, Stub), cluster.stub(0, taskworker_pb2_grpc.NodeServiceStub)
        r = await s0.Push(taskworker_pb2.PushRequest(file_data=b"v1", public=True))
        closest = await n0.Closest(taskworker_pb2.ClosestRequest(
            key=replica_key(parse_file_id(r.file_id)), n=3))
        frozen = next(i for i in (ids.index(p.node_id) for p in closest.peers) if i != 0)
        await s0.Synchronous(taskworker_pb2.SynchronousRequest(file_id=r.file_id))

        async def status() -> dict[str, object]:
            out: dict[str, object] = json.loads(
                (await n0.Status(taskworker_pb2.StatusRequest())).json)
            return out

        async def counts() -> tuple[int, int, int]:
            v = (await status())["services"]["versions"]   # type: ignore[index]
            return v["syncs"], v["replicas_cut"], v.get("replicas_skipped", 0)

        proc = cluster.nodes[frozen].proc
        assert proc is not None
        syncs0, cut0, skipped0 = await counts()
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            await s0.Synchronous(taskworker_pb2.SynchronousRequest(file_id=r.file_id), timeout=8)
            syncs1, cut1, skipped1 = await counts()
            assert (syncs1 - syncs0, cut1, skipped1) == (1, cut0 + 1, skipped0)
            storage = (await status())["services"]["storage"]       # type: ignore[index]
            assert ids[frozen][:16] in storage["suspect_peers"]
            got = await s0.Get(taskworker_pb2.GetRequest(file_id=r.file_id), timeout=8)
            assert got.file_data == b"v1"
            await s0.Synchronous(taskworker_pb2.SynchronousRequest(file_id=r.file_id), timeout=8)
            syncs2, cut2, skipped2 = await counts()
            assert syncs2 - syncs1 >= 2
            assert (cut2, skipped2) == (cut1, skipped1 + syncs2 - syncs1)
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
        # Resumed, it answers a sync before it is skipped now and then, which acquits it: it is
        # no longer a suspect well before SUSPECT_S (60 s) ran out.
        for _ in range(40):
            await s0.Synchronous(taskworker_pb2.SynchronousRequest(file_id=r.file_id), timeout=8)
            storage = (await status())["services"]["storage"]           # type: ignore[index]
            if ids[frozen][:16] not in storage["suspect_peers"]:
                break
            await asyncio.sleep(0.05)
        assert ids[frozen][:16] not in storage["suspect_peers"]
        assert (await counts())[1] == cut2          # and it was never cut again

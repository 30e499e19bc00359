"""A revoked writer re-signing at an old counter, on real `tw-mesh join` processes.

The revocation lists the writer's records the owner saw (GrantRecord.kept); a record the
writer signs afterwards, even at a counter it used before and with a vector below the
revocation's, is refused by every replica that has the revocation, and one that took it
before hearing of the revocation keeps it stored but invalid, so it never spreads.
"""

from __future__ import annotations

from pathlib import Path

from mesh.identity import Identity
from proto import taskworker_pb2, versions_pb2
from storage.cid import cid_for
from storage.versions.records import parse_file_id, record_id, sign_version, vector_of
from tests.support.nodes import NodeCluster
from tests.system.test_versions import (
    ENV,
    EXTRA,
    Stub,
    _peer_push,
    create_user,
    disk_sets,
    heads_everywhere,
    hooks,
    until,
    user_key,
)


async def test_a_revoked_writer_resigning_an_old_counter_is_refused_everywhere(
        tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 3, extra=EXTRA, env=ENV) as cluster:
        ids = [(await cluster.peers_of(i)).self_id for i in range(3)]
        s0, s1, s2 = (cluster.stub(i, Stub) for i in range(3))
        v1 = await s0.Push(taskworker_pb2.PushRequest(file_data=b"v1"))
        fid = v1.file_id
        bob_hex = create_user(cluster, 1, "bob")
        await s0.Grant(taskworker_pb2.GrantRequest(file_id=fid, grantee=bob_hex))
        b2 = await s1.Revise(taskworker_pb2.ReviseRequest(file_id=fid, file_data=b"bob v2",
                                                          user_id="bob"))
        o3 = await s0.Revise(taskworker_pb2.ReviseRequest(file_id=fid, file_data=b"owner v3"))
        await heads_everywhere(cluster, fid, 1)
        versions = {v.version for v in (await s0.Log(taskworker_pb2.LogRequest(
            file_id=fid))).versions}
        assert len(versions) == 3 and {b2.version, o3.version} <= versions

        # node 2 is cut off from the others: it hears of the revocation only later
        hooks(cluster, 0, block=[ids[2]])
        hooks(cluster, 1, block=[ids[2]])
        hooks(cluster, 2, block=[ids[0], ids[1]])
        await s0.Grant(taskworker_pb2.GrantRequest(file_id=fid, grantee=bob_hex, revoke=True))

        async def revoked_on_0_and_1() -> bool:
            return all(len(vs.grant_ids()) == 2 for vs in disk_sets(cluster, fid)[:2])
        await until(revoked_on_0_and_1, "the revocation did not reach nodes 0 and 1")

        # bob's key re-signs his version's slot (same parents and vector, other content): its
        # vector is below the revocation's, which is all a revocation used to check
        bob = Identity(user_key(cluster, 1, "bob"))
        old = disk_sets(cluster, fid)[0].get(bytes.fromhex(b2.version))
        assert old is not None
        late = sign_version(bob, old.record.file, cid_for(b"late"), vector_of(old.record.vector),
                            list(old.record.parents))
        bundle = versions_pb2.Bundle(file_id=parse_file_id(fid),
                                     records=[late.SerializeToString(deterministic=True)])
        for i in (0, 1):
            reply = await _peer_push(cluster, i, bundle)
            assert reply.accepted == 0 and "Revoked" in reply.refused[0], (i, reply)
        reply = await _peer_push(cluster, 2, bundle)     # no revocation there yet: taken
        assert reply.accepted == 1, reply

        # heal; node 2 gets the revocation, and full syncs from every node push each replica
        # whatever it lacks: the late record goes nowhere and counts nowhere
        for i in range(3):
            hooks(cluster, i)

        async def revoked_everywhere() -> bool:
            return all(len(vs.grant_ids()) == 2 for vs in disk_sets(cluster, fid))
        await until(revoked_everywhere, "the revocation did not reach node 2")
        for stub in (s2, s0, s1):
            await stub.Synchronous(taskworker_pb2.SynchronousRequest(file_id=fid))
        sets = disk_sets(cluster, fid)
        assert [record_id(late) in vs for vs in sets] == [False, False, True]
        assert all(vs.valid_ids() == {bytes.fromhex(v) for v in versions} for vs in sets)
        for stub in (s0, s1, s2):
            log = await stub.Log(taskworker_pb2.LogRequest(file_id=fid))
            assert {v.version for v in log.versions} == versions
            assert list(log.heads) == [o3.version]
        got = await s0.Get(taskworker_pb2.GetRequest(file_id=fid))
        assert got.file_data == b"owner v3" and got.version == o3.version and not got.conflicts
        # what bob wrote before the revocation stays readable by version
        got = await s0.Get(taskworker_pb2.GetRequest(file_id=fid, version=b2.version))
        assert got.file_data == b"bob v2"

"""A mesh member cannot make a CID unreadable with a manifest of its own (storage/reader.py:
a read tries the next manifest when one does not serve), on real node processes.

The attack, before the fallback: any member may store a manifest for any CID (the same content
may be pushed by several users, each with a manifest of their own). A fresh key with a sealed
channel copies a public file's manifest, signs it with its own key under a file_id of its own,
makes it newer and points every fragment at a hash nobody holds, and stores it on the nodes. A
read by CID ranked public and then newest manifests first, so every node that had not written
or read the file itself tried the attacker's and failed ("not enough fragments"); the CID check
kept wrong bytes out, but the file could not be read by its CID. Version content is read by
CID too, so a version of a public file could be made unreadable to everyone but its writer.
"""

from __future__ import annotations

import os
from pathlib import Path

from mesh.channel import ChannelPool
from mesh.identity import Identity
from proto import storage_pb2, taskworker_pb2
from storage.manifest import Manifest, sign_manifest, verify_manifest
from storage.peer import StorageClient
from tests.support.nodes import NodeCluster
from tests.system.test_storage import Stub, _get_stream, _ids, _status


def _junk_copy(victim: Manifest, attacker: Identity) -> storage_pb2.SignedManifest:
    body = storage_pb2.ManifestBody()
    body.CopyFrom(victim.body)
    body.owner_key = attacker.public_key
    body.file_id = "f" + os.urandom(16).hex()
    body.created_ms += 1_000_000                 # newer: ranked first before the fallback
    for stripe in body.stripes:
        for f in stripe.fragments:
            f.hash = os.urandom(len(f.hash))     # held nowhere
    return sign_manifest(body, attacker.signing_key)


async def test_a_member_s_junk_manifest_does_not_make_a_cid_unreadable(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 6, extra=["--sweep-interval", "600",
                                               "--sync-interval", "0"]) as cluster:
        ids = await _ids(cluster)
        stub = cluster.stub(0, Stub)
        data = os.urandom(300_000)
        r = await stub.Push(taskworker_pb2.PushRequest(file_data=data, public=True), timeout=60)
        v2 = os.urandom(200_000)
        rev = await stub.Revise(taskworker_pb2.ReviseRequest(file_id=r.file_id, file_data=v2),
                                timeout=60)
        attacker = Identity.generate()
        pool = ChannelPool(attacker)

        def client(i: int) -> StorageClient:
            return StorageClient.remote(cluster.nodes[i].member(pool, bytes.fromhex(ids[i])))

        try:
            for cid, file_id in ((r.cid, r.file_id), (rev.cid, None)):
                seen = [verify_manifest(s, cid) for i in range(6)
                        for s in await client(i).fetch_manifests(cid)]
                victim = next(m for m in seen if file_id is None or m.file_id == file_id)
                forged = _junk_copy(victim, attacker)
                for i in range(6):
                    await client(i).store_manifest(forged)
                assert any(verify_manifest(s, cid).body.owner_key == attacker.public_key
                           for s in await client(5).fetch_manifests(cid))

            # Nodes that never wrote nor read these files: unary Get, GetStream, Get-latest.
            got = await cluster.stub(5, Stub).Get(taskworker_pb2.GetRequest(file_id=r.cid))
            assert got.file_data == data and got.cid == r.cid
            assert await _get_stream(cluster.stub(4, Stub), r.cid) == (r.cid, data)
            latest = await cluster.stub(3, Stub).Get(taskworker_pb2.GetRequest(file_id=r.file_id))
            assert latest.file_data == v2 and latest.cid == rev.cid
            # The junk manifest is ranked last once it failed: node 5 does not try it again.
            before = (await _status(cluster, 5))["services"]["storage"]  # type: ignore[index]
            assert before["manifest_fallbacks"] == 1
            again = await cluster.stub(5, Stub).Get(taskworker_pb2.GetRequest(file_id=r.cid))
            assert again.file_data == data
            after = (await _status(cluster, 5))["services"]["storage"]  # type: ignore[index]
            assert after["manifest_fallbacks"] == 1
        finally:
            await pool.close()

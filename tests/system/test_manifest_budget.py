"""A mesh member cannot make a file's manifest unreadable by piling manifests of its own onto
the file's CID (storage/manifest.py: a replica keeps at most CID_BUDGET bytes of manifests per
CID), on real node processes.

The attack, before the budget: any member may sign manifests of its own for any CID (several
uploads of one content each have theirs), and one may be 32 MiB (a huge file's; a bytes field
like the sealed filename fills it just as well). A replica answers FetchManifests with every
manifest it keeps for the CID in one reply, and a reply is one channel frame (64 MiB): three
22 MiB manifests under the victim's CID on its manifest replicas made every FetchManifests of
that CID fail, so no node that did not have the manifest cached could read the file any more,
by CID or by file_id.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mesh.channel import ChannelPool
from mesh.channel.links import MAX_MESSAGE_BYTES
from mesh.errors import ResourceExhaustedError
from mesh.identity import Identity
from proto import storage_pb2, taskworker_pb2
from storage.documents import new_file_id
from storage.manifest import (
    CID_BUDGET,
    MAX_MANIFEST_BYTES,
    manifest_key,
    sign_manifest,
    verify_manifest,
)
from storage.peer import StorageClient
from tests.support.nodes import NodeCluster
from tests.system.test_delete_newest import _ranked
from tests.system.test_storage import Stub, _get_stream, _ids

JUNK = 22 * 2**20



def _member_client(cluster: NodeCluster, pool: ChannelPool, ids: list[str],
                   i: int) -> StorageClient:
    """Node ``i``'s storage peer service as the member holding ``pool``'s key reaches it."""
    return StorageClient.remote(cluster.nodes[i].member(pool, bytes.fromhex(ids[i])),
                                timeout=120)


async def test_manifests_piled_on_a_cid_cannot_hide_its_owner_s_manifest(
        tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 6, extra=["--sweep-interval", "600"]) as cluster:
        ids = await _ids(cluster)
        data = os.urandom(200_000)
        r = await cluster.stub(0, Stub).Push(
            taskworker_pb2.PushRequest(file_data=data, public=True), timeout=60)
        attacker = Identity.generate()
        pool = ChannelPool(attacker)

        def client(i: int) -> StorageClient:
            return _member_client(cluster, pool, ids, i)

        replicas = _ranked(ids, manifest_key(r.cid))[:3]
        try:
            victim = next(m for m in (verify_manifest(s, r.cid) for s in
                                      await client(replicas[0]).fetch_manifests(r.cid))
                          if m.file_id == r.file_id)
            stored = refused = 0
            for _ in range(3):
                body = storage_pb2.ManifestBody()
                body.CopyFrom(victim.body)
                body.owner_key = attacker.public_key
                body.file_id = new_file_id(attacker.public_key)[0]
                body.filename_sealed = os.urandom(JUNK)
                junk = sign_manifest(body, attacker.signing_key)
                for i in replicas:
                    try:
                        await client(i).store_manifest(junk)
                        stored += 1
                    except ResourceExhaustedError:
                        refused += 1
            for i in replicas:                   # every replica still answers for the CID
                assert any(verify_manifest(s, r.cid).file_id == r.file_id
                           for s in await client(i).fetch_manifests(r.cid))
            # a node that never saw the file reads it from the replicas
            reader = next(i for i in range(1, 6) if i not in replicas)
            stub = cluster.stub(reader, Stub)
            assert (await _get_stream(stub, r.file_id))[1] == data
            assert refused > 0 and stored * JUNK <= 3 * CID_BUDGET
        finally:
            await pool.close()


def test_the_budget_holds_the_largest_manifest_and_fits_one_frame() -> None:
    assert MAX_MANIFEST_BYTES <= CID_BUDGET < MAX_MESSAGE_BYTES - 2**20


def _junk(victim: storage_pb2.ManifestBody, attacker: Identity, size: int
          ) -> storage_pb2.SignedManifest:
    """A manifest of the attacker's own (a fresh file_id, no document record) under the
    victim's CID, ``size`` bytes signed (give or take the length prefix's bytes)."""
    body = storage_pb2.ManifestBody()
    body.CopyFrom(victim)
    body.owner_key = attacker.public_key
    body.file_id = new_file_id(attacker.public_key)[0]
    body.filename_sealed = b""
    bare = len(sign_manifest(body, attacker.signing_key).SerializeToString())
    body.filename_sealed = os.urandom(max(0, size - bare - 8))
    return sign_manifest(body, attacker.signing_key)


async def test_the_owner_s_manifest_makes_room_in_a_budget_a_member_filled(
        tmp_path: Path) -> None:
    """The budget is no longer first come: a node that is not yet one of the CID's manifest
    replicas (as after churn) has its CID budget filled by a member; the owner's manifest
    (as repair copies it) still lands there, dropping the member's, and the file reads."""
    async with NodeCluster(tmp_path, 6, extra=["--sweep-interval", "600"]) as cluster:
        ids = await _ids(cluster)
        data = os.urandom(200_000)
        r = await cluster.stub(0, Stub).Push(
            taskworker_pb2.PushRequest(file_data=data, public=True), timeout=60)
        attacker = Identity.generate()
        pool = ChannelPool(attacker)

        def client(i: int) -> StorageClient:
            return _member_client(cluster, pool, ids, i)

        try:
            ranked = _ranked(ids, manifest_key(r.cid))
            genuine = next(m for m in (verify_manifest(s, r.cid) for s in
                                       await client(ranked[0]).fetch_manifests(r.cid))
                           if m.file_id == r.file_id)
            spare = -1
            for i in ranked[3:]:
                if i != 0 and not await client(i).fetch_manifests(r.cid):
                    spare = i
                    break
            assert spare >= 0
            size = len(genuine.signed.SerializeToString())
            held = 0
            while held < CID_BUDGET - size:          # fill it: no room for the owner's one
                junk = _junk(genuine.body, attacker, min(JUNK, CID_BUDGET - held - 16))
                await client(spare).store_manifest(junk)
                held += len(junk.SerializeToString())
            assert held <= CID_BUDGET
            with pytest.raises(ResourceExhaustedError):     # a member cannot evict
                await client(spare).store_manifest(_junk(genuine.body, attacker, 2 * size))

            await client(spare).store_manifest(genuine.signed)
            kept = [verify_manifest(s, r.cid) for s in await client(spare).fetch_manifests(r.cid)]
            assert genuine.signed in [m.signed for m in kept]
            assert sum(len(m.signed.SerializeToString()) for m in kept) <= CID_BUDGET
            assert (await _get_stream(cluster.stub(spare, Stub), r.file_id))[1] == data
        finally:
            await pool.close()

"""A manifest replica's (CID, file_id) slot taken by a member is given back to the file's owner
(storage/record_handlers.py), on real node processes.

The attack, before: nothing in a manifest binds its file_id to its signer, and a replica kept
the first signer it saw for a (CID, file_id). A member who learned a file_id (it is in every
manifest any member may fetch) stored a manifest of its own for that slot on a node that did
not hold the owner's manifest yet — e.g. one that becomes a manifest replica when a replica
dies — and the owner's manifest (repair's copy, the owner's next Grant) was refused there with
PERMISSION_DENIED for good: one manifest replica fewer for the file, silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mesh.channel import ChannelPool
from mesh.errors import PermissionDeniedError
from mesh.identity import Identity
from proto import storage_pb2, taskworker_pb2
from storage.manifest import manifest_key, sign_manifest, verify_manifest
from storage.peer import StorageClient
from tests.support.nodes import NodeCluster
from tests.system.test_storage import Stub, _ids


def _ranked(ids: list[str], key: bytes) -> list[int]:
    k = int.from_bytes(key, "big")
    return sorted(range(len(ids)), key=lambda i: int(ids[i], 16) ^ k)


async def test_the_owner_s_manifest_replaces_a_member_s_in_a_squatted_slot(
        tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 6, extra=["--sweep-interval", "600"]) as cluster:
        ids = await _ids(cluster)
        r = await cluster.stub(0, Stub).Push(
            taskworker_pb2.PushRequest(file_data=os.urandom(100_000)), timeout=60)
        attacker = Identity.generate()
        pool = ChannelPool(attacker)

        def client(i: int) -> StorageClient:
            return StorageClient.remote(cluster.nodes[i].member(pool, bytes.fromhex(ids[i])))

        try:
            replicas = _ranked(ids, manifest_key(r.cid))
            owners = [verify_manifest(s, r.cid) for s in
                      await client(replicas[0]).fetch_manifests(r.cid)]
            genuine = next(m for m in owners if m.file_id == r.file_id)
            # A node that holds no manifest of the CID yet (not one of the m+1 = 3 replicas).
            spare = -1
            for i in replicas[3:]:
                if not await client(i).fetch_manifests(r.cid):
                    spare = i
                    break
            assert spare >= 0
            body = storage_pb2.ManifestBody()
            body.CopyFrom(genuine.body)
            body.owner_key = attacker.public_key
            body.created_ms += 1_000_000
            await client(spare).store_manifest(sign_manifest(body, attacker.signing_key))
            held = [verify_manifest(s, r.cid) for s in await client(spare).fetch_manifests(r.cid)]
            assert [m.body.owner_key for m in held] == [attacker.public_key]

            # The owner's signed manifest (as repair copies it) takes the slot back.
            await client(spare).store_manifest(genuine.signed)
            held = [verify_manifest(s, r.cid) for s in await client(spare).fetch_manifests(r.cid)]
            assert [m.body.owner_key for m in held] == [genuine.body.owner_key]
            assert held[0].signed.SerializeToString() == genuine.signed.SerializeToString()

            # And the member cannot take it again: the owner is now the one kept.
            body.created_ms += 1
            with pytest.raises(PermissionDeniedError, match="another owner"):
                await client(spare).store_manifest(sign_manifest(body, attacker.signing_key))
        finally:
            await pool.close()

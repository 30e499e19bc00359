"""A mesh member cannot have holders drop another user's fragments with a manifest it signed
itself (storage/delete_check.py: the manifest must be signed by the file's owner), on real
node processes.

The attack, before the check: a fresh key with a sealed channel, as any member has, reads the
victim's manifest (any member may: it is how readers find fragments), copies its stripes into a
manifest of its own signed with its own key, naming the victim's file_id but a CID of its own
choice, with no holder recorded, and stores that on the nodes as the manifest of that CID (the
(CID, file_id) pair is new, so every replica accepts it). Then it sends each recorded holder a
DeleteFragment of the victim's fragment, with that manifest: the manifest verifies, is "the
file's", names the fragment and records it nowhere; the only manifests of that CID with that
file_id and owner are the attacker's own, so nothing newer keeps it, and the holder dropped
the victim's reference and with it the blob: every copy of the file was gone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mesh.channel import ChannelPool
from mesh.errors import PermissionDeniedError
from mesh.identity import Identity
from proto import storage_pb2, taskworker_pb2
from storage.cid import cid_for
from storage.manifest import NO_HOLDER, sign_manifest, verify_manifest
from storage.peer import StorageClient
from tests.support.nodes import NodeCluster
from tests.system.test_storage import Stub, _get_stream, _ids


async def test_a_manifest_signed_by_another_key_cannot_delete_the_owner_s_fragments(
        tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 6, extra=["--sweep-interval", "600"]) as cluster:
        ids = await _ids(cluster)
        stub = cluster.stub(0, Stub)
        data = os.urandom(300_000)
        r = await stub.Push(taskworker_pb2.PushRequest(file_data=data), timeout=60)
        attacker = Identity.generate()
        pool = ChannelPool(attacker)

        def client(i: int) -> StorageClient:
            return StorageClient.remote(cluster.nodes[i].member(pool, bytes.fromhex(ids[i])))

        try:
            seen = [verify_manifest(s, r.cid) for i in range(6)
                    for s in await client(i).fetch_manifests(r.cid)]
            victim = next(m for m in seen if m.file_id == r.file_id)
            body = storage_pb2.ManifestBody()
            body.CopyFrom(victim.body)
            body.owner_key = attacker.public_key
            body.cid = cid_for(b"the attacker's own content " + os.urandom(8))
            body.created_ms += 1_000_000
            for stripe in body.stripes:
                for f in stripe.fragments:
                    f.holder = NO_HOLDER
            forged = sign_manifest(body, attacker.signing_key)
            for i in range(6):                      # any CID's replicas take a new pair
                await client(i).store_manifest(forged)

            targets = [(victim.holder_of(s, i), bytes(f.hash))
                       for s, stripe in enumerate(victim.body.stripes)
                       for i, f in enumerate(stripe.fragments)]
            for holder, digest in targets:
                assert holder is not None
                at = client(ids.index(holder.hex()))
                with pytest.raises(PermissionDeniedError, match="owner"):
                    await at.delete_fragment(digest, r.file_id, forged)
                assert await at.has_fragments([digest], deep=True) == [True]
            st = await stub.Stat(taskworker_pb2.StatRequest(file_id=r.cid))
            assert st.health == "healthy"
            assert (await _get_stream(stub, r.file_id))[1] == data
        finally:
            await pool.close()

"""A mesh member cannot freeze a storage node with the version history of a file of its own
(storage/versions/vset.py, grants.py), on real node processes.

Any key owns the files it makes and may sign any history for them; any storage node takes a
versions.Push for any file and answers any versions.Digest, on its event loop. Before: each
record of a push recomputed the file's whole valid set, so one ~1 MB Push of a 6,000-version
chain held the node's event loop for tens of seconds (100,000 records, the per-push limit:
hours), and each Digest of a file with thousands of concurrent leaves compared every pair of
them again (seconds per Digest, as often as the member asked).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from mesh.channel import ChannelPool
from mesh.identity import Identity
from proto import mesh_pb2, taskworker_pb2, taskworker_pb2_grpc, versions_pb2
from storage.versions.records import encode
from storage.versions.vset import MAX_HEADS
from tests.support.nodes import NodeCluster
from tests.support.version_floods import chain, leaves
from tests.system.test_storage import _ids


async def channel_port(cluster: NodeCluster) -> int:
    """Node 0's TCP channel port: members reach it on the transport it advertises (its gRPC
    peer port takes no message over 4 KiB beside it)."""
    status = await cluster.stub(0, taskworker_pb2_grpc.NodeServiceStub).Status(
        taskworker_pb2.StatusRequest())
    port: int = json.loads(status.json)["channel_port"]
    return port


async def test_a_members_own_version_history_cannot_freeze_a_replica(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 2) as cluster:
        ids = await _ids(cluster)
        pool = ChannelPool(Identity.generate())
        peer = pool.peer(bytes.fromhex(ids[0]), cluster.nodes[0].peer,
                         await channel_port(cluster))
        try:
            binding, records = chain(Identity.generate(), 6000)
            bundle = versions_pb2.Bundle(file_id=binding.file_id,
                                         records=[encode(r) for r in records])
            t = time.monotonic()
            reply = versions_pb2.PushReply.FromString(await peer.unary(
                "versions.Push", bundle.SerializeToString(), timeout=120))
            took = time.monotonic() - t
            assert reply.accepted == 6000 and not reply.refused
            assert took < 6, f"a 6,000-record push held the replica {took:.1f} s"

            binding, grants, records = leaves(Identity.generate(), 1500)
            bundle = versions_pb2.Bundle(file_id=binding.file_id,
                                         grants=[encode(g) for g in grants],
                                         records=[encode(r) for r in records])
            await peer.unary("versions.Push", bundle.SerializeToString(), timeout=120)
            ask = versions_pb2.DigestRequest(file_id=binding.file_id).SerializeToString()
            t = time.monotonic()
            for _ in range(5):
                d = versions_pb2.Digest.FromString(
                    await peer.unary("versions.Digest", ask, timeout=120))
                assert len(d.heads) == MAX_HEADS and len(d.record_ids) == 3000
            took = time.monotonic() - t
            assert took < 6, f"5 Digests of a file with 1,500 leaves took {took:.1f} s"
        finally:
            await pool.close()


async def test_a_node_answers_calls_while_it_checks_a_large_push(tmp_path: Path) -> None:
    """A Push's signatures are checked off the node's event loop (storage/versions/
    precheck.py): while one of 10,000 records is being checked, the same node answers
    mesh.Status calls (which count the Pushes being checked). Before, the whole Push was
    checked on the loop (~50-70 µs a record; 100,000 records, the limit: seconds), and no
    call could be answered in between: no Status could ever see a Push being checked."""
    async with NodeCluster(tmp_path, 2) as cluster:
        ids = await _ids(cluster)
        pool = ChannelPool(Identity.generate())
        peer = pool.peer(bytes.fromhex(ids[0]), cluster.nodes[0].peer,
                         await channel_port(cluster))
        try:
            binding, records = chain(Identity.generate(), 10_000)
            bundle = versions_pb2.Bundle(file_id=binding.file_id,
                                         records=[encode(r) for r in records])
            during = answered = 0
            async with asyncio.TaskGroup() as tg:
                push = tg.create_task(peer.unary("versions.Push", bundle.SerializeToString(),
                                                 timeout=300))
                while not push.done():
                    status = json.loads(mesh_pb2.StatusReply.FromString(
                        await peer.unary("mesh.Status", b"", timeout=300)).json)
                    answered += 1
                    during += status["services"]["versions"]["pushes_verifying"] > 0
            reply = versions_pb2.PushReply.FromString(push.result())
            assert reply.accepted == 10_000 and not reply.refused
            assert during > 0, f"{answered} Status calls, none while the Push was checked"
        finally:
            await pool.close()

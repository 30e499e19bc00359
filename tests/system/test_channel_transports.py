"""Nodes with and without the channel's TCP transport in one mesh: each reaches the other on
the transport the other advertises, and both carry real storage traffic."""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import pytest

from proto import taskworker_pb2 as pb
from proto import taskworker_pb2_grpc as pbg
from tests.support.nodes import NodeCluster


async def _channel_port(cluster: NodeCluster, index: int) -> int:
    status = await cluster.stub(index, pbg.NodeServiceStub).Status(pb.StatusRequest())
    port: int = json.loads(status.json)["channel_port"]
    return port


async def test_grpc_only_and_tcp_nodes_interoperate(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 3) as cluster:
        await cluster.add(3, extra=["--no-tcp-channel"])
        await cluster.wait_converged()
        ports = [await _channel_port(cluster, i) for i in range(6)]
        assert all(ports[:3]) and ports[3:] == [0, 0, 0]
        # (4,2) over six nodes: every fragment set spans both kinds of node, both directions
        for pusher in (0, 4):
            data = os.urandom(300_000)
            pushed = await cluster.stub(pusher, pbg.FileServiceStub).Push(
                pb.PushRequest(file_data=data, public=True), timeout=60)
            assert not pushed.under_replicated, pushed.warnings
            for reader in (1, 3, 5):
                got = await cluster.stub(reader, pbg.FileServiceStub).Get(
                    pb.GetRequest(file_id=pushed.cid), timeout=60)
                assert got.file_data == data
        stat = await cluster.stub(2, pbg.FileServiceStub).Stat(pb.StatRequest(file_id=pushed.cid))
        assert stat.health == "healthy"


async def test_the_grpc_peer_port_beside_tcp_takes_no_large_message(tmp_path: Path) -> None:
    """A node serving the channel over TCP gets nothing large on its gRPC peer port (members
    use the TCP port its record names), so an unauthenticated client cannot park 64 MiB
    messages there; a gRPC-only node still takes them (its peers' fragments come that way)."""
    big = b"\x0a" + b"\xff" * 3 + b"\x7f" + os.urandom(2**20)  # a field announcing ~1 MiB
    async with NodeCluster(tmp_path, 1) as cluster:
        await cluster.add(1, extra=["--no-tcp-channel"])
        codes = []
        for node in cluster.nodes:
            async with grpc.aio.insecure_channel(node.peer) as channel:
                for method in ("Handshake", "Call"):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await channel.unary_unary(f"/twmesh.peer.PeerChannel/{method}")(
                            big, timeout=30)
                    codes.append(info.value.code())
        beside_tcp, grpc_only = codes[:2], codes[2:]
        assert beside_tcp == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
        assert grpc.StatusCode.RESOURCE_EXHAUSTED not in grpc_only, grpc_only

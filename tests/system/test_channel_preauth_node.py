"""A real node's TCP channel port against a connector that never authenticates
(mesh/channel/tcp_preauth.py): a 64 MiB message header is refused unread, and more silent
connections than the pending cap do not keep the node's peers out."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import grpc

from mesh.channel.tcp_preauth import MAX_PENDING
from mesh.channel.tcp_wire import ABORT, CALL, HEADER, decode_abort
from proto import taskworker_pb2 as pb
from proto import taskworker_pb2_grpc as pbg
from tests.support.nodes import NodeCluster


async def test_a_node_refuses_unauthenticated_bulk_and_still_serves_its_peers(
        tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 3) as cluster:
        await cluster.wait_converged()
        status = await cluster.stub(0, pbg.NodeServiceStub).Status(pb.StatusRequest())
        port = json.loads(status.json)["channel_port"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEADER.pack(64 * 2**20, CALL) + os.urandom(16))
        async with asyncio.timeout(30):
            answer = await reader.read()                # the ABORT, then the node's EOF
        writer.close()
        size, kind = HEADER.unpack_from(answer)
        assert kind == ABORT and len(answer) == HEADER.size + size
        code, message = decode_abort(answer[HEADER.size:])
        assert code == grpc.StatusCode.UNAUTHENTICATED.value[0]
        assert "before authentication" in message
        silent = [await asyncio.open_connection("127.0.0.1", port)
                  for _ in range(MAX_PENDING + 16)]
        try:
            data = os.urandom(200_000)
            pushed = await cluster.stub(1, pbg.FileServiceStub).Push(
                pb.PushRequest(file_data=data, public=True), timeout=60)
            for index in (0, 2):
                got = await cluster.stub(index, pbg.FileServiceStub).Get(
                    pb.GetRequest(file_id=pushed.cid), timeout=60)
                assert got.file_data == data
            async with asyncio.timeout(30):             # the oldest were closed to make room
                assert await silent[0][0].read() == b""
        finally:
            for _, w in silent:
                w.close()

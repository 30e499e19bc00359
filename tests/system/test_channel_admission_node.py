"""A real node's TCP channel port against one address making handshakes (mesh/channel/
admission.py): a replayed request is refused, a flood of fresh ones is refused past the burst
(RESOURCE_EXHAUSTED), and the node's peers, on another address, keep working."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import grpc

from mesh.channel.admission import HANDSHAKE_BURST
from mesh.channel.handshake import ClientHandshake
from mesh.channel.tcp_wire import ABORT, HANDSHAKE, HEADER, decode_abort
from mesh.identity import Identity
from proto import taskworker_pb2 as pb
from proto import taskworker_pb2_grpc as pbg
from tests.support.nodes import NodeCluster

FLOOD = 1000
_CODES = {code.value[0]: code for code in grpc.StatusCode}


async def _answers(port: int, requests: list[bytes]) -> list[tuple[int, grpc.StatusCode | None]]:
    """Send the requests back to back on one connection from 127.0.0.2 (another source than
    the node's peers); each answer's kind and, for an ABORT, its code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                   local_addr=("127.0.0.2", 0))
    writer.write(b"".join(HEADER.pack(len(r), HANDSHAKE) + r for r in requests))
    answers: list[tuple[int, grpc.StatusCode | None]] = []
    try:
        async with asyncio.timeout(60):
            for _ in requests:
                size, kind = HEADER.unpack(await reader.readexactly(HEADER.size))
                body = await reader.readexactly(size)
                answers.append((kind, _CODES[decode_abort(body)[0]] if kind == ABORT else None))
    finally:
        writer.close()
    return answers


async def test_a_node_refuses_a_handshake_flood_and_a_replay_and_still_serves_its_peers(
        tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 3) as cluster:
        await cluster.wait_converged()
        status = json.loads((await cluster.stub(0, pbg.NodeServiceStub).Status(
            pb.StatusRequest())).json)
        port, node_id = status["channel_port"], bytes.fromhex(status["node_id"])
        me = Identity.generate()
        replayed = ClientHandshake(me, node_id).request.SerializeToString()
        assert await _answers(port, [replayed, replayed]) == [
            (HANDSHAKE, None), (ABORT, grpc.StatusCode.UNAUTHENTICATED)]
        flood = [ClientHandshake(me, node_id).request.SerializeToString() for _ in range(FLOOD)]
        answers = await _answers(port, flood)
        answered = [a for a in answers if a == (HANDSHAKE, None)]
        refused = [a for a in answers if a == (ABORT, grpc.StatusCode.RESOURCE_EXHAUSTED)]
        assert len(answered) + len(refused) == FLOOD
        assert refused and len(answered) < FLOOD - HANDSHAKE_BURST   # before: all answered
        data = os.urandom(200_000)
        pushed = await cluster.stub(1, pbg.FileServiceStub).Push(
            pb.PushRequest(file_data=data, public=True), timeout=60)
        for index in (0, 2):
            got = await cluster.stub(index, pbg.FileServiceStub).Get(
                pb.GetRequest(file_id=pushed.cid), timeout=60)
            assert got.file_data == data

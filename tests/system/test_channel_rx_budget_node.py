"""A real node's TCP channel port against a peer with a throwaway key that announces 64 MiB
frames on several connections and trickles them (mesh/channel/tcp_budget.py, default limits):
the node holds at most the key's share, its peers keep working meanwhile, and the trickling
payloads are dropped at the first rate check (30 s)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from mesh.channel.handshake import ClientHandshake
from mesh.channel.tcp_budget import PEER_SHARE, STALL_S
from mesh.channel.tcp_wire import CALL, HANDSHAKE, HEADER, read_message, write_message
from mesh.identity import Identity
from proto import peer_pb2
from proto import taskworker_pb2 as pb
from proto import taskworker_pb2_grpc as pbg
from tests.support.nodes import NodeCluster

ANNOUNCED = 64 * 2**20
Raw = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _open(port: int) -> Raw:
    """From 127.0.0.2: another source than the node's peers."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))


async def _receive(cluster: NodeCluster) -> dict[str, Any]:
    status = await cluster.stub(0, pbg.NodeServiceStub).Status(pb.StatusRequest())
    receive: dict[str, Any] = json.loads(status.json)["channel"]["receive"]
    return receive


async def _trickle(raws: list[Raw], stop: asyncio.Event) -> None:
    """A byte per connection each second: the idle timer never fires, the rate check does."""
    while not stop.is_set():
        for _, writer in raws:
            if not writer.is_closing():
                writer.write(b"\x00")
        try:
            async with asyncio.timeout(1.0):
                await stop.wait()
        except TimeoutError:
            pass


async def test_a_node_holds_one_key_s_share_of_trickled_64_mib_frames_and_drops_them(
        tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 3) as cluster:
        await cluster.wait_converged()
        status = json.loads((await cluster.stub(0, pbg.NodeServiceStub).Status(
            pb.StatusRequest())).json)
        port, node_id = status["channel_port"], bytes.fromhex(status["node_id"])
        hello_raw = await _open(port)
        hello = ClientHandshake(Identity.generate(), node_id)
        write_message(hello_raw[1], HANDSHAKE, hello.request.SerializeToString())
        kind, body = await read_message(hello_raw[0])
        assert kind == HANDSHAKE
        session_id = hello.finish(peer_pb2.HandshakeResponse.FromString(body)).session_id
        raws = []
        for _ in range(3):                  # 192 MiB announced; two fit the key's share
            raw = await _open(port)
            raw[1].write(HEADER.pack(ANNOUNCED, CALL) + session_id + os.urandom(984))
            raws.append(raw)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_trickle(raws, stop))
            async with asyncio.timeout(20):
                while (receive := await _receive(cluster))["waiting"] != 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            assert receive["held"] == 2 * ANNOUNCED <= PEER_SHARE      # before: 3 x 64 MiB
            data = os.urandom(3 * 2**20)    # fragments over 16 KiB: charged, and not waiting
            pushed = await cluster.stub(1, pbg.FileServiceStub).Push(
                pb.PushRequest(file_data=data, public=True), timeout=60)
            for index in (0, 2):
                got = await cluster.stub(index, pbg.FileServiceStub).Get(
                    pb.GetRequest(file_id=pushed.cid), timeout=60)
                assert got.file_data == data
            assert (await _receive(cluster))["waiting"] == 1
            async with asyncio.timeout(STALL_S + 30):   # the first check drops both
                while (receive := await _receive(cluster))["stalled"] < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.5)
            stop.set()
        assert receive["wait_closed"] == 0 and receive["max_held"] < 3 * ANNOUNCED
        for _, writer in [hello_raw, *raws]:
            writer.close()

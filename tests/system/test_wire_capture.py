"""Issue 3 (5a): between nodes, only ciphertext. A raw AF_PACKET capture of loopback while a
1 MiB file is pushed and fetched and a function is called, both carrying a random marker."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import pytest

from compute import values
from proto import taskworker_pb2, taskworker_pb2_grpc
from tests.support.capture import LoopbackCapture, can_capture
from tests.support.nodes import NodeCluster, run_cli
from tests.system.test_compute import call_when_ready

pytestmark = pytest.mark.skipif(not can_capture(), reason="AF_PACKET capture needs root")

ECHO = '''
from taskworker import TaskWorker

worker = TaskWorker("echo")

@worker.function("echo")
def echo(text):
    return {"echoed": text}
'''


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


async def test_marker_never_on_the_wire_between_nodes(tmp_path: Path) -> None:
    marker = os.urandom(32)
    module = tmp_path / "echo.py"
    module.write_text(ECHO)
    async with NodeCluster(tmp_path, 3) as cluster:
        # The caller offers storage only, so a function call must be forwarded to a peer.
        caller = (await cluster.add(1, extra=["--sweep-interval", "0.5", "--role", "storage"]))[0]
        await cluster.wait_converged()
        out = await asyncio.to_thread(run_cli, "deploy", str(module), api=cluster.nodes[0].api)
        assert out.returncode == 0, out.stderr
        peer_ports = {_port(n.peer) for n in cluster.nodes}
        for i in range(len(cluster.nodes)):     # the channel's TCP transport listens apart
            status = await cluster.stub(i, taskworker_pb2_grpc.NodeServiceStub).Status(
                taskworker_pb2.StatusRequest())
            peer_ports.add(json.loads(status.json)["channel_port"])
        assert 0 not in peer_ports
        api_port = {_port(caller.api)}
        files = cluster.stub(3, taskworker_pb2_grpc.FileServiceStub)
        rpc = cluster.stub(3, taskworker_pb2_grpc.RPCServiceStub)
        data = bytearray(os.urandom(1 << 20))
        for offset in (0, 4096, 500_000, len(data) - 32):
            data[offset:offset + 32] = marker
        with LoopbackCapture(peer_ports | api_port) as cap:
            pushed = await files.Push(taskworker_pb2.PushRequest(file_data=bytes(data),
                                                                 filename="secret.bin"))
            got = await files.Get(taskworker_pb2.GetRequest(file_id=pushed.cid))
            assert got.file_data == bytes(data)
            resp = await call_when_ready(rpc, "echo", marker.hex())
            assert values.from_value(resp.result) == {"echoed": marker.hex()}
            await asyncio.sleep(0.5)                    # let the capture thread drain
        me = (await cluster.peers_of(3)).self_id
        assert resp.node_id and resp.node_id != me, "the call was not forwarded to a peer"
        # Positive control: the local API (client ↔ node, plaintext by design) shows the marker,
        # so the capture does see these flows.
        assert cap.contains(marker, api_port) and cap.contains(marker.hex().encode(), api_port)
        # Fragments and the call did cross the peer ports ...
        assert cap.bytes_on(peer_ports) > (1 << 20)
        # ... and none of it in clear, in any encoding.
        for needle in (marker, marker.hex().encode(), base64.b64encode(marker)):
            assert not cap.contains(needle, peer_ports)

"""Local-API servicer for NodeService (membership and status); thin, delegates to the Node."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import grpc

from proto import taskworker_pb2, taskworker_pb2_grpc

if TYPE_CHECKING:
    from taskworker.node import Node

Context = grpc.aio.ServicerContext[Any, Any]


class NodeServicer(taskworker_pb2_grpc.NodeServiceServicer):
    def __init__(self, node: Node) -> None:
        self._node = node
        self._leaving: asyncio.Task[None] | None = None

    def add_to(self, server: grpc.aio.Server) -> None:
        taskworker_pb2_grpc.add_NodeServiceServicer_to_server(self, server)

    async def Peers(self, request: taskworker_pb2.PeersRequest,
                    context: Context) -> taskworker_pb2.PeersResponse:
        membership = self._node.membership
        peers = membership.live_peers() if membership else []
        return taskworker_pb2.PeersResponse(
            self_id=self._node.identity.node_id_hex,
            peers=[taskworker_pb2.PeerInfo(node_id=p.node_id.hex(), address=p.address,
                                           last_seen=p.last_seen, roles=list(p.roles), alive=True)
                   for p in sorted(peers, key=lambda p: p.node_id)])

    async def Closest(self, request: taskworker_pb2.ClosestRequest,
                      context: Context) -> taskworker_pb2.PeersResponse:
        membership = self._node.membership
        if membership is None or len(request.key) != 20 or not 0 < request.n <= 1000:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "key must have 20 bytes and n be in 1..1000")
            raise AssertionError("unreachable")
        records = await membership.closest_peers(request.key, request.n)
        return taskworker_pb2.PeersResponse(
            self_id=self._node.identity.node_id_hex,
            peers=[taskworker_pb2.PeerInfo(node_id=r.node_id.hex(), address=r.address,
                                           roles=list(r.roles), alive=True) for r in records])

    async def Status(self, request: taskworker_pb2.StatusRequest,
                     context: Context) -> taskworker_pb2.StatusResponse:
        return taskworker_pb2.StatusResponse(json=json.dumps(self._node.status()))

    async def Leave(self, request: taskworker_pb2.LeaveRequest,
                    context: Context) -> taskworker_pb2.LeaveResponse:
        moved = 0
        if request.drain:
            for service in self._node.services:
                drain = getattr(service, "drain", None)
                if drain is not None:
                    moved += int(await drain())
        # Stop after this reply is sent; the task is kept so it is not garbage-collected.
        self._leaving = asyncio.get_running_loop().create_task(self._stop_soon())
        return taskworker_pb2.LeaveResponse(ok=True, fragments_moved=moved)

    async def _stop_soon(self) -> None:
        await asyncio.sleep(0.2)
        self._node.shutdown.set()

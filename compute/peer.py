"""Typed client for the compute peer methods (over the sealed channel), and their names.

    compute.Call       CallRequest -> CallReply (errors of the function travel in the reply)
    compute.StoreCode  StoreCodeRequest -> StoreCodeReply (content-addressed, CID verified)
    compute.FetchCode  FetchCodeRequest -> FetchCodeReply
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import Message

from mesh.channel import PeerChannel
from mesh.wire import parse_message
from proto import compute_pb2

CALL = "compute.Call"
STORE_CODE = "compute.StoreCode"
FETCH_CODE = "compute.FetchCode"
M = TypeVar("M", bound=Message)


def parse(cls: type[M], body: bytes) -> M:
    return parse_message(cls, body)


class ComputePeer:
    """Compute calls to one peer."""

    def __init__(self, channel: PeerChannel) -> None:
        self.channel = channel

    async def call(self, request: compute_pb2.CallRequest, *, timeout: float
                   ) -> compute_pb2.CallReply:
        body = await self.channel.unary(CALL, request.SerializeToString(), timeout=timeout)
        return parse(compute_pb2.CallReply, body)

    async def store_code(self, cid: str, code: bytes, *, timeout: float = 10.0) -> bool:
        body = await self.channel.unary(
            STORE_CODE, compute_pb2.StoreCodeRequest(cid=cid, code=code).SerializeToString(),
            timeout=timeout)
        return parse(compute_pb2.StoreCodeReply, body).stored

    async def fetch_code(self, cid: str, *, timeout: float = 10.0) -> bytes | None:
        body = await self.channel.unary(
            FETCH_CODE, compute_pb2.FetchCodeRequest(cid=cid).SerializeToString(),
            timeout=timeout)
        reply = parse(compute_pb2.FetchCodeReply, body)
        return reply.code if reply.found else None

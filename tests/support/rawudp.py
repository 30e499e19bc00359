"""A bare UDP sender speaking the kademlia (rpcudp) wire format: ``0x00 | msg id (20) |
msgpack([name, args])`` for requests, ``0x01 | msg id | msgpack(answer)`` for answers.

It never answers anything (so it is never admitted: the IDENTIFY requests a node sends it are
only counted), and it records the size of every answer, to measure what a node sends back to
an address that proved nothing.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import umsgpack  # type: ignore[import-untyped]


class RawPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.node_id = os.urandom(20)
        self.waiting: dict[bytes, asyncio.Future[tuple[int, Any]]] = {}
        self.requests: list[str] = []          # names of the requests nodes sent us

    @classmethod
    async def open(cls) -> RawPeer:
        loop = asyncio.get_running_loop()
        transport, peer = await loop.create_datagram_endpoint(
            cls, local_addr=("127.0.0.1", 0))
        peer.transport = transport
        return peer

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:1] == b"\x00":
            self.requests.append(str(umsgpack.unpackb(data[21:])[0]))
        elif data[:1] == b"\x01":
            future = self.waiting.pop(data[1:21], None)
            if future is not None and not future.done():
                future.set_result((len(data), umsgpack.unpackb(data[21:])))

    async def ask(self, addr: tuple[str, int], name: str, *args: Any,
                  timeout: float = 30.0) -> tuple[int, int, Any]:
        """Send one request; (request bytes, answer bytes, decoded answer)."""
        assert self.transport is not None
        msg_id = os.urandom(20)
        data = b"\x00" + msg_id + umsgpack.packb([name, [self.node_id, *args]])
        future: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[msg_id] = future
        self.transport.sendto(data, addr)
        async with asyncio.timeout(timeout):
            size, answer = await future
        return len(data), size, answer

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

"""Issue 10 (1): small fault cases found by the netns kill -9 runs, checked in-process."""

from __future__ import annotations

import pytest

from mesh.channel import ChannelPool
from mesh.errors import UnavailableError
from mesh.identity import Identity


async def test_channel_closed_by_the_pool_under_a_call_is_unavailable() -> None:
    """A peer reported dead has its channel closed by the pool (ChannelPool.forget) while
    another task is about to call it: the caller must get UnavailableError (it then uses
    another holder), not grpc's UsageError surfacing as UNKNOWN at the local API."""
    pool = ChannelPool(Identity.generate())
    peer = Identity.generate()
    channel = pool.peer(peer.node_id, "127.0.0.1:9")
    await pool.forget(peer.node_id)
    with pytest.raises(UnavailableError, match="channel closed"):
        await channel.unary("storage.StoreFragment", b"")
    with pytest.raises(UnavailableError, match="channel closed"):
        async for _ in channel.stream("storage.FetchStream", b""):
            pass
    await pool.close()


async def test_call_in_flight_when_the_pool_closes_the_channel_is_unavailable() -> None:
    """grpc cancels calls in flight when their channel closes. When the node saw a peer die
    it closed the channel and the CancelledError cancelled the whole operation (a Push): the
    local API then never answered and the client waited for its deadline. Found by
    test_faults_netns.py (kill -9 during Push)."""
    import asyncio
    import time

    import grpc

    async def stall(_request: bytes, _context: object) -> bytes:
        await asyncio.sleep(30)
        return b""

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "twmesh.peer.PeerChannel", {"Handshake": grpc.unary_unary_rpc_method_handler(stall)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        pool = ChannelPool(Identity.generate())
        peer = Identity.generate()
        channel = pool.peer(peer.node_id, f"127.0.0.1:{port}")
        call = asyncio.create_task(channel.unary("storage.StoreFragment", b""))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await pool.forget(peer.node_id)                 # what the node does on "peer down"
        with pytest.raises(UnavailableError, match="channel closed"):
            await call
        assert time.monotonic() - started < 15       # failed promptly, did not hang
        # a real cancellation of the caller is still a cancellation
        channel = pool.peer(peer.node_id, f"127.0.0.1:{port}")
        call = asyncio.create_task(channel.unary("storage.StoreFragment", b""))
        await asyncio.sleep(0.5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await pool.close()
    finally:
        await server.stop(None)

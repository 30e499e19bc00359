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

"""Fixtures shared by the channel tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mesh.channel import ChannelPool
from mesh.identity import Identity


@pytest.fixture
async def pool() -> AsyncIterator[ChannelPool]:
    """A client pool with a key of its own (a test file may define its own ``pool``)."""
    p = ChannelPool(Identity.generate())
    yield p
    await p.close()

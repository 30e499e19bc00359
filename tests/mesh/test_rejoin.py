"""A split heals by itself: departed peers are re-probed (mesh/dht/rejoin.py)."""

from __future__ import annotations

import asyncio
import time

from mesh.dht import Membership
from mesh.identity import Identity
from proto import mesh_pb2


def _member(rejoin_interval: float) -> Membership:
    return Membership(Identity.generate(), host="127.0.0.1", port=0, sweep_interval=0.5,
                      rejoin_interval=rejoin_interval,
                      peer_record_factory=lambda: mesh_pb2.PeerRecord(roles=["storage"]))


async def _wait(pred: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_declared_dead_both_ways_then_merged_by_rejoin() -> None:
    nodes = [_member(rejoin_interval=0.5) for _ in range(4)]
    try:
        for m in nodes:
            await m.start()
        for m in nodes[1:]:
            await m.bootstrap([("127.0.0.1", nodes[0].port)])
        await _wait(lambda: all(len(m.live_peers()) == 3 for m in nodes), 10)
        left, right = nodes[:2], nodes[2:]
        for a in left:              # each half declares the other dead, as after a partition
            for b in right:
                a.mark_dead(b.node_id)
                b.mark_dead(a.node_id)
        assert all(len(m.live_peers()) == 1 for m in nodes)
        # nothing else happens: the halves find each other again through the departed list
        await _wait(lambda: all(len(m.live_peers()) == 3 for m in nodes), 10)
    finally:
        for m in nodes:
            await m.stop()


async def test_alone_node_retries_its_bootstrap_seeds() -> None:
    first, second = _member(0.3), _member(0.3)
    try:
        await first.start()
        await second.start()
        await second.bootstrap([("127.0.0.1", first.port)])
        await _wait(lambda: len(second.live_peers()) == 1, 10)
        second.mark_dead(first.node_id)
        first.mark_dead(second.node_id)
        second._departed.clear()     # only the seed is left to find the mesh again
        first._departed.clear()
        await _wait(lambda: len(second.live_peers()) == 1 and len(first.live_peers()) == 1, 10)
    finally:
        await first.stop()
        await second.stop()


async def test_small_mesh_introduces_two_nodes_that_missed_each_other() -> None:
    """Two nodes that joined without meeting (here: they forget each other and nothing is
    left to re-probe) meet through the rejoin round's self-lookup via a third."""
    nodes = [_member(rejoin_interval=0.3) for _ in range(3)]
    try:
        for m in nodes:
            await m.start()
        for m in nodes[1:]:
            await m.bootstrap([("127.0.0.1", nodes[0].port)])
        await _wait(lambda: all(len(m.live_peers()) == 2 for m in nodes), 10)
        b, c = nodes[1], nodes[2]
        b.mark_dead(c.node_id)       # "never met": dropped, not buried, nothing to re-probe
        c.mark_dead(b.node_id)
        for m, other in ((b, c), (c, b)):
            m.server.protocol.router.tombstones.pop(other.node_id, None)
            m._departed.clear()      # only the self-lookup is left to introduce them
        assert len(b.live_peers()) == 1 and len(c.live_peers()) == 1
        await _wait(lambda: all(len(m.live_peers()) == 2 for m in nodes), 10)
    finally:
        for m in nodes:
            await m.stop()

"""Healing a split: re-probing departed peers and the bootstrap seeds.

A peer declared dead is tombstoned (defect 5) and nothing in Kademlia (Maymounkov & Mazières
2002, sections 2.2-2.3) contacts it again unless it contacts us first. After a partition both
halves have declared each other dead, so neither side does, and they would stay split until a
restart. Every ``rejoin_interval`` this node re-probes a few departed peers (those that left
most recently first, rotating) and, when it knows no live peer at all, its bootstrap seeds —
with the same signed IDENTIFY admission as any newcomer. When one answers, a lookup of our own
ID through it (the join of section 2.3) finds the rest of its side.

In a small mesh (fewer live peers than k, where every node should know every other) each
round also repeats that self-lookup through the peers it knows: two nodes that joined at the
same moment can both miss each other (a slow or lossy link during their joins), and nothing
else would introduce them before the hourly bucket refresh.
"""

from __future__ import annotations

import asyncio
import logging
import time

from kademlia.node import Node

from mesh.dht.peers import PeerView, short
from mesh.dht.server import MeshServer

log = logging.getLogger(__name__)

DEPARTED_TTL_S = 3600.0     # stop probing a departed peer after an hour
DEPARTED_MAX = 512
REJOIN_BATCH = 4


class Rejoin:
    """Mixin for ``Membership``: remembers departed peers and probes them again."""

    server: MeshServer
    node_id: bytes
    ksize: int
    rejoin_interval: float
    _peers: dict[bytes, PeerView]
    _departed: dict[bytes, tuple[Node, float]]
    _seeds: list[tuple[str, int]]

    async def admit(self, node: Node) -> bool:
        raise NotImplementedError

    def _remember_departed(self, node: Node) -> None:
        self._departed.pop(node.id, None)
        self._departed[node.id] = (node, time.monotonic())     # newest last
        while len(self._departed) > DEPARTED_MAX:
            del self._departed[next(iter(self._departed))]

    async def rejoin_round(self) -> int:
        """Probe a few departed peers (and the seeds when alone); returns peers re-admitted."""
        now = time.monotonic()
        for node_id in [i for i, (_n, t) in self._departed.items()
                        if now - t > DEPARTED_TTL_S or i in self._peers]:
            del self._departed[node_id]
        batch = [node for node, _t in reversed(self._departed.values())][:REJOIN_BATCH]
        for node in batch:                   # rotate: probed ones go to the back of the queue
            self._departed[node.id] = self._departed.pop(node.id)
        answers = await asyncio.gather(*(self.admit(node) for node in batch))
        back = [node for node, ok in zip(batch, answers, strict=True) if ok]
        for node in back:
            self._departed.pop(node.id, None)
            log.info("departed peer %s answers again: merging", short(node.id))
        if not back and not self._peers and self._seeds:
            found = await self.server.bootstrap(self._seeds)
            back = [n for n, ok in zip(found, await asyncio.gather(
                *(self.admit(n) for n in found)), strict=True) if ok]
        if back:              # the join of section 2.3 through them finds the rest of their side
            found = await self.server.find_closest_nodes(self.node_id, seeds=back)
            await asyncio.gather(*(self.admit(n) for n in found))
        elif self._peers and len(self._peers) + 1 < self.ksize:
            met = await self.server.find_closest_nodes(self.node_id)   # small mesh: see above
            new = [n for n in met if n.id not in self._peers and n.id != self.node_id]
            if new and sum(await asyncio.gather(*(self.admit(n) for n in new))):
                log.info("self-lookup met %d peer(s) this node did not know", len(new))
        return len(back)

    async def _rejoin_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rejoin_interval)
            try:
                await self.rejoin_round()
            except Exception:  # keep probing whatever one round hit
                log.exception("rejoin round failed")

"""Liveness of known peers: the periodic sweep and failure confirmation.

Kademlia (Maymounkov & Mazières 2002, section 2.2) only evicts a contact when a full bucket
needs room; it never notices that a peer died. The sweep pings peers that have been quiet for
half a sweep interval (stalest first, at most ``sweep_batch`` per sweep); a peer that misses
three pings in a row, while nothing else was heard from it, is dead. A process whose event
loop is starved (the sweep woke up late) declares no deaths: its own timeouts mean nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time

from kademlia.node import Node

from mesh.dht.peers import PeerView
from mesh.dht.server import MeshServer

log = logging.getLogger(__name__)


class Liveness:
    """Mixin for ``Membership``: sweep loop, confirmation pings, starvation guard."""

    server: MeshServer
    rpc_timeout: float
    sweep_interval: float
    sweep_batch: int
    _nodes: dict[bytes, Node]
    _peers: dict[bytes, PeerView]
    _probing: set[bytes]
    _starved_until: float

    def _down(self, node_id: bytes, reason: str) -> None:
        raise NotImplementedError

    # --- liveness --------------------------------------------------------------------------

    def _on_failure(self, node: Node) -> None:
        known = self._nodes.get(node.id)
        if known is not None and known.same_home_as(node) and node.id not in self._probing:
            self.server.protocol.spawn(self._check(node))

    async def _check(self, node: Node) -> None:
        """Ping up to three times; the peer is dead if none is answered and nothing else was
        heard from it meanwhile (an overloaded loop must not turn slow peers into dead ones)."""
        self._probing.add(node.id)
        started = time.time()
        try:
            for _ in range(3):
                ok, _answer = await self.server.protocol.call_ping(node)
                if ok:
                    return
            current = self._nodes.get(node.id)
            view = self._peers.get(node.id)
            starved = asyncio.get_running_loop().time() < self._starved_until
            if (current is not None and view is not None and current.same_home_as(node)
                    and view.last_seen < started and not starved):
                self._down(node.id, "no answer to ping")
        finally:
            self._probing.discard(node.id)

    async def sweep(self) -> None:
        """Ping the stalest peers not heard from within the sweep interval."""
        quiet_since = time.time() - self.sweep_interval / 2
        stale = sorted((v for v in self._peers.values() if v.last_seen < quiet_since),
                       key=lambda v: v.last_seen)[: self.sweep_batch]
        async with asyncio.TaskGroup() as group:
            for view in stale:
                node = self._nodes.get(view.node_id)
                if node is not None and view.node_id not in self._probing:
                    group.create_task(self._check(node))

    async def _sweep_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.sweep_interval
            await asyncio.sleep(self.sweep_interval)
            if loop.time() - due > self.rpc_timeout / 2:  # this process is starved: timeouts
                self._starved_until = loop.time() + 2 * self.sweep_interval  # mean nothing,
                continue  # and pinging everyone would only add load
            try:
                await self.sweep()
            except Exception:  # keep sweeping whatever one round hit
                log.exception("liveness sweep failed")

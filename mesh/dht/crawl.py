"""Iterative node and value lookup (Maymounkov & Mazières 2002, sections 2.3 and 4.2).

Replaces kademlia 2.2.3's ``SpiderCrawl`` rounds, which waited for the slowest of alpha calls
each round (a dead node cost a full timeout per round) and re-admitted dead nodes mentioned
after they had failed (defect 5). This lookup keeps up to alpha calls in flight, stops counting
a call against alpha once it has been quiet for ``stall`` seconds (section 4.2's remedy for
timeouts), gives a call up after twenty typical round trips (the call itself runs on to its
timeout), never re-queries a failed, suspect or buried node, and ends when the k closest
candidates have all answered. Value lookups run to the same end and return every RecordSet found, so
records from different owners stored on partly different nodes are merged, instead of
kademlia's "first round with a value, most common value wins".
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from kademlia.node import Node

from mesh.dht.protocol import MeshProtocol, RpcResult, valid_id

STALL_S = 0.15
STALL_MAX_S = 0.5
GIVE_UP_MIN_S = 0.5


def parse_nodes(answer: Any) -> list[Node]:
    """Contacts from a FIND_NODE answer (a list, or a short one under ``"nodes"``);
    malformed entries are dropped."""
    nodes: list[Node] = []
    if isinstance(answer, dict):
        answer = answer.get("nodes")
    if not isinstance(answer, list):
        return nodes
    for entry in answer:
        if (isinstance(entry, list | tuple) and len(entry) == 3 and valid_id(entry[0])
                and isinstance(entry[1], str) and isinstance(entry[2], int)
                and 0 < entry[2] < 65536):
            nodes.append(Node(entry[0], entry[1], entry[2]))
    return nodes


class Lookup:
    """One iterative lookup of ``key`` from ``protocol``'s node."""

    def __init__(self, protocol: MeshProtocol, key: bytes, seeds: list[Node], *, ksize: int,
                 alpha: int, find_value: bool = False, stall: float = STALL_S) -> None:
        self.protocol = protocol
        self.target = Node(key)
        self.ksize = ksize
        self.alpha = alpha
        self.find_value = find_value
        self.stall = stall
        self.max_in_flight = max(alpha, ksize // 2)
        self.candidates: dict[bytes, Node] = {}
        self.responded: set[bytes] = set()
        self.failed: set[bytes] = set()
        self.queried: set[bytes] = set()
        self.values: list[bytes] = []
        self._pending: dict[asyncio.Future[RpcResult], tuple[Node, float]] = {}
        self._answered: list[float] = []
        self._add(seeds)

    @property
    def rpcs(self) -> int:
        return len(self.queried)

    def _add(self, nodes: list[Node]) -> None:
        router = self.protocol.router
        for node in nodes:
            if (node.id == self.protocol.source_node.id or node.id in self.failed
                    or (node.id not in self.candidates
                        and (router.is_buried(node.id) or router.is_suspect(node.id)))):
                continue
            self.candidates.setdefault(node.id, node)

    def _window(self) -> list[Node]:
        """The k closest candidates not known to have failed."""
        alive = (n for n in self.candidates.values() if n.id not in self.failed)
        return sorted(alive, key=self.target.distance_to)[: self.ksize]

    def _launch(self) -> None:
        """Query the closest unqueried candidates, up to alpha active calls. A call quiet for
        ``stall`` seconds no longer holds a place among the k, so the next candidate is asked
        at once instead of after the timeout (dead nodes cost one timeout, not one per round)."""
        now = time.monotonic()
        stall = min(max(self.stall, 3 * self._typical()), STALL_MAX_S)
        active = sum(1 for _, started in self._pending.values() if now - started < stall)
        stalled = {node.id for node, started in self._pending.values()
                   if now - started >= stall}
        places = self.ksize
        for node in sorted((n for n in self.candidates.values() if n.id not in self.failed),
                           key=self.target.distance_to):
            if places <= 0 or active >= self.alpha or len(self._pending) >= self.max_in_flight:
                break
            if node.id in stalled:
                continue
            places -= 1
            if node.id in self.queried:
                continue
            self.queried.add(node.id)
            call = (self.protocol.call_find_value(node, self.target) if self.find_value
                    else self.protocol.call_find_node(node, self.target))
            task = self.protocol.spawn(call)
            if task is None:
                return
            self._pending[task] = (node, now)
            active += 1

    def _settle(self, future: asyncio.Future[RpcResult]) -> None:
        node, started = self._pending.pop(future)
        ok, answer = future.result() if not future.cancelled() else (False, None)
        if not ok:
            self.failed.add(node.id)
            return
        self._answered.append(time.monotonic() - started)
        self.responded.add(node.id)
        value = answer.get("value") if isinstance(answer, dict) else None
        if isinstance(value, bytes):
            self.values.append(value)
        else:
            self._add(parse_nodes(answer))

    def _typical(self) -> float:
        return statistics.median(self._answered) if self._answered else self.protocol.rtt

    def _give_up(self) -> None:
        """Count a call silent for twenty typical round trips (at least GIVE_UP_MIN_S, at most the
        RPC timeout) as failed for this lookup; the call itself runs on and, if it times out,
        makes the node suspect."""
        limit = min(self.protocol._wait_timeout, max(GIVE_UP_MIN_S, 20 * self._typical()))
        now = time.monotonic()
        for future, (node, started) in list(self._pending.items()):
            if now - started > limit:
                del self._pending[future]
                self.failed.add(node.id)

    def _finished(self) -> bool:
        window = self._window()
        return all(n.id in self.responded for n in window) or not window

    async def run(self) -> list[Node]:
        """The k closest nodes that answered, nearest first."""
        while True:
            if self._finished():
                break
            self._launch()
            if not self._pending:
                break
            done, _ = await asyncio.wait(list(self._pending), timeout=self.stall,
                                         return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                self._settle(future)
            self._give_up()
        return [n for n in self._window() if n.id in self.responded]

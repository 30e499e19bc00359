"""Routing table for the mesh: kademlia 2.2.3's ``RoutingTable`` with three defects fixed.

References are to Maymounkov & Mazières, "Kademlia: A Peer-to-peer Information System Based on
the XOR Metric" (IPTPS 2002).

* Defect 1 (section 2.3): ``find_neighbors`` walked buckets outwards from the key's bucket and
  stopped after k nodes, which are not the k closest. Here every bucket is scanned.
* Defect 5 (section 2.2): a node dropped as dead came back as soon as another peer mentioned it.
  Here a dropped node is *buried*: lookups skip it until it contacts us directly (or the
  tombstone expires, after which one probe is allowed).
* Defect 6 (sections 2.2, 4.1): nodes on a bucket's replacement list counted as new on every
  message, so each message rescanned storage and pinged the bucket head. Here they are known;
  a bucket head is pinged at most once per ``ping_interval``.
"""

from __future__ import annotations

import heapq
import time
from typing import Any

from kademlia.node import Node
from kademlia.routing import RoutingTable

TOMBSTONE_TTL_S = 60.0
HEAD_PING_INTERVAL_S = 5.0
SUSPECT_TTL_S = 5.0


class MeshRoutingTable(RoutingTable):  # type: ignore[misc]
    """k-buckets (section 2.2) with exact neighbour search, tombstones and quiet replacements."""

    def __init__(self, protocol: Any, ksize: int, node: Node, *,
                 tombstone_ttl: float = TOMBSTONE_TTL_S,
                 ping_interval: float = HEAD_PING_INTERVAL_S) -> None:
        self.tombstones: dict[bytes, float] = {}
        self.suspects: dict[bytes, float] = {}
        self.tombstone_ttl = tombstone_ttl
        self.ping_interval = ping_interval
        self._head_pinged: dict[bytes, float] = {}
        super().__init__(protocol, ksize, node)

    def all_nodes(self) -> list[Node]:
        """Every node held in a bucket (not the replacement lists)."""
        return [n for bucket in self.buckets for n in bucket.nodes.values()]

    def find_neighbors(self, node: Node, k: int | None = None,
                       exclude: Node | None = None) -> list[Node]:
        """The true k XOR-closest contacts to ``node`` (defect 1: scan all buckets)."""
        k = k or self.ksize
        candidates = (n for n in self.all_nodes()
                      if n.id != node.id and (exclude is None or not n.same_home_as(exclude)))
        return heapq.nsmallest(k, candidates, key=node.distance_to)

    def is_new_node(self, node: Node) -> bool:
        """Defect 6: a node on the replacement list is already known, not new."""
        bucket = self.buckets[self.get_bucket_for(node)]
        return node.id not in bucket.nodes and node.id not in bucket.replacement_nodes

    def touch(self, node: Node) -> None:
        """Move a known contact to the tail of its list (section 2.2: most recently seen)."""
        bucket = self.buckets[self.get_bucket_for(node)]
        for table in (bucket.nodes, bucket.replacement_nodes):
            if node.id in table:
                del table[node.id]
                table[node.id] = node
        bucket.touch_last_updated()

    def add_contact(self, node: Node) -> None:
        """Insert ``node``; a full bucket pings its head at most once per interval (section 2.2)."""
        index = self.get_bucket_for(node)
        bucket = self.buckets[index]
        if bucket.add_node(node):
            return
        if bucket.has_in_range(self.node) or bucket.depth() % 5 != 0:
            self.split_bucket(index)
            self.add_contact(node)
            return
        head = bucket.head()
        now = time.monotonic()
        if now - self._head_pinged.get(head.id, float("-inf")) < self.ping_interval:
            return
        if len(self._head_pinged) > 4 * self.ksize * len(self.buckets):
            cutoff = now - self.ping_interval
            self._head_pinged = {k: t for k, t in self._head_pinged.items() if t >= cutoff}
        self._head_pinged[head.id] = now
        self.protocol.spawn(self.protocol.call_ping(head))

    # --- tombstones (defect 5) -------------------------------------------------------------

    def bury(self, node: Node) -> None:
        """Drop a dead contact and remember it so that mentions by others do not revive it."""
        self.remove_contact(node)
        self.tombstones[node.id] = time.monotonic()

    def suspect(self, node: Node) -> None:
        """A call to ``node`` went unanswered: lookups skip it for a while, but it stays in its
        bucket until declared dead (one lost datagram must not evict a live peer)."""
        self.suspects[node.id] = time.monotonic()

    def is_suspect(self, node_id: bytes) -> bool:
        since = self.suspects.get(node_id)
        if since is not None and time.monotonic() - since > SUSPECT_TTL_S:
            del self.suspects[node_id]
            return False
        return since is not None

    def is_buried(self, node_id: bytes) -> bool:
        since = self.tombstones.get(node_id)
        if since is None:
            return False
        if time.monotonic() - since > self.tombstone_ttl:
            del self.tombstones[node_id]
            return False
        return True

    def revive(self, node_id: bytes) -> None:
        """The node contacted us directly: it is alive again."""
        self.tombstones.pop(node_id, None)
        self.suspects.pop(node_id, None)

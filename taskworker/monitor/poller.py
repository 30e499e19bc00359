"""Discover every peer and poll its status over the sealed channel.

Discovery: the node's live set (``membership.live_peers()``) plus, once the mesh outgrows a
k-bucket, one DHT walk per round towards a random key (``closest_peers`` admits the live nodes
it meets, so the live set grows to the whole mesh over a few rounds). Each known peer is asked
``mesh.Status`` (its ``Node.status()`` JSON); a peer that stops answering is kept as "down"
for ``forget_after`` seconds so the page can show it, then dropped.

Several monitors agree because they read the same peers; nothing here is authoritative.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from typing import Any

from mesh.context import MeshContext
from mesh.errors import MeshError
from mesh.owned_task import OwnedTask
from proto import mesh_pb2
from taskworker.monitor.peer_state import HISTORY, PeerState, Sample, number

log = logging.getLogger(__name__)

class MeshPoller:
    def __init__(self, ctx: MeshContext, *, interval: float = 5.0, timeout: float = 3.0,
                 forget_after: float = 600.0, concurrency: int = 32) -> None:
        self.ctx = ctx
        self.interval = interval
        self.timeout = timeout
        self.forget_after = forget_after
        self.peers: dict[str, PeerState] = {}
        self.history: deque[Sample] = deque(maxlen=HISTORY)
        self.rounds = 0
        self.last_round = 0.0
        self._sem = asyncio.Semaphore(concurrency)
        self._task = OwnedTask("monitor-poller")

    async def start(self) -> None:
        self._task.start(self._loop)

    async def stop(self) -> None:
        await self._task.stop()

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:          # never let one bad round end monitoring
                log.exception("monitor round failed")
            await asyncio.sleep(self.interval)

    # -- one round ---------------------------------------------------------------------------
    async def discover(self) -> list[mesh_pb2.PeerRecord]:
        membership = self.ctx.membership
        if len(membership.live_peers()) + 1 >= membership.ksize:
            try:               # big mesh: walk towards a random key to meet more of it
                await asyncio.wait_for(membership.closest_peers(os.urandom(20), membership.ksize),
                                       self.timeout * 2)
            except (TimeoutError, MeshError, OSError):
                pass
        own = mesh_pb2.PeerRecord(node_id=self.ctx.identity.node_id, address=self.ctx.address,
                                  roles=list(self.ctx.roles))
        return [own, *(p.record for p in membership.live_peers())]

    async def poll_once(self) -> None:
        records = await self.discover()
        live_ids = {r.node_id.hex() for r in records}
        for record in records:
            key = record.node_id.hex()
            state = self.peers.get(key)
            if state is None:
                state = self.peers[key] = PeerState(key, record.address)
            state.address = record.address or state.address
            state.roles = tuple(record.roles) or state.roles
            if record.capacity_bytes:
                state.capacity_bytes, state.free_bytes = record.capacity_bytes, record.free_bytes
        await asyncio.gather(*(self._poll(r) for r in records))
        now = time.time()
        for key, state in list(self.peers.items()):
            if key not in live_ids:
                state.up = False
                state.error = state.error or "not in the live set"
            if not state.up and now - max(state.last_ok, state.last_try) > self.forget_after:
                del self.peers[key]
        self.rounds += 1
        self.last_round = now
        up = [s for s in self.peers.values() if s.up]
        self.history.append(Sample(now, len(up), sum(s.calls_per_s for s in up),
                                   sum(s.stored_bytes for s in up), sum(s.fragments for s in up),
                                   sum(s.disk_used for s in up)))

    async def _poll(self, record: mesh_pb2.PeerRecord) -> None:
        state = self.peers[record.node_id.hex()]
        async with self._sem:
            started = time.monotonic()
            state.last_try = time.time()
            try:
                raw = await asyncio.wait_for(self.ctx.peer(record).unary("mesh.Status", b""),
                                             self.timeout)
                reply = mesh_pb2.StatusReply.FromString(raw)
                doc = json.loads(reply.json)
                if not isinstance(doc, dict):
                    raise ValueError("status is not a JSON object")
            except (TimeoutError, MeshError, OSError, ValueError) as exc:
                state.failures += 1
                state.up = False
                state.error = f"{type(exc).__name__}: {exc}"[:200]
                return
        state.rtt.append(time.monotonic() - started)
        services = doc.get("services")
        if isinstance(services, dict):
            services.pop("monitor", None)  # another monitor's mesh view: not its health
        state.status = doc
        state.up = True
        state.failures = 0
        state.error = ""
        state.last_ok = time.time()
        state.update_rates(state.last_ok)

    # -- views -------------------------------------------------------------------------------
    def suspected_by(self) -> dict[str, int]:
        """node id -> how many live peers gave a store up on it in the last minute: a node
        that answers Status (so it shows "up") while its storage hangs, e.g. a stuck disk."""
        counts: dict[str, int] = {}
        for s in self.peers.values():
            if not s.up:
                continue
            for prefix in set(s.suspects()):
                for node_id in self.peers:
                    if node_id.startswith(prefix) and node_id != s.node_id:
                        counts[node_id] = counts.get(node_id, 0) + 1
        return counts

    def summary(self) -> dict[str, Any]:
        """The mesh view: what `tw-mesh status` at a monitor and /api/status show."""
        up = [s for s in self.peers.values() if s.up]
        suspected = self.suspected_by()
        files: dict[str, dict[str, Any]] = {}
        for s in up:
            for f in s.under_replicated():
                cid = str(f.get("cid", ""))
                if cid and (cid not in files or
                            (number(f, "healthy") or 0) < (number(files[cid], "healthy") or 0)):
                    files[cid] = f
        return {
            "peers_known": len(self.peers),
            "peers_up": len(up),
            "fragments_total": int(sum(s.fragments for s in up)),
            "stored_bytes_total": int(sum(s.stored_bytes for s in up)),
            "calls_per_s": round(sum(s.calls_per_s for s in up), 3),
            "errors_total": int(sum(s.errors for s in up)),
            "files_under_replicated": sorted(files.values(), key=lambda f: str(f.get("cid"))),
            "rounds": self.rounds,
            "last_round": round(self.last_round, 3),
            "peers": [self.peer_view(s, suspected.get(s.node_id, 0))
                      for s in sorted(self.peers.values(), key=lambda s: s.node_id)],
        }

    @staticmethod
    def peer_view(s: PeerState, suspected_by: int = 0) -> dict[str, Any]:
        return {
            "node_id": s.node_id, "address": s.address, "roles": list(s.roles), "up": s.up,
            "uptime_s": s.uptime_s, "disk_used_bytes": int(s.disk_used),
            "disk_free_bytes": int(s.disk_free), "fragments": int(s.fragments),
            "stored_bytes": int(s.stored_bytes), "calls_per_s": round(s.calls_per_s, 3),
            "p99_latency_s": s.p99_latency_s, "status_rtt_p99_s": round(s.status_rtt_p99_s, 4),
            "sandbox": s.sandbox, "errors": int(s.errors), "error": s.error,
            "last_ok": round(s.last_ok, 3), "suspected_by": suspected_by,
            "storage_full": bool(s.storage_full),
        }

"""Self-healing for storage: repair, scrub, rebalance and drain (issue 8).

``create(ctx)`` builds the ``repair`` service on nodes with the storage role, after the storage
service registered itself in ``ctx.registry``. Join flags (taskworker/cli_monitor.py):
``--repair-interval``, ``--repair-grace``, ``--repair-rate``, ``--audit-rate``,
``--scrub-interval``, ``--drain``.
Defaults come from the durability study (simulations/figures/durability.md, "shipped" row).

Placement after repair is not signed: see storage/healing/locate.py for why none is needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from mesh.channel import Caller
from mesh.context import MeshContext
from mesh.errors import InvalidArgumentError, UnavailableError
from proto import mesh_pb2
from storage.healing.audit import AUDIT_RATE_BPS
from storage.healing.drain import drain
from storage.healing.ratelimit import TokenBucket
from storage.healing.repair import Repairer
from storage.healing.scrub import Scrubber

log = logging.getLogger(__name__)

REPAIR_INTERVAL_S = 300.0
REPAIR_GRACE_S = 600.0
REPAIR_RATE_BPS = 10e6
SCRUB_INTERVAL_S = 3600.0
SCRUB_RATE_BPS = 50e6


class HealingService:
    name = "repair"

    def __init__(self, ctx: MeshContext, storage: Any) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.storage = storage
        rate = float(s.get("repair_rate", REPAIR_RATE_BPS))
        self.bucket = TokenBucket(rate, burst=max(rate, 8 * 2**20))
        self.repairer = Repairer(
            storage.network, storage.manifests,
            interval=float(s.get("repair_interval", REPAIR_INTERVAL_S)),
            grace=float(s.get("repair_grace", REPAIR_GRACE_S)), bucket=self.bucket,
            live_ids=self.live_ids, audit_rate=float(s.get("audit_rate", AUDIT_RATE_BPS)))
        self.scrubber = Scrubber(
            storage.fragments, interval=float(s.get("scrub_interval", SCRUB_INTERVAL_S)),
            bucket=TokenBucket(SCRUB_RATE_BPS, burst=8 * 2**20),
            on_rot=lambda refs: self.repairer.kick())
        self.repairer.ask_progress = self._ask_progress
        if "storage" in ctx.roles:
            ctx.channel_server.handle("repair.Progress", self._rpc_progress)
        self.drain_on_stop = bool(s.get("drain_on_stop", False))
        self.last_drain: dict[str, Any] = {}
        self._events: asyncio.Task[None] | None = None
        ctx.registry["repair"] = self

    async def _rpc_progress(self, caller: Caller, body: bytes) -> bytes:
        try:
            cid = json.loads(mesh_pb2.StatusReply.FromString(body).json)["cid"]
        except (DecodeError, ValueError, KeyError, TypeError) as exc:
            raise InvalidArgumentError("repair.Progress wants {\"cid\": ...}") from exc
        if not isinstance(cid, str) or len(cid) > 200:
            raise InvalidArgumentError("bad cid")
        return mesh_pb2.StatusReply(json=json.dumps(self.repairer.progress(cid))).SerializeToString()

    async def _ask_progress(self, peer: bytes, cid: str) -> dict[str, Any]:
        record = await self.ctx.membership.fetch_peer(peer)
        if record is None:
            raise UnavailableError("peer unknown")
        raw = await self.ctx.peer(record).unary(
            "repair.Progress", mesh_pb2.StatusReply(json=json.dumps({"cid": cid}))
            .SerializeToString(), timeout=10.0)
        doc = json.loads(mesh_pb2.StatusReply.FromString(raw).json)
        if not isinstance(doc, dict):
            raise InvalidArgumentError("repair.Progress reply is not an object")
        return doc

    def live_ids(self) -> set[bytes]:
        return {p.node_id for p in self.ctx.membership.live_peers()} | {
            self.ctx.identity.node_id}

    def attach(self, api_server: grpc.aio.Server) -> None:
        """No local-API servicer: status rides in the node's Status."""

    async def start(self) -> None:
        self.repairer.start()
        self.scrubber.start()
        self._events = asyncio.create_task(self._watch(), name="repair-membership")

    async def _watch(self) -> None:
        queue = self.ctx.membership.subscribe()
        while True:
            event = await queue.get()
            if event.kind == "join":
                self.repairer.kick(rebalance=True)    # fragments move to the new closest peers

    async def stop(self) -> None:
        if self.drain_on_stop and not self.last_drain:
            try:
                await self.drain()
            except Exception:
                log.exception("drain on stop failed")
        if self._events is not None:
            self._events.cancel()
            await asyncio.gather(self._events, return_exceptions=True)
        await self.scrubber.stop()
        await self.repairer.stop()

    async def drain(self) -> int:
        """Hand off every fragment and manifest (NodeService.Leave, SIGTERM with --drain)."""
        self.repairer.paused = True
        self.last_drain = await drain(self.storage.network, self.storage.fragments,
                                      self.storage.manifests, self.storage.files,
                                      self.live_ids())
        return int(self.last_drain["moved"])

    def status(self) -> dict[str, Any]:
        return {**self.repairer.status(), "scrub": self.scrubber.status(),
                "drain": self.last_drain}

    def load(self) -> int:
        return 0


def create(ctx: MeshContext) -> HealingService | None:
    storage = ctx.registry.get("storage")
    if storage is None or "storage" not in ctx.roles:
        return None
    return HealingService(ctx, storage)

"""Repair: manifest holders rebuild fragments that stay unreachable past a grace period.

Every ``interval`` each storage node walks the manifests it keeps. For each file it ranks the
m+1 live peers closest to ``manifest_key(cid)`` (the manifest holders) and keeps the manifest
on them; the first is the file's repair leader and only it rebuilds (a holder ranked after it
takes over only from a slow or gone leader: storage/healing/takeover.py).

The leader locates the fragments (storage/healing/locate.py). A fragment counts as missing when
no live candidate has it. It is rebuilt (storage/healing/rebuild.py) when it has been missing
for ``grace`` seconds -- or at once when every candidate answered (nothing is merely
unreachable: the fragment is lost, e.g. dropped by the scrubber). With nothing to rebuild the
leader rebalances the file (storage/healing/rebalance.py). Copies holders report are audited
by fetching a sample (storage/healing/audit.py); one not served is missing too. All repair
bytes (fetched and stored) pass one token bucket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from mesh.errors import MeshError
from mesh.owned_task import OwnedTask
from storage.healing.audit import Auditor
from storage.healing.counters import RepairCounters, manifest_id
from storage.healing.locate import Locations, locate
from storage.healing.ratelimit import TokenBucket
from storage.healing.rebalance import rebalance
from storage.healing.rebuild import Rebuilder
from storage.healing.takeover import AskProgress, someone_ahead_is_on_it
from storage.manifest import Manifest, ManifestStore, manifest_key, verify_manifest
from storage.placement import Network

log = logging.getLogger(__name__)

MAX_REPORTED = 200          # under-replicated files listed in status()
CHECK_DEADLINE_S = 120.0    # one file's check never wedges the loop


class Repairer:
    def __init__(self, network: Network, manifests: ManifestStore, *, interval: float,
                 grace: float, bucket: TokenBucket, live_ids: Callable[[], set[bytes]],
                 audit_rate: float = 0.0, concurrency: int = 8) -> None:
        self.network = network
        self.manifests = manifests
        self.interval = interval
        self.grace = grace
        self.bucket = bucket
        self.live_ids = live_ids
        self.counters = RepairCounters()
        self.missing_since: dict[tuple[bytes, int, int], float] = {}
        self.known: dict[bytes, dict[tuple[int, int], list[bytes]]] = {}
        self.report: dict[str, dict[str, Any]] = {}
        self.last_pass_s = 0.0
        self.rebalance_pending = False
        self._manifest_peers: dict[str, tuple[bytes, ...]] = {}
        self._kick = asyncio.Event()
        self._sem = asyncio.Semaphore(concurrency)
        self._task = OwnedTask("repair")
        self.paused = False
        self._led = 0
        self.stage: dict[str, str] = {}        # file -> what its check is doing (diagnostics)
        self.checked_at: dict[str, float] = {}  # cid -> monotonic time of the last check
        self._pass_started = 0.0
        # (peer, cid) -> the peer's progress() document; set by the service (sealed channel)
        self.ask_progress: AskProgress | None = None
        self.rebuilder = Rebuilder(network, bucket, self.counters, self.missing_since)
        self.auditor = Auditor(network, bucket, rate=audit_rate, interval=interval)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task.start(self._loop)

    async def stop(self) -> None:
        await self._task.stop()

    def kick(self, rebalance: bool = False) -> None:
        """Run a pass now (a fragment was dropped, a peer joined or left)."""
        self.rebalance_pending = self.rebalance_pending or rebalance
        self._kick.set()

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), self.interval)
            except TimeoutError:
                pass
            self._kick.clear()
            if self.paused:
                continue
            try:
                await self.run_pass()
            except Exception:
                log.exception("repair pass failed")

    # -- one pass ----------------------------------------------------------------------------
    def _local_manifests(self) -> list[Manifest]:
        out = []
        for cid in self.manifests.cids():
            for signed in self.manifests.get(cid):
                try:
                    out.append(verify_manifest(signed, cid))
                except MeshError:
                    continue
        return out

    async def run_pass(self) -> None:
        started = self._pass_started = time.monotonic()
        rebalance, self.rebalance_pending = self.rebalance_pending, False
        manifests = await asyncio.to_thread(self._local_manifests)
        self.auditor.begin_pass(manifests)
        seen: set[str] = set()
        self._led = 0

        async def one(m: Manifest) -> None:
            async with self._sem:
                seen.add(m.cid + manifest_id(m).hex())
                try:
                    await self.check(m, rebalance=rebalance)
                except TimeoutError:
                    self.counters.failures += 1
                    log.warning("repair check of %s timed out", m.cid)
                except MeshError as exc:
                    self.counters.failures += 1
                    log.warning("repair check of %s failed: %s", m.cid, exc)
                except Exception:  # one file's bug must not end the pass for every other file
                    self.counters.failures += 1
                    log.exception("repair check of %s failed", m.cid)

        await asyncio.gather(*(one(m) for m in manifests))
        for key in [k for k in self.report if k not in seen]:
            del self.report[key]
        self.counters.passes += 1
        self._pass_started = 0.0
        self.counters.files_led = self._led
        self.last_pass_s = time.monotonic() - started

    async def check(self, m: Manifest, *, rebalance: bool = False) -> Locations | None:
        key = m.cid + manifest_id(m).hex()
        try:
            return await self._check(m, key)
        finally:
            self.stage.pop(key, None)

    async def _check(self, m: Manifest, key: str) -> Locations | None:
        body = m.body
        me = self.network.self_id
        self.stage[key] = "closest"
        holders = await asyncio.wait_for(
            self.network.closest(manifest_key(body.cid), body.m + 1), CHECK_DEADLINE_S)
        self.counters.files_checked += 1
        self.checked_at[body.cid] = time.monotonic()
        self.stage[key] = "replicate"
        await self._replicate_manifest(m, holders)
        if me not in holders or body.inline:
            # handed on to the closer peers above; an inline file has no fragments: its
            # manifest replicas, just restored, are all of its redundancy
            return None
        rank = holders.index(me)
        mid = manifest_id(m)
        live = self.live_ids()
        self.stage[key] = "locate"
        loc = await asyncio.wait_for(locate(self.network, m, expected=self.known.get(mid), live=live),
                                     CHECK_DEADLINE_S)
        self.stage[key] = "audit"
        await self.auditor.check(m, loc, lead=rank == 0)   # a copy not served is missing
        now = time.time()
        due: dict[int, list[int]] = {}
        oldest = now
        for s in range(len(body.stripes)):
            for i in loc.missing(s):
                since = self.missing_since.setdefault((mid, s, i), now)
                oldest = min(oldest, since)
                lost = not loc.unreachable
                wait = (0.0 if lost else self.grace) + rank * self.interval
                if now - since >= wait:
                    due.setdefault(s, []).append(i)
            for i in range(loc.n):
                if loc.held.get((s, i)):
                    self.missing_since.pop((mid, s, i), None)
        if rank == 0:
            self._led += 1
        elif due:
            self.stage[key] = "ask leader"
            if await someone_ahead_is_on_it(self.ask_progress, body.cid, holders[:rank],
                                            self.interval):
                due = {}
        if due:
            for s, indices in sorted(due.items()):
                self.stage[key] = f"rebuild {s}"
                await self.rebuilder.rebuild(m, loc, s, indices)
        if rank == 0 and not due:
            self.stage[key] = "rebalance"
            await rebalance(self.rebuilder, m, loc)
        self.known[mid] = {si: list(ps) for si, ps in loc.held.items()}
        self.stage[key] = "report"
        worst = loc.min_healthy()
        if rank == 0 and worst < loc.n and len(self.report) < MAX_REPORTED:
            self.report[key] = {"cid": body.cid, "file_id": body.file_id, "healthy": worst,
                                "want": loc.n, "missing_since": round(oldest, 1)}
        else:
            self.report.pop(key, None)
        return loc

    # -- leader progress (so two repairers never rebuild the same fragment) ---------------
    def progress(self, cid: str) -> dict[str, Any]:
        """What a takeover candidate asks the file's leader (peer call repair.Progress)."""
        checked = self.checked_at.get(cid)
        running = time.monotonic() - self._pass_started if self._pass_started else 0.0
        return {"age_s": None if checked is None else time.monotonic() - checked,
                "busy": any(k.startswith(cid) for k in self.stage),
                "pass_s": max(self.last_pass_s, running), "interval_s": self.interval}

    async def _replicate_manifest(self, m: Manifest, holders: list[bytes]) -> None:
        """Keep the manifest on its m+1 closest peers as membership changes."""
        key = m.cid + manifest_id(m).hex()
        ranked = tuple(holders)
        if self._manifest_peers.get(key) == ranked:
            return
        # First sight: do not assume Push reached every holder (a full or failing disk can
        # refuse a replica, and with stable membership nothing else would ever restore it; a
        # leader without the manifest never rebalances). A copy a peer already has is a no-op.
        previous = set(self._manifest_peers.get(key, ()))
        self._manifest_peers[key] = ranked
        for peer in ranked:
            if peer == self.network.self_id or peer in previous:
                continue
            try:
                await (await self.network.client(peer)).store_manifest(m.signed)
                self.counters.manifests_copied += 1
            except MeshError as exc:
                log.info("manifest of %s not copied to %s: %s", m.cid, peer.hex()[:16], exc)
                self._manifest_peers[key] = tuple(p for p in ranked if p != peer)  # retry

    def status(self) -> dict[str, Any]:
        c = self.counters
        return {
            "interval_s": self.interval, "grace_s": self.grace, "rate_Bps": self.bucket.rate,
            "passes": c.passes, "last_pass_s": round(self.last_pass_s, 3),
            "files_checked": c.files_checked, "files_led": c.files_led,
            "stripes_rebuilt": c.stripes_rebuilt, "fragments_rebuilt": c.fragments_rebuilt,
            "fragments_moved": c.fragments_moved, "bytes_fetched": c.bytes_fetched,
            "bytes_stored": c.bytes_stored, "stripes_unrecoverable": c.stripes_unrecoverable,
            "failures": c.failures, "manifests_copied": c.manifests_copied,
            "throttled_s": round(self.bucket.waited_s, 3), **self.auditor.status(),
            "busy": dict(list(self.stage.items())[:20]),
            "under_replicated": sorted(self.report.values(), key=lambda f: str(f["cid"])),
        }

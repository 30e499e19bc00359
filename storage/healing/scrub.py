"""The scrubber: re-hash every stored fragment now and then; drop the rotted ones.

A fragment whose bytes no longer hash to its name is deleted by ``FragmentStore.get`` (reads
re-hash anyway, so a reader never gets it). The scrubber finds rot before a reader does, then
kicks the repairer: the file's repair leader sees the fragment gone from a peer that answered
(no grace: it is lost, not unreachable) and rebuilds it from the other fragments. Reads are
paced by a token bucket so scrubbing never saturates the disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mesh.owned_task import OwnedTask
from storage.fragstore import FragmentStore
from storage.healing.ratelimit import TokenBucket

log = logging.getLogger(__name__)


class Scrubber:
    def __init__(self, fragments: FragmentStore, *, interval: float, bucket: TokenBucket,
                 on_rot: Callable[[list[tuple[str, int]]], None]) -> None:
        self.fragments = fragments
        self.interval = interval
        self.bucket = bucket
        self.on_rot = on_rot
        self.passes = 0
        self.checked = 0
        self.rotted = 0
        self.last: list[str] = []
        self._task = OwnedTask("scrub")

    def start(self) -> None:
        if self.interval > 0:
            self._task.start(self._loop)

    async def stop(self) -> None:
        await self._task.stop()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.scrub_once()
            except Exception:
                log.exception("scrub pass failed")

    async def scrub_once(self) -> list[str]:
        """Re-hash every fragment; returns the hashes dropped as corrupt or missing."""
        bad: list[str] = []
        refs: list[tuple[str, int]] = []
        for info in await asyncio.to_thread(self.fragments.list):
            await self.bucket.take(info.size)
            data = await asyncio.to_thread(self.fragments.get, info.hash)
            self.checked += 1
            if data is None:
                bad.append(info.hash)
                refs.extend(info.refs)
        self.passes += 1
        self.rotted += len(bad)
        self.last = bad
        if bad:
            log.warning("scrub dropped %d corrupt fragment(s); repair will rebuild them",
                        len(bad))
            self.on_rot(refs)
        return bad

    def status(self) -> dict[str, Any]:
        return {"interval_s": self.interval, "passes": self.passes, "checked": self.checked,
                "dropped": self.rotted}

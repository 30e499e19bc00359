"""Pushing a file's replicas the version records they lack: the last step of every sync, and
how a Revise's new record reaches its replicas.

Each replica gets, from its Digest, the grants it lacks and the valid records it lacks, parents
first (so it can verify each as it arrives); a Revise's push also carries the manifests of the
new content. A Revise returns once a quorum (one remote replica) has taken the push; the pushes
to the others go on in the background, anti-entropy repairs any that fail, and ``stop``
cancels those still going when the node stops.
"""

from __future__ import annotations

import asyncio
import logging

from mesh.errors import MeshError
from proto import mesh_pb2, versions_pb2
from storage.versions.records import grant_id
from storage.versions.replicas import ReplicaPeers
from storage.versions.vset import VersionSet

log = logging.getLogger(__name__)


class ReplicaPush:
    """Pushes of what replicas lack; the ones left after a quorum run in the background."""

    def __init__(self, peers: ReplicaPeers, counters: dict[str, int]) -> None:
        self.peers = peers
        self.counters = counters
        self._background: set[asyncio.Task[bool]] = set()

    async def stop(self) -> None:
        """Cancel the record pushes still going on after a quorum answered."""
        tasks = list(self._background)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def push_missing(self, fid: bytes, work: VersionSet,
                           live: list[tuple[mesh_pb2.PeerRecord, versions_pb2.Digest]],
                           quorum: int | None = None,
                           manifests: list[bytes] | None = None) -> int:
        """Push each peer what its digest lacks; returns how many peers took a push.

        With ``quorum``, return once that many peers have acknowledged; the other pushes go
        on in the background (anti-entropy repairs any that fail).
        """
        valid = work.valid_ids()
        ordered = [v for v in work.records() if v.id in valid]
        me = self.peers.me

        async def push(p: mesh_pb2.PeerRecord, d: versions_pb2.Digest) -> bool:
            if p.node_id == me:
                return False
            theirs_r, theirs_g = set(d.record_ids), set(d.grant_ids)
            grants = [g for g in work.grants() if grant_id(g) not in theirs_g]
            records = [v.record for v in ordered if v.id not in theirs_r]
            if not grants and not records:
                return False
            bundle = versions_pb2.Bundle(
                file_id=fid, grants=[g.SerializeToString(deterministic=True) for g in grants],
                records=[r.SerializeToString(deterministic=True) for r in records],
                manifests=manifests if records else None)
            try:
                await self.peers.call(p, "versions.Push", bundle.SerializeToString())
                self.counters["records_pushed"] += len(records)
                return True
            except MeshError as exc:
                log.debug("versions push to %s failed: %s", p.node_id.hex()[:16], exc)
                return False

        tasks = [asyncio.create_task(push(p, d)) for p, d in live]
        done_ok = 0
        pending = set(tasks)
        while pending and (quorum is None or done_ok < quorum):
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            done_ok += sum(1 for t in finished if t.result())
        for t in pending:
            self._background.add(t)
            t.add_done_callback(self._background.discard)
        return done_ok

"""Sync of one file's version records with its replicas.

Replicas: a file's records live on the r XOR-closest storage peers to its document record's key
(storage/versions/replicas.py). Every node that writes a file, or is one of its replicas,
keeps its records in DATA/versions.sqlite3; a node that only reads keeps just the highest vector
it has seen per file on disk, and in memory the verified records of its last sync of the
file (VIEW_CACHE files), so its next sync pulls only what is new rather than the whole history.
When such a reader first writes (a persisting sync), that view goes to disk as its starting
point, so a writer cut off from every replica still knows the file it read.

Sync (Synchronous, before every Revise/Get/Log, and in the background every ``--sync-interval``
seconds for each file held): ask every replica for its Digest, Pull what this node lacks, verify
and merge, Push each replica what it lacks (storage/versions/replica_push.py). If the merged
vector is still below the highest vector this node has seen (replicas withholding), it asks
wider (more of the closest peers) and reports the withholding replicas. A replica whose Digest
is unanswered for max(READ_TAIL_S, 4x the fastest replica's) is left out of this sync
(storage/tail.py; counter ``replicas_cut``): a frozen replica the mesh still counts live used to
hold every Revise and Get for the whole CALL_TIMEOUT (replicas.py); anti-entropy catches it up
once it answers again. Such a replica becomes one of the storage service's suspects, which the
next syncs (and reads, and Pushes) still ask but do not wait for once the other replicas
answered (``replicas_skipped``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from mesh.context import MeshContext
from mesh.errors import MeshError
from proto import mesh_pb2, versions_pb2
from storage.tail import Suspects, read_tail
from storage.versions.peer import VersionHandlers, parse
from storage.versions.precheck import prepare
from storage.versions.records import file_id_text, leq, vmax
from storage.versions.replica_push import ReplicaPush
from storage.versions.replicas import ReplicaPeers
from storage.versions.store import VersionStore
from storage.versions.vset import AddResult, VersionSet

log = logging.getLogger(__name__)

VIEW_CACHE = 256  # files whose verified records a non-holder keeps in memory between syncs


@dataclass
class SyncResult:
    vs: VersionSet
    reached: int = 0
    asked: int = 0
    lagging: list[str] = field(default_factory=list)    # replicas whose heads were behind
    stale: bool = False                                      # still below the seen vector
    digests: dict[bytes, versions_pb2.Digest] = field(default_factory=dict)
    peers: list[mesh_pb2.PeerRecord] = field(default_factory=list)   # the replicas asked first


class ReplicaSync:
    """Sync with a file's replicas: Digest, Pull, verify and merge, Push (module docstring)."""

    def __init__(self, ctx: MeshContext, store: VersionStore, handlers: VersionHandlers,
                 replicas: int, counters: dict[str, int]) -> None:
        self.ctx = ctx
        self.store = store
        self.handlers = handlers
        self.replicas = replicas
        self.counters = counters
        self._replica_peers = ReplicaPeers(ctx, handlers)
        self._pushes = ReplicaPush(self._replica_peers, counters)
        self._views: OrderedDict[bytes, VersionSet] = OrderedDict()  # non-holders' last syncs

    async def stop(self) -> None:
        """Cancel the record pushes still going on after a quorum answered."""
        await self._pushes.stop()

    def _suspects(self) -> Suspects | None:
        """The storage service's (storage/placement.py): its Pushes and these syncs share them."""
        storage = self.ctx.registry.get("storage")
        return getattr(storage, "network", None)

    def _holds(self, fid: bytes) -> bool:
        return len(self.store.get(fid)) > 0 or bool(self.store.get(fid).grant_ids())

    # -- sync ------------------------------------------------------------------------------
    async def sync(self, fid: bytes, *, persist: bool | None = None,
                   on_digest: Callable[[versions_pb2.Digest], None] | None = None
                   ) -> SyncResult:
        """Reconcile this node's view of ``fid`` with its replicas (see module docstring).

        ``on_digest`` sees each replica's (unverified) Digest as soon as it arrives.
        """
        self.counters["syncs"] += 1
        peers = await self._replica_peers.closest(fid, self.replicas)
        me = self.ctx.identity.node_id
        if persist is None:
            persist = self._holds(fid) or any(p.node_id == me for p in peers)
        cached = self._views.pop(fid) if fid in self._views else None
        if persist and cached is not None:
            # a reader turning writer starts from what it verified: cut off from every
            # replica (a partition), it still knows the file, its grants and its heads
            self.store.ingest(fid, cached.grants(), [v.record for v in cached.records()])
            cached = None
        local = self.store.get(fid)
        work = local if persist else cached if cached is not None else local.copy()
        result = SyncResult(work, peers=peers)
        asked: set[bytes] = set()
        seen = self.store.seen(fid)
        rounds = [peers]
        for attempt in range(2):
            batch = [p for p in rounds[-1] if p.node_id not in asked]
            asked.update(p.node_id for p in batch)
            await self._exchange(fid, batch, work, persist, result, on_digest)
            if leq(seen, work.vector()) or attempt == 1:
                break
            # below the highest vector seen: some replicas withhold; ask wider
            self.counters["withheld_seen"] += 1
            wider = await self._replica_peers.closest(fid, 3 * self.replicas + 4)
            rounds.append(wider)
        result.asked = len(asked)
        result.stale = not leq(seen, work.vector())
        top = work.vector()
        for node_id, d in result.digests.items():
            known = [v for h in d.heads if (v := work.get(h)) is not None]
            if not leq(top, vmax(v.vector for v in known)):
                result.lagging.append(node_id.hex())
        if result.lagging:
            # they were just pushed what they lacked; a replica that keeps showing up here
            # withholds (its digest hides versions it was given)
            self.counters["lagging_replicas"] += len(result.lagging)
            log.info("versions of %s: replicas %s were behind", file_id_text(fid),
                     ", ".join(h[:16] for h in result.lagging))
        if top and not persist:      # a holder's own records already prove what it saw
            self.store.note_seen(fid, top)
        if not persist:              # only verified records are in it: start there next time
            self._views[fid] = work
            while len(self._views) > VIEW_CACHE:
                self._views.popitem(last=False)
        return result

    async def _exchange(self, fid: bytes, peers: list[mesh_pb2.PeerRecord], work: VersionSet,
                        persist: bool, result: SyncResult,
                        on_digest: Callable[[versions_pb2.Digest], None] | None = None) -> None:
        tail = read_tail(self._suspects(), self.counters)
        ask = versions_pb2.DigestRequest(file_id=fid).SerializeToString()

        async def digest(p: mesh_pb2.PeerRecord) -> versions_pb2.Digest | None:
            try:
                body = await tail.call(
                    p.node_id, lambda: self._replica_peers.call(p, "versions.Digest", ask))
                d: versions_pb2.Digest = parse(versions_pb2.Digest, body)
                if on_digest is not None:
                    on_digest(d)
                return d
            except MeshError as exc:
                log.debug("versions digest from %s failed: %s", p.node_id.hex()[:16], exc)
                return None

        digests = await asyncio.gather(*(digest(p) for p in peers))
        live = [(p, d) for p, d in zip(peers, digests, strict=True) if d is not None]
        result.reached += len(live)
        for p, d in live:
            result.digests[p.node_id] = d
        # pull what we lack, each id from the first peer that has it
        have_r, have_g = work.record_ids(), work.grant_ids()
        plan: dict[bytes, tuple[mesh_pb2.PeerRecord, set[bytes], set[bytes]]] = {}
        for p, d in live:
            want_r = set(d.record_ids) - have_r
            want_g = set(d.grant_ids) - have_g
            if want_r or want_g:
                plan[p.node_id] = (p, want_r, want_g)
                have_r |= want_r
                have_g |= want_g

        async def pull(p: mesh_pb2.PeerRecord, rids: set[bytes], gids: set[bytes]
                       ) -> versions_pb2.Bundle | None:
            try:
                body = await self._replica_peers.call(p, "versions.Pull", versions_pb2.PullRequest(
                    file_id=fid, record_ids=sorted(rids), grant_ids=sorted(gids)
                ).SerializeToString())
                b: versions_pb2.Bundle = parse(versions_pb2.Bundle, body)
                return b
            except MeshError as exc:
                log.debug("versions pull from %s failed: %s", p.node_id.hex()[:16], exc)
                return None

        bundles = await asyncio.gather(*(pull(*v) for v in plan.values()))
        grants = [g for b in bundles if b is not None for g in b.grants]
        records = [r for b in bundles if b is not None for r in b.records]
        if grants or records:
            batch = await prepare(grants, records)          # signatures: off the loop
            if persist:
                res = await self.store.ingest_stepwise(fid, batch)
            else:
                res = AddResult()
                for _ in work.add_steps(batch, res):          # a turn for the loop between
                    await asyncio.sleep(0)
            self.counters["records_pulled"] += res.accepted
            self.counters["refused_from_peers"] += len(res.refused)
        # push each replica what it lacks (valid records only, parents first)
        await self._pushes.push_missing(fid, work, live)

    async def push_records(self, fid: bytes, result: SyncResult,
                           manifests: list[bytes] | None = None) -> int:
        """Push the replicas what they lack (with ``manifests``: serialized SignedManifests of
        the new records' content); returns once one remote replica took it."""
        peers = result.peers or await self._replica_peers.closest(fid, self.replicas)
        live = [(p, result.digests.get(p.node_id, versions_pb2.Digest())) for p in peers]
        return await self._pushes.push_missing(fid, result.vs, live, quorum=1,
                                              manifests=manifests)

"""Stat: where a file's fragments (or an inline file's manifest replicas) are, and whether
their holders still have them; what ``FileStore.stat`` reports."""

from __future__ import annotations

import asyncio

from mesh.errors import InvalidArgumentError, MeshError
from proto import storage_pb2
from storage.inline import ReplicaHealth, health_of
from storage.manifest import Manifest, manifest_key, verify_manifest
from storage.placement import Network
from storage.reader import open_filename
from storage.results import FragmentHealth, StatResult
from storage.tail import Tail, read_tail


async def file_health(network: Network, manifest: Manifest, key: bytes | None,
                      deep: bool = False, counters: dict[str, int] | None = None) -> StatResult:
    """Fragments, holders, health of a resolved file (``key`` opens the filename, if any).

    ``deep``: holders re-hash every fragment (reads all). ``counters``: the read tail's.
    """
    body = manifest.body
    filename = open_filename(manifest, key) if key else ""
    if body.inline:
        replicas = await _inline_replicas(network, manifest, counters)
        return StatResult(manifest, filename, [
            FragmentHealth(i, r.peer, network.address(r.peer), r.reachable, r.holds)
            for i, r in enumerate(replicas)], health_of(replicas, body.m), 1, 0, 0)
    by_holder: dict[bytes, list[tuple[int, int]]] = {}
    for s, stripe in enumerate(body.stripes):
        for i, _f in enumerate(stripe.fragments):
            holder = manifest.holder_of(s, i)
            if holder is not None:
                by_holder.setdefault(holder, []).append((s, i))
    present: dict[tuple[int, int], bool] = {}
    found_at: dict[tuple[int, int], bytes] = {}
    reachable: dict[bytes, bool] = {}
    # a frozen holder is reported unreachable after the read tail (tail.py), not the 30 s
    # deadline, and a suspected one as soon as the others answered; a deep Stat re-hashes
    # everything, which takes as long as it takes
    tail = Tail(floor=3600.0, patient=True) if deep else read_tail(network, counters)

    async def ask(holder: bytes, items: list[tuple[int, int]]) -> None:
        hashes = list(dict.fromkeys(bytes(body.stripes[s].fragments[i].hash) for s, i in items))
        try:
            client = await network.client(holder)
            answer = await tail.call(holder, lambda: client.has_fragments(hashes, deep))
            reachable[holder] = True
        except MeshError:
            answer, reachable[holder] = [False] * len(hashes), False
        have = {h for h, ok in zip(hashes, answer, strict=True) if ok}
        for s, i in items:
            if bytes(body.stripes[s].fragments[i].hash) in have:
                present[(s, i)] = True
                found_at.setdefault((s, i), holder)

    await asyncio.gather(*(ask(h, items) for h, items in by_holder.items()))
    n = body.k + body.m
    # Repair, drain and rebalance move fragments without re-signing the manifest (they cannot):
    # a fragment not at its recorded holder is looked for where they put it, on the peers
    # closest to the placement key (storage/healing/locate.py), as readers do.
    rest = [(s, i) for s, stripe in enumerate(body.stripes)
            for i in range(len(stripe.fragments)) if not present.get((s, i))]
    if rest:
        ranked = await network.closest(bytes(body.placement_key), n + min(n, 8))  # locate.spare
        asked = {p: set(items) for p, items in by_holder.items()}
        again = {p: [si for si in rest if si not in asked.get(p, ())]
                 for p in dict.fromkeys([*ranked, *body.holders]) if reachable.get(p, True)}
        await asyncio.gather(*(ask(p, items) for p, items in again.items() if items))
    ok = degraded = lost = crowded = 0
    for s, stripe in enumerate(body.stripes):
        count = sum(present.get((s, i), False) for i in range(n))
        if count >= n:
            ok += 1
            # every fragment is there, but on fewer peers than it has distinct fragments (a
            # mesh smaller than k+m): losing one peer loses more than one fragment
            blobs = {bytes(f.hash) for f in stripe.fragments}
            crowded += len({found_at.get((s, i)) for i in range(n)}) < len(blobs)
        elif count >= body.k:
            degraded += 1
        else:
            lost += 1
    fragments = []
    for i in range(n):
        # the peer holding most of index i's fragments now (else the recorded one)
        holders = [found_at.get((s, i)) or manifest.holder_of(s, i)
                   for s in range(len(body.stripes))]
        holder = max(set(holders), key=holders.count) if holders else None
        fragments.append(FragmentHealth(
            i, holder, network.address(holder) if holder else "",
            reachable.get(holder, False) if holder else False,
            bool(holders) and all(present.get((s, i), False)
                                  for s in range(len(body.stripes)))))
    health = ("unrecoverable" if lost else "degraded" if degraded
              else "under-replicated" if crowded else "healthy")
    if not body.stripes:
        fragments = []
    return StatResult(manifest, filename, fragments, health, ok, degraded, lost)


async def _inline_replicas(network: Network, manifest: Manifest,
                           counters: dict[str, int] | None) -> list[ReplicaHealth]:
    """The m+1 peers that should keep an inline file's manifest, and whether they do."""
    body = manifest.body
    tail = read_tail(network, counters)

    async def ask(peer: bytes) -> ReplicaHealth:
        try:
            client = await network.client(peer)
            signed = await tail.call(peer, lambda: client.fetch_manifests(body.cid))
        except MeshError:
            return ReplicaHealth(peer, False, False)
        return ReplicaHealth(peer, True, any(s.body == manifest.signed.body or _same_file(
            s, body.file_id) for s in signed))

    peers = await network.closest(manifest_key(body.cid), body.m + 1)
    return list(await asyncio.gather(*(ask(p) for p in peers)))


def _same_file(signed: storage_pb2.SignedManifest, file_id: str) -> bool:
    try:
        return verify_manifest(signed).file_id == file_id
    except InvalidArgumentError:
        return False

"""Stat: where a file's fragments (or an inline file's manifest replicas) are, and whether
their holders still have them; what ``FileStore.stat`` reports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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
    held: dict[tuple[int, int], list[bytes]] = {}       # (stripe, index) -> peers that have it
    asked: dict[bytes, set[tuple[int, int]]] = {}
    reachable: dict[bytes, bool] = {}
    # a frozen holder is reported unreachable after the read tail (tail.py), not the 30 s
    # deadline, and a suspected one as soon as the others answered; a deep Stat re-hashes
    # everything, which takes as long as it takes
    tail = Tail(floor=3600.0, patient=True) if deep else read_tail(network, counters)

    def hash_of(si: tuple[int, int]) -> bytes:
        return bytes(body.stripes[si[0]].fragments[si[1]].hash)

    async def ask(holder: bytes, items: list[tuple[int, int]]) -> None:
        asked.setdefault(holder, set()).update(items)
        hashes = list(dict.fromkeys(hash_of(si) for si in items))
        try:
            client = await network.client(holder)
            answer = await tail.call(holder, lambda: client.has_fragments(hashes, deep))
            reachable[holder] = True
        except MeshError:
            answer, reachable[holder] = [False] * len(hashes), False
        have = {h for h, ok in zip(hashes, answer, strict=True) if ok}
        for si in items:
            if hash_of(si) in have and holder not in held.get(si, []):
                held.setdefault(si, []).append(holder)

    n = body.k + body.m
    ranked: list[bytes] = []

    async def search(slots: list[tuple[int, int]]) -> None:
        """Ask the peers repair, drain and rebalance place fragments on (the closest to the
        placement key, storage/healing/locate.py) and the recorded holders about ``slots``:
        they move fragments without re-signing the manifest (they cannot)."""
        if not slots:
            return
        if not ranked:
            ranked.extend(await network.closest(bytes(body.placement_key), n + min(n, 8)))
        again = {p: [si for si in slots if si not in asked.get(p, ())]
                 for p in dict.fromkeys([*ranked, *body.holders]) if reachable.get(p, True)}
        await asyncio.gather(*(ask(p, items) for p, items in again.items() if items))

    await asyncio.gather(*(ask(h, items) for h, items in by_holder.items()))
    rows = [[(s, i) for i in range(len(stripe.fragments))]
            for s, stripe in enumerate(body.stripes)]
    await search([si for row in rows for si in row if not held.get(si)])
    # every fragment there but seemingly sharing a peer: rebalance keeps the recorded
    # holder's copy after moving one, so look for the other copies before saying so
    await search([si for row in rows if _complete(row, held) and not _spread(row, held, hash_of)
                  for si in row])
    ok = degraded = lost = crowded = 0
    for row in rows:
        count = sum(1 for si in row if held.get(si))
        if count >= n:
            ok += 1
            # on fewer peers than it has distinct fragments (a mesh smaller than k+m):
            # losing one peer loses more than one fragment
            crowded += not _spread(row, held, hash_of)
        elif count >= body.k:
            degraded += 1
        else:
            lost += 1
    fragments = []
    for i in range(n):
        # the peer holding most of index i's fragments now (else the recorded one)
        holders = [held[(s, i)][0] if held.get((s, i)) else manifest.holder_of(s, i)
                   for s in range(len(body.stripes))]
        holder = max(set(holders), key=holders.count) if holders else None
        fragments.append(FragmentHealth(
            i, holder, network.address(holder) if holder else "",
            reachable.get(holder, False) if holder else False,
            bool(holders) and all(held.get((s, i)) for s in range(len(body.stripes)))))
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


def _complete(row: list[tuple[int, int]], held: dict[tuple[int, int], list[bytes]]) -> bool:
    return all(held.get(si) for si in row)


def _spread(row: list[tuple[int, int]], held: dict[tuple[int, int], list[bytes]],
            hash_of: Callable[[tuple[int, int]], bytes]) -> bool:
    """Whether each distinct fragment of a stripe has a peer of its own among its copies (a
    bipartite matching, Kuhn's augmenting paths; equal fragments are one blob)."""
    candidates: dict[bytes, set[bytes]] = {}
    for si in row:
        candidates.setdefault(hash_of(si), set()).update(held.get(si, []))
    owner: dict[bytes, bytes] = {}                # peer -> blob it is matched to

    def place(blob: bytes, seen: set[bytes]) -> bool:
        for peer in candidates[blob]:
            if peer not in seen:
                seen.add(peer)
                if peer not in owner or place(owner[peer], seen):
                    owner[peer] = blob
                    return True
        return False

    return all(place(blob, set()) for blob in candidates)

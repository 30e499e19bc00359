"""Where a file's fragments are now: its manifest's holders plus the peers closest to it.

The owner-signed manifest records where each fragment was first placed; repairers cannot
re-sign it. So relocated fragments are found, not recorded: repair, drain and rebalance only
ever put a fragment on one of the ``n + spare`` peers XOR-closest to the manifest's placement
key, and anyone (a repairer, a reader) finds it by asking those peers and the recorded holders
``HasFragments``. Fragments are content-addressed ciphertext checked against the signed hashes,
so a lying peer can only waste a call, never substitute data; one claiming a fragment it
dropped is caught by the leader's audits (storage/healing/audit.py). No placement state is
signed or stored besides the manifest itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from mesh.errors import MeshError
from storage.manifest import Manifest
from storage.placement import Network

CHECK_TIMEOUT_S = 20.0


def spare(n: int) -> int:
    """How many peers beyond n the search covers (the same margin Push ranks)."""
    return min(n, 8)


@dataclass
class Locations:
    """Which live peers hold each fragment (stripe, index) of one manifest."""

    manifest: Manifest
    ranked: list[bytes]                                   # closest peers to the placement key
    held: dict[tuple[int, int], list[bytes]] = field(default_factory=dict)
    unreachable: set[bytes] = field(default_factory=set)  # asked but down
    answered: set[bytes] = field(default_factory=set)     # asked and answered
    avoid: set[bytes] = field(default_factory=set)        # failed an audit: place nothing there

    @property
    def n(self) -> int:
        return int(self.manifest.body.k + self.manifest.body.m)

    def healthy(self, s: int) -> int:
        """Fragments of stripe s held by at least one live peer."""
        return sum(1 for i in range(self.n) if self.held.get((s, i)))

    def missing(self, s: int) -> list[int]:
        return [i for i in range(self.n) if not self.held.get((s, i))]

    def holders_of_stripe(self, s: int) -> set[bytes]:
        return {p for i in range(self.n) for p in self.held.get((s, i), [])}

    def recorded_holder_answered(self, s: int, i: int) -> bool:
        """The manifest's holder of (s, i) is up and said it does not have it (lost, rotted)."""
        holder = self.manifest.holder_of(s, i)
        return holder is not None and holder in self.answered

    def min_healthy(self) -> int:
        stripes = len(self.manifest.body.stripes)
        return min((self.healthy(s) for s in range(stripes)), default=self.n)


async def locate(network: Network, manifest: Manifest, *,
                 expected: dict[tuple[int, int], list[bytes]] | None = None,
                 live: set[bytes] | None = None) -> Locations:
    """Find which live peers hold each fragment of ``manifest``.

    Round 1 asks each fragment's expected holders (where the last check found it, else the
    manifest's recorded holder) about that fragment only; round 2 asks the closest peers and
    the remaining recorded holders about the fragments round 1 did not find. A healthy file
    costs one small HasFragments per holder. ``live``: node ids known to be up (this node's
    included); other peers count as unreachable without a call.
    """
    body = manifest.body
    n = body.k + body.m
    ranked = await network.closest(bytes(body.placement_key), n + spare(n))
    loc = Locations(manifest, ranked)
    slots = [(s, i) for s, stripe in enumerate(body.stripes) for i in range(len(stripe.fragments))]
    if not slots:
        return loc

    def hash_of(si: tuple[int, int]) -> bytes:
        return bytes(body.stripes[si[0]].fragments[si[1]].hash)

    async def ask(peer: bytes, wanted: list[tuple[int, int]]) -> None:
        if live is not None and peer not in live:
            loc.unreachable.add(peer)
            return
        hashes = list(dict.fromkeys(hash_of(si) for si in wanted))
        try:
            client = await network.client(peer)
            present = await asyncio.wait_for(client.has_fragments(hashes), CHECK_TIMEOUT_S)
        except (MeshError, TimeoutError, OSError):
            loc.unreachable.add(peer)
            return
        loc.answered.add(peer)
        have = {h for h, ok in zip(hashes, present, strict=True) if ok}
        for si in slots:                      # equal hashes: one blob serves every slot
            if hash_of(si) in have:
                holders = loc.held.setdefault(si, [])
                if peer not in holders:
                    holders.append(peer)

    first: dict[bytes, list[tuple[int, int]]] = {}
    for si in slots:
        recorded = manifest.holder_of(*si)
        peers = (expected or {}).get(si) or ([recorded] if recorded is not None else [])
        for p in peers:
            first.setdefault(p, []).append(si)
    await asyncio.gather(*(ask(p, wanted) for p, wanted in first.items()))
    rest = [si for si in slots if not loc.held.get(si)]
    if rest:
        asked = loc.answered | loc.unreachable
        others = [p for p in dict.fromkeys([*body.holders, *ranked]) if p not in asked]
        await asyncio.gather(*(ask(p, rest) for p in others))
    return loc


def pick_target(loc: Locations, s: int, i: int, taken: set[bytes],
                avoid: Iterable[bytes] = ()) -> bytes | None:
    """The live peer that should get fragment (s, i): the closest one holding nothing of stripe
    s yet (and not ``avoid``); with fewer peers than n, any up peer not holding index i. Peers
    that failed an audit lately (``loc.avoid``) come last: an honest one whose disk rotted is
    still where a small mesh must put the copy."""
    skip = set(avoid)
    busy = loc.holders_of_stripe(s) | taken | skip
    up = [p for p in loc.ranked if p not in loc.unreachable and p not in skip]
    up.sort(key=lambda p: p in loc.avoid)        # stable: closeness order otherwise
    for p in up:
        if p not in busy:
            return p
    for p in up:
        if p not in loc.held.get((s, i), []):
            return p
    return None


async def find_elsewhere(network: Network, manifest: Manifest, stripe: int,
                         indices: list[int]) -> dict[int, list[bytes]]:
    """Readers' fallback: live peers holding fragments ``indices`` of ``stripe`` that are not
    on the manifest's recorded holder (repaired, drained or rebalanced there). One
    HasFragments per peer among the closest to the placement key; hashes are verified again by
    whoever fetches."""
    body = manifest.body
    n = body.k + body.m
    wanted = {i: bytes(body.stripes[stripe].fragments[i].hash) for i in indices}
    hashes = list(dict.fromkeys(wanted.values()))
    found: dict[int, list[bytes]] = {}
    if not hashes:
        return found

    async def ask(peer: bytes) -> None:
        try:
            client = await network.client(peer)
            present = await asyncio.wait_for(client.has_fragments(hashes), CHECK_TIMEOUT_S)
        except (MeshError, TimeoutError, OSError):
            return
        have = {h for h, ok in zip(hashes, present, strict=True) if ok}
        for i, h in wanted.items():
            if h in have:
                found.setdefault(i, []).append(peer)

    recorded = {manifest.holder_of(stripe, i) for i in indices}
    peers = [p for p in await network.closest(bytes(body.placement_key), n + spare(n))
             if p not in recorded]
    await asyncio.gather(*(ask(p) for p in peers))
    return found

"""Rebuilding a stripe's lost fragments, and placing a fragment on a new peer.

Apart from the repair loop (repair.py) because this is where repair moves fragment bytes:
every byte fetched or stored here passes the one repair token bucket. Rebuild: fetch any k
fragments of the stripe, decode the stripe ciphertext, re-encode, keep the missing indices
(their hashes must equal the signed ones: repair needs no file key and cannot alter data) and
store each on the closest live peer that holds nothing of that stripe yet. Rebalancing
(rebalance.py) places the fragments it moves through the same ``place``.
"""

from __future__ import annotations

import asyncio
import logging

from mesh.errors import MeshError
from storage.crypto import STRIPE_OVERHEAD
from storage.fetch import Fragment
from storage.fraghash import matches
from storage.healing.counters import RepairCounters, manifest_id
from storage.healing.locate import Locations, pick_target
from storage.healing.ratelimit import TokenBucket
from storage.manifest import Manifest
from storage.placement import Network

log = logging.getLogger("storage.healing.repair")   # its lines read as repair's, as before


class Rebuilder:
    """Fetches, re-encodes and places fragments for the repairer.

    ``missing_since`` is the repairer's (manifest id, stripe, index) -> first seen missing; a
    fragment placed here is no longer missing.
    """

    def __init__(self, network: Network, bucket: TokenBucket, counters: RepairCounters,
                 missing_since: dict[tuple[bytes, int, int], float]) -> None:
        self.network = network
        self.bucket = bucket
        self.counters = counters
        self.missing_since = missing_since

    async def fetch_k(self, m: Manifest, loc: Locations, s: int) -> dict[int, Fragment]:
        """Any k hash-verified fragments of stripe s (data fragments first)."""
        body = m.body
        size = m.codec().fragment_size(m.stripe_len(s) + STRIPE_OVERHEAD)
        got: dict[int, Fragment] = {}
        for i in range(loc.n):
            if len(got) >= body.k:
                break
            for peer in loc.held.get((s, i), []):
                try:
                    await self.bucket.take(size)
                    client = await self.network.client(peer)
                    got[i] = await client.fetch_fragment(body.stripes[s].fragments[i].hash)
                    self.counters.bytes_fetched += len(got[i])
                    break
                except MeshError as exc:
                    log.info("repair fetch %s[%d.%d] from %s: %s", m.cid[:16], s, i,
                             peer.hex()[:16], exc)
        return got

    async def rebuild(self, m: Manifest, loc: Locations, s: int, indices: list[int]) -> int:
        body = m.body
        got = await self.fetch_k(m, loc, s)
        if len(got) < body.k:
            self.counters.stripes_unrecoverable += 1
            log.error("%s stripe %d: only %d of %d fragments reachable, cannot rebuild yet",
                      body.cid, s, len(got), body.k)
            return 0
        codec = m.codec()
        sealed_len = m.stripe_len(s) + STRIPE_OVERHEAD

        def recode() -> dict[int, bytes]:
            # rebuilt in place, re-encoded without copies; only the lost fragments leave
            views = codec.encode_views(codec.decode_into(got, sealed_len))
            return {i: bytes(views[i]) for i in indices}

        frags = await asyncio.to_thread(recode)
        placed = 0
        taken: set[bytes] = set()
        for i in indices:
            want = bytes(body.stripes[s].fragments[i].hash)
            if not matches(frags[i], want):
                self.counters.failures += 1
                log.error("%s stripe %d fragment %d re-encodes to other bytes than signed; "
                          "not stored", body.cid, s, i)
                continue
            if await self.place(m, loc, s, i, frags[i], taken):
                placed += 1
        if placed:
            self.counters.stripes_rebuilt += 1
            self.counters.fragments_rebuilt += placed
            log.info("repaired %s stripe %d: %d fragment(s) rebuilt", body.cid[:24], s, placed)
        return placed

    async def place(self, m: Manifest, loc: Locations, s: int, i: int, data: Fragment,
                    taken: set[bytes], avoid: tuple[bytes, ...] = ()) -> bytes | None:
        """Store fragment (s, i) on the best live peer that takes it; None if none did."""
        body = m.body
        tried: set[bytes] = set(avoid)
        while True:
            target = pick_target(loc, s, i, taken, avoid=tried)
            if target is None:
                log.warning("%s stripe %d fragment %d: no live peer to place it on",
                            body.cid, s, i)
                return None
            try:
                await self.bucket.take(len(data))
                client = await self.network.client(target)
                await client.store_fragment(body.file_id, s * 256 + i, data,
                                            bytes(body.stripes[s].fragments[i].hash))
            except MeshError as exc:
                log.info("placing %s[%d.%d] on %s failed: %s", body.cid[:16], s, i,
                         target.hex()[:16], exc)
                tried.add(target)
                continue
            self.counters.bytes_stored += len(data)
            taken.add(target)
            loc.held.setdefault((s, i), []).append(target)
            self.missing_since.pop((manifest_id(m), s, i), None)
            return target

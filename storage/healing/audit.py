"""Audits: the repair leader fetches a sample of fragments a holder says it has.

``locate`` takes a holder's HasFragments at its word, so a holder answering "present" for a
fragment it dropped kept repair from ever rebuilding that copy. Each pass the file's repair
leader (rank 0 only: one auditor per file) therefore fetches a random sample of the (fragment,
holder) pairs HasFragments reported and checks the bytes against the signed hash, as Storj's
audits do. NOT_FOUND or other bytes fail the audit: that copy counts as missing (repair
rebuilds it elsewhere like any lost copy) and for ``DISTRUST_S`` the holder is the last choice
for repaired fragments and gets no rebalanced ones. A timeout or an unreachable holder is
counted, not failed: it may be slow. But a holder that answered this pass's HasFragments and
still leaves the same copy unserved in ``WITHHOLD_STRIKES`` passes in a row (a timeout, or an
instant "busy" forever) withholds it: that fails the audit too, so a holder cannot keep a copy
counted while serving it to nobody.

Cost: fragments are per stripe, so an audit reads one fragment (stripe/k bytes plus parity
overhead). Audit bytes pass the repair token bucket and an audit budget of ``rate`` bytes/s
that accrues between passes (capped at one interval's worth, at least a minute's), so kicked
passes do not audit more. Each pair is sampled with probability budget / bytes of all pairs
the last pass saw, so coverage is uniform over pairs whatever the size of each file.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from mesh.errors import MeshError, NotFoundError
from storage.crypto import STRIPE_OVERHEAD
from storage.fraghash import matches
from storage.healing.locate import Locations
from storage.healing.ratelimit import TokenBucket
from storage.manifest import Manifest
from storage.placement import Network

log = logging.getLogger("storage.healing.repair")

AUDIT_RATE_BPS = 64 * 1024       # default budget: ~5.7 GB a day per leader
AUDIT_TIMEOUT_S = 30.0
AUDIT_FILE_S = 60.0              # no new fetch after this long on one file (slow holders)
DISTRUST_S = 3600.0              # a holder that failed an audit is placed on last
MAX_TRACKED = 1024               # holders remembered (failures, distrust)
WITHHOLD_STRIKES = 3             # passes in a row a responsive holder left one copy unserved


def fragment_bytes(m: Manifest, s: int) -> int:
    """Size of one fragment of stripe ``s`` (what an audit of it reads)."""
    return int(m.codec().fragment_size(m.stripe_len(s) + STRIPE_OVERHEAD))


class Auditor:
    """Samples and fetches (fragment, holder) pairs; ``rng`` seeds the sample, ``size_of``
    and ``clock`` stand in for the codec and time (unit tests)."""

    def __init__(self, network: Network, bucket: TokenBucket, *, rate: float,
                 interval: float, rng: random.Random | None = None,
                 size_of: Callable[[Manifest, int], int] = fragment_bytes,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.network = network
        self.bucket = bucket
        self.rate = float(rate)
        self.cap = self.rate * max(interval, 60.0)
        self.rng = rng or random.Random()
        self.size_of = size_of
        self.clock = clock
        self.tokens = self.cap
        self.probability = 1.0
        self._stamp = clock()
        self._seen = 0             # bytes of every candidate pair this pass
        self._seen_last = 0
        self.audits = self.failures = self.timeouts = self.bytes = self.withheld = 0
        self.failed_by: dict[bytes, int] = {}
        self.distrusted: dict[bytes, float] = {}   # node id -> until (monotonic)
        self.strikes: dict[tuple[bytes, bytes], int] = {}   # (hash, holder) -> unserved passes

    def begin_pass(self, manifests: list[Manifest] | None = None) -> None:
        """Refill the budget; set the sampling probability from the last pass's total; shuffle
        the pass's ``manifests`` so the budget favours no file."""
        if manifests:
            self.rng.shuffle(manifests)
        now = self.clock()
        self.tokens = min(self.cap, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._seen:
            self._seen_last = self._seen
        self._seen = 0
        budget = max(self.tokens, 0.0)
        self.probability = min(1.0, budget / self._seen_last) if self._seen_last else 1.0

    def avoid(self) -> set[bytes]:
        """Holders that failed an audit lately: repair places on them last."""
        now = self.clock()
        for peer in [p for p, until in self.distrusted.items() if until <= now]:
            del self.distrusted[peer]
        return set(self.distrusted)

    def sample(self, m: Manifest, loc: Locations) -> list[tuple[int, bytes, bytes]]:
        """(stripe, hash, holder) to audit: each reported pair not on this node, once per
        distinct (hash, holder), kept with ``probability``."""
        me = self.network.self_id
        pairs: dict[tuple[bytes, bytes], int] = {}
        for (s, i), peers in sorted(loc.held.items()):
            h = bytes(m.body.stripes[s].fragments[i].hash)
            for p in peers:
                if p != me:
                    pairs.setdefault((h, p), s)
        out = []
        for (h, p), s in pairs.items():
            self._seen += self.size_of(m, s)
            if self.rate > 0 and self.rng.random() < self.probability:
                out.append((s, h, p))
        self.rng.shuffle(out)
        return out

    async def check(self, m: Manifest, loc: Locations, *, lead: bool) -> int:
        """Mark the distrusted holders in ``loc``; the file's leader (``lead``) also audits."""
        loc.avoid |= self.avoid()
        return await self.audit(m, loc) if lead else 0

    async def audit(self, m: Manifest, loc: Locations) -> int:
        """Audit a sample of ``loc``'s pairs; drop failed copies from it. Returns failures."""
        failed = 0
        slow: set[bytes] = set()
        deadline = self.clock() + AUDIT_FILE_S
        for s, h, peer in self.sample(m, loc):
            if self.tokens <= 0 or self.clock() > deadline:
                break
            if peer in slow:                 # one timeout per holder and file is enough
                continue
            size = self.size_of(m, s)
            self.tokens -= size              # may go into debt: big fragments still pass
            await self.bucket.take(size)
            self.audits += 1
            verdict = await self._fetch(m, s, h, peer)
            if verdict is None and peer in loc.answered and self._strike(h, peer):
                verdict = False                  # answers HasFragments, never serves the copy
            if verdict is None:
                slow.add(peer)
            elif not verdict:
                failed += 1
                self._fail(m, loc, h, peer)
            else:
                self.strikes.pop((h, peer), None)
        return failed

    def _strike(self, h: bytes, peer: bytes) -> bool:
        """Count one more pass in which responsive ``peer`` left copy ``h`` unserved; True
        once that makes ``WITHHOLD_STRIKES`` (the count starts over)."""
        count = self.strikes.pop((h, peer), 0) + 1
        if count >= WITHHOLD_STRIKES:
            self.withheld += 1
            return True
        self.strikes[(h, peer)] = count
        while len(self.strikes) > 4 * MAX_TRACKED:
            del self.strikes[next(iter(self.strikes))]
        return False

    async def _fetch(self, m: Manifest, s: int, h: bytes, peer: bytes) -> bool | None:
        """True: the holder served the fragment; False: it failed; None: no answer."""
        try:
            async with asyncio.timeout(AUDIT_TIMEOUT_S):
                data = await (await self.network.client(peer)).fetch_fragment(h)
        except NotFoundError as exc:         # absent, or the client saw other bytes
            log.warning("audit: %s does not serve %s[%d] %s it reported: %s", peer.hex()[:16],
                        m.body.cid[:16], s, h.hex()[:16], exc)
            return False
        except (MeshError, TimeoutError, OSError) as exc:
            self.timeouts += 1               # slow or down: not proof of a lie
            log.info("audit of %s on %s unanswered: %s", h.hex()[:16], peer.hex()[:16], exc)
            return None
        self.bytes += len(data)
        if not matches(data, h):             # a trusted (own) client does not re-hash
            log.warning("audit: %s served other bytes for %s", peer.hex()[:16], h.hex()[:16])
            return False
        return True

    def _fail(self, m: Manifest, loc: Locations, h: bytes, peer: bytes) -> None:
        self.failures += 1
        self.failed_by[peer] = self.failed_by.get(peer, 0) + 1
        self.distrusted[peer] = self.clock() + DISTRUST_S
        for table in (self.failed_by, self.distrusted):
            while len(table) > MAX_TRACKED:
                del table[next(iter(table))]
        loc.avoid.add(peer)
        for (s, i), peers in loc.held.items():   # equal hashes: every slot of that blob
            if peer in peers and bytes(m.body.stripes[s].fragments[i].hash) == h:
                peers.remove(peer)

    def status(self) -> dict[str, Any]:
        worst = sorted(self.failed_by.items(), key=lambda kv: -kv[1])[:20]
        return {"audit_rate_Bps": self.rate, "audits": self.audits,
                "audit_failures": self.failures, "audit_timeouts": self.timeouts,
                "audit_bytes": self.bytes, "audit_withheld": self.withheld,
                "audit_probability": round(self.probability, 6),
                "audit_failed_holders": {p.hex()[:16]: n for p, n in worst},
                "audit_distrusted": len(self.distrusted)}

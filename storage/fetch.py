"""The fetches of the read path: verified manifests from their replicas, any k verified
fragments of a stripe from their holders (see storage/files.py for the whole Get)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable

from mesh.errors import MeshError, NotFoundError, UnavailableError
from proto import storage_pb2
from storage.manifest import Manifest, manifest_key, verify_answer
from storage.placement import Network, assign
from storage.results import PushOptions
from storage.tail import read_tail

log = logging.getLogger(__name__)

HEDGE_S = 0.02     # how long the closest manifest replica has before the others are asked
# A fragment read with no answer for max(FRAGMENT_HEDGE_S, 4 x the stripe's fastest fetch)
# asks one more holder (any k fragments decode), like Storj's long-tail cancellation: under 20%
# packet loss single fetches stalled 15-30 s in TCP retransmission backoff, holding up the Get.
FRAGMENT_HEDGE_S = 0.5
Fragment = bytes | memoryview    # a peer's is a view into its reply frame (peer_client.py)


class ReadHints:
    """What one read learns as it goes: dead holders, the placement key's closest peers."""

    def __init__(self) -> None:
        self.dead: set[bytes] = set()
        self._ranked: list[bytes] | None = None
        self._lock = asyncio.Lock()

    async def ranked(self, network: Network, body: storage_pb2.ManifestBody) -> list[bytes]:
        async with self._lock:
            if self._ranked is None:
                n = body.k + body.m
                try:
                    self._ranked = await network.closest(body.placement_key, n + min(n, 8))
                except MeshError:
                    self._ranked = []
            return self._ranked


class Fetcher:
    """Manifest and fragment fetches over a Network, at most ``concurrency`` fragments at once."""

    def __init__(self, network: Network, defaults: PushOptions, counters: dict[str, int],
                 concurrency: int) -> None:
        self.network = network
        self.defaults = defaults
        self.counters = counters
        self._sem = asyncio.Semaphore(concurrency)

    async def manifests(self, cid: str,
                        enough: Callable[[Manifest], bool] | None = None,
                        unreachable: list[bytes] | None = None) -> list[Manifest]:
        """Verified manifests for a CID from its closest peers (widening once if none).

        Returns as soon as a replica's answer holds a manifest for which ``enough`` is true
        (the other replicas' answers are then not awaited).
        """
        key = manifest_key(cid)
        asked: set[bytes] = set()
        found: dict[bytes, Manifest] = {}

        tail = read_tail(self.network, self.counters)   # a frozen replica is left out

        async def one(node_id: bytes) -> list[storage_pb2.SignedManifest]:
            try:
                client = await self.network.client(node_id)
                return await tail.call(node_id, lambda: client.fetch_manifests(cid))
            except MeshError as exc:
                log.info("manifests of %s from %s: %s", cid, node_id.hex()[:16], exc)
                if unreachable is not None:
                    unreachable.append(node_id)
                return []

        async def keep(answer: list[storage_pb2.SignedManifest]) -> bool:
            hit = False
            for signed, m in zip(answer, await verify_answer(answer, cid), strict=True):
                if m is None:
                    continue
                found.setdefault(hashlib.sha256(signed.body).digest(), m)
                hit = hit or (enough is not None and enough(m))
            return hit

        for n in (self.defaults.m + 1, 3 * (self.defaults.m + 1) + 2):
            peers = [p for p in await self.network.closest(key, n) if p not in asked]
            asked.update(peers)
            fresh = bool(peers)
            me = self.network.self_id
            if me in peers:            # a replica here: no channel, and no remote work if enough
                peers.remove(me)
                if await keep(await one(me)):
                    return list(found.values())
            # The first round is hedged: the closest replica alone, then the others if it has
            # not answered within HEDGE_S or answered without enough. Waking one peer instead
            # of m+1 made a cold 1 KiB Get ~25% faster on two cores (docs/status.md, #4); the
            # widening round asks everyone at once.
            first_round = n == self.defaults.m + 1
            now, waiting = (peers[:1], peers[1:]) if first_round else (peers, [])
            pending = {asyncio.create_task(one(p)) for p in now}
            try:
                while pending or waiting:
                    done, pending = await asyncio.wait(
                        pending, timeout=HEDGE_S if waiting else None,
                        return_when=asyncio.FIRST_COMPLETED)
                    if sum([await keep(task.result()) for task in done]):
                        return list(found.values())
                    if waiting:           # no answer in time, or not enough: ask the rest
                        pending |= {asyncio.create_task(one(p)) for p in waiting}
                        waiting = []
            finally:
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
            if found or not fresh:
                break
        return list(found.values())

    async def fragments(self, manifest: Manifest, s: int,
                        hints: ReadHints | None = None) -> dict[int, Fragment]:
        """Any k verified fragments of stripe s; UnavailableError listing what is missing.

        Order: data fragments first (decoding them is a copy), holders that already failed in
        this read last. If the recorded holders cannot supply k, fragment i is also looked for
        on the i-th XOR-closest live peer to the manifest's placement key, then on the other
        close peers: where repair puts a rebuilt fragment (the owner-signed manifest cannot be
        re-signed by a repairing node).
        """
        body = manifest.body
        k = body.k
        frags = body.stripes[s].fragments
        hints = hints or ReadHints()
        recorded = [(i, manifest.holder_of(s, i)) for i in range(len(frags))]
        candidates: list[tuple[int, bytes | None]] = sorted(
            recorded, key=lambda c: c[1] in hints.dead)
        tried: set[tuple[int, bytes | None]] = set()
        got: dict[int, Fragment] = {}
        missing: dict[int, str] = {}
        pending: dict[asyncio.Task[Fragment], tuple[int, bytes | None]] = {}
        fell_back = False

        async def fetch(i: int, holder: bytes | None) -> Fragment:
            if holder is None:
                raise NotFoundError("never placed")
            async with self._sem:
                client = await self.network.client(holder)
                return await client.fetch_fragment(frags[i].hash)

        loop = asyncio.get_running_loop()
        fastest: float | None = None           # this stripe's quickest fetch so far
        launched: dict[asyncio.Task[Fragment], float] = {}
        extra = 0                              # stragglers hedged so far
        try:
            while len(got) < k:
                candidates = [c for c in candidates if c[0] not in got and c not in tried]
                if not candidates and not pending and not fell_back:
                    fell_back = True
                    ranked = await hints.ranked(self.network, body)
                    short = [i for i in range(len(frags)) if i not in got]
                    candidates = []
                    if ranked:
                        placed = assign(ranked, len(frags))     # repair's rule, wrapping too
                        candidates = [(i, placed[i]) for i in short]
                    candidates += [(i, p) for i in short for p in ranked]
                    candidates = [c for c in dict.fromkeys(candidates)
                                  if c not in tried and c[1] not in hints.dead]
                while candidates and len(pending) < k - len(got) + extra:
                    c = candidates.pop(0)
                    tried.add(c)
                    task = asyncio.create_task(fetch(*c))
                    pending[task] = c
                    launched[task] = loop.time()
                if not pending:
                    break
                hedge = _hedge_delay(fastest) if candidates else None
                done, _ = await asyncio.wait(pending, timeout=hedge,
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:        # a straggler (lossy path, busy peer): ask one more holder
                    extra += 1
                    self.counters["fragment_hedges"] += 1
                    continue
                for task in done:
                    i, holder = pending.pop(task)
                    took = loop.time() - launched.pop(task)
                    try:
                        data = task.result()
                    except MeshError as exc:
                        if isinstance(exc, UnavailableError) and holder is not None:
                            hints.dead.add(holder)
                        if "corrupt" in str(exc):
                            self.counters["corrupt_fragments"] += 1
                        if (i, holder) in recorded:
                            who = holder.hex()[:16] if holder else "nobody"
                            missing[i] = f"fragment {i} on {who}: {exc}"
                        continue
                    fastest = took if fastest is None else min(fastest, took)
                    if i not in got:
                        got[i] = data
                        missing.pop(i, None)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if len(got) < k:
            raise UnavailableError(
                f"{body.cid}: stripe {s} has {len(got)} of the {k} fragments needed; missing: "
                + "; ".join(missing[i] for i in sorted(missing)))
        return dict(sorted(got.items())[:k])


def _hedge_delay(fastest: float | None) -> float:
    """How long a stripe's reads may go without an answer before one more holder is asked:
    before any answer, twice the floor (a first connection may still be handshaking)."""
    if fastest is None:
        return 2 * FRAGMENT_HEDGE_S
    return max(FRAGMENT_HEDGE_S, 4 * fastest)

"""One Push's fragment stores given up while in flight, whose copies may still land.

The tail (storage/tail.py) cancels a store unanswered too long on our side only: a frozen peer
runs it when it resumes. ``LateStores.watch`` wraps each store call to remember the ones
cancelled after they started; after the Push, ``extra_copies`` picks those the final manifest
records elsewhere, for the collector (storage/late_copies.py, where the whole story is).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from storage.manifest import Manifest

T = TypeVar("T")


class LateStores:
    """One Push's fragment stores given up while in flight: they may still land."""

    def __init__(self) -> None:
        self.stores: list[tuple[bytes, str, list[bytes]]] = []    # (peer, file_id, hashes)

    def watch(self, peer: bytes, file_id: str, digests: list[bytes],
              store: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """``store`` remembered if it is cancelled after it started (the tail gave it up)."""
        async def watched() -> T:
            try:
                return await store()
            except asyncio.CancelledError:
                self.stores.append((peer, file_id, digests))
                raise
        return watched

    def extra_copies(self, manifest: Manifest) -> list[tuple[bytes, bytes]]:
        """(peer, hash) of the given-up fragments ``manifest`` records at another holder,
        alone in its stripe there (the late copy adds no spread)."""
        if not self.stores:
            return []                   # the usual Push: no manifest walk
        where: dict[bytes, list[bytes | None]] = {}
        for s, stripe in enumerate(manifest.body.stripes):
            holders = [manifest.holder_of(s, i) for i in range(len(stripe.fragments))]
            alone = Counter(holders)
            for i, frag in enumerate(stripe.fragments):
                h = holders[i]
                where.setdefault(frag.hash, []).append(
                    h if h is not None and alone[h] == 1 else None)
        out: dict[tuple[bytes, bytes], None] = {}
        for peer, file_id, digests in self.stores:
            if file_id != manifest.file_id:
                continue
            for d in digests:
                at = where.get(d, [None])
                if peer not in at and all(h is not None for h in at):
                    out[(peer, d)] = None
        return list(out)

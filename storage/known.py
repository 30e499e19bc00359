"""Manifests this node wrote or read lately, kept in memory for their owners' next reads.

Why: a Get first needs the file's manifest, and unless this node is one of the m+1 manifest
replicas that is a round trip to another peer. A node that just pushed a file, or read it, has
the signed manifest in hand; keeping it saves that round (the common read-after-write case,
IPFS nodes do the same with blocks they added). Only the owner's reads and public files are
served from here: a manifest the owner later re-seals without a revoked reader's key must not
stay readable for that reader through a stale copy, while an owner (or anyone, for a public
file) can read every version of it anyway. Manifests are signed and verified on the way in;
repair never re-signs one, so a kept copy never goes stale for its owner.
"""

from __future__ import annotations

from collections import OrderedDict

from storage.manifest import Manifest

CAPACITY = 256


class KnownManifests:
    """An LRU of verified manifests by CID (a few per CID: one per owner and version)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.hits = 0
        self._by_cid: OrderedDict[str, dict[bytes, Manifest]] = OrderedDict()

    def remember(self, manifest: Manifest) -> None:
        kept = self._by_cid.setdefault(manifest.cid, {})
        self._by_cid.move_to_end(manifest.cid)
        kept[bytes(manifest.signed.body)] = manifest
        while len(kept) > 4:                       # re-sealed versions of one file: newest
            kept.pop(min(kept, key=lambda b: kept[b].body.created_ms))
        while len(self._by_cid) > self.capacity:
            self._by_cid.popitem(last=False)

    def readable(self, cid: str, reader: bytes) -> list[Manifest]:
        """The kept manifests of ``cid`` that ``reader`` owns, or that are public."""
        kept = self._by_cid.get(cid)
        if not kept:
            return []
        found = [m for m in kept.values() if m.body.owner_key == reader or m.body.public_key]
        if found:
            self._by_cid.move_to_end(cid)
            self.hits += 1
        return found

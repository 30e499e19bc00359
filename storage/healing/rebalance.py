"""Rebalancing: give every fragment of a stripe its own peer among the n closest live ones.

Apart from the repair loop (repair.py) because it answers a different question: not "is a
fragment missing" but "is each fragment where a reader expects it". The file's repair leader
runs it when nothing of the file is due for rebuilding, so after a join fragments move to the
new closest peers, and two fragments that share a peer (a repair raced a membership change)
are spread again. Moves go through the rebuilder's ``place`` and its token bucket.
"""

from __future__ import annotations

import contextlib

from mesh.errors import MeshError
from storage.healing.locate import Locations
from storage.healing.rebuild import Rebuilder
from storage.manifest import Manifest


async def rebalance(rebuilder: Rebuilder, m: Manifest, loc: Locations) -> int:
    """Move the fragments of ``m`` that sit on no top-n peer of their own; how many moved.

    A fragment moves when none of its copies sits on a top-n peer that holds nothing else
    of the stripe: after a join (a closer peer appeared) or when two fragments share a peer
    (a repair raced a membership change). Equal fragments (the zero padding of a short last
    stripe) are one blob and move together. A copy on the manifest's recorded holder stays
    (readers look there first); other old copies are deleted once the new peer has one. A
    peer that failed an audit lately (``loc.avoid``) gets no moved fragment.
    """
    network = rebuilder.network
    body = m.body
    n = loc.n
    top = [p for p in loc.ranked if p not in loc.unreachable][:n]
    moved = 0
    for s in range(len(body.stripes)):
        groups: dict[bytes, list[int]] = {}
        for i, f in enumerate(body.stripes[s].fragments):
            groups.setdefault(bytes(f.hash), []).append(i)
        taken: set[bytes] = set()
        for h, indices in groups.items():
            where = list(loc.held.get((s, indices[0]), []))
            if not where:
                continue                               # missing: repair's job
            others = {p for h2, ix in groups.items() if h2 != h
                      for p in loc.held.get((s, ix[0]), [])}
            if any(p in top and p not in others for p in where):
                continue
            free = [p for p in top if p not in loc.holders_of_stripe(s) and p not in taken
                    and p not in loc.avoid]
            if not free:
                continue
            data = None
            for peer in where:
                try:
                    data = await (await network.client(peer)).fetch_fragment(h)
                    break
                except MeshError:
                    continue
            if data is None:
                continue
            await rebuilder.bucket.take(len(data))
            rebuilder.counters.bytes_fetched += len(data)
            target = await rebuilder.place(m, loc, s, indices[0], data, taken,
                                           avoid=tuple(p for p in loc.ranked if p not in free))
            if target is None:
                continue
            for i in indices[1:]:
                loc.held.setdefault((s, i), []).append(target)
            moved += 1
            recorded = {m.holder_of(s, i) for i in indices}
            for peer in where:
                if peer in recorded or peer == target:
                    continue
                try:
                    await (await network.client(peer)).delete_fragment(
                        h, body.file_id, m.signed)
                except MeshError:
                    continue
                for i in indices:
                    with contextlib.suppress(ValueError):
                        loc.held[(s, i)].remove(peer)
    rebuilder.counters.fragments_moved += moved
    return moved

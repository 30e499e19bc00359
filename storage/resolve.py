"""Which manifests a Get of a CID or file_id may use, best first (storage/files.py's resolve
and readers; storage/reader.py tries them in this order).

A file_id names its owner (the document record), so only that owner's manifests of the file
count. A CID names content only: any member may have signed a manifest for it (the same content
pushed by several users), so the ranking puts first what is most likely to serve — not one
that failed here lately, then this user's own, then ``prefer``'s (a version's writer), then
public ones, then the newest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import nacl.signing

from mesh.errors import InvalidArgumentError, NotFoundError
from storage.cid import is_cid
from storage.documents import is_file_id
from storage.manifest import Manifest

if TYPE_CHECKING:
    from storage.files import FileStore


async def ranked_manifests(store: FileStore, ref: str,
                           user: nacl.signing.SigningKey | None, *, fresh: bool = False,
                           prefer: bytes = b"") -> list[Manifest]:
    """The manifests ``ref`` names, best first: none that failed a read here lately
    (reader.py), this user's own, ``prefer``'s (a version's writer), public, newest."""
    if is_cid(ref):
        cid, want_id, want_owner = ref, None, None
    elif is_file_id(ref):
        doc = await store.documents.record(ref)
        cid, want_id, want_owner = doc.cid, ref, doc.owner_key
    else:
        raise InvalidArgumentError(f"not a CID or file_id: {ref!r:.80}")
    me = bytes(user.verify_key) if user is not None else b""

    def enough(m: Manifest) -> bool:
        return (want_id is None or m.file_id == want_id) and m.readable_by(me)

    down: list[bytes] = []
    manifests = [] if fresh else [m for m in store.known.readable(cid, me) if enough(m)]
    if not manifests:          # not written or read here lately (storage/known.py)
        # fresh: hear every replica, so a lagging one (it missed a grant while down)
        # cannot hand back an older manifest that a new grant would then build on
        manifests = await store.fetch_manifests(cid, None if fresh else enough, down)
        for m in manifests:
            store.known.remember(m)
    if want_id is not None:
        manifests = [m for m in manifests
                     if m.file_id == want_id and m.body.owner_key == want_owner]
    if not manifests:
        raise NotFoundError(f"no manifest found for {ref} on the live peers closest to its "
                            "manifest key" + (
            f"; missing: {len(down)} manifest replica peer(s) unreachable ("
            + ", ".join(p.hex()[:16] for p in down) + ")" if down else ""))
    manifests.sort(key=lambda m: (store.failed.has(m), m.body.owner_key != me,
                                  m.body.owner_key != prefer, not m.body.public_key,
                                  -m.body.created_ms))
    return manifests

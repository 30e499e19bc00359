"""Whether a holder may drop the fragment copy a DeleteFragment asks it to drop.

Any mesh member may ask (storage/fragment_handlers.py), sending the file's owner-signed manifest:
repair drops the extra copies a move leaves (storage/healing/repair.py), the pushing node the
copies that land after a Push gave their store up (storage/late_copies.py). But one file has
several signed manifests over its life: a one-stripe Push's early one and the correction that
names the spare a given-up holder's fragment went to (storage/push.py), a Grant's re-signed
one. A member that kept an older one (a manifest replica, a peer that stored it late, the
pusher) could send it to the holder the newest one records, and the old manifest, recording
the fragment elsewhere, would have the holder drop the only recorded copy. So a copy goes only
if all of these hold:

- ``check_sent``: the sent manifest verifies, is the file's, names the fragment and does not
  record it here (INVALID_ARGUMENT, PERMISSION_DENIED);
- ``check_newest``, over the manifests of the same file and owner this node keeps and the
  CID's manifest replicas answer with: none at least as new as the sent one records the
  fragment here (PERMISSION_DENIED: it stays), none is newer than the sent one
  (FAILED_PRECONDITION: the caller holds a superseded manifest), and at least one replica
  answered with one (UNAVAILABLE otherwise: the holder cannot tell which is newest, so it keeps
  the copy; the late-copies collector retries).

Left: a delete landing between a spare's store and the corrected manifest reaching the
replicas still sees only the early manifest (the window is one manifest store's round trip).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from mesh.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    MeshError,
    PermissionDeniedError,
    UnavailableError,
)
from proto import storage_pb2
from storage.manifest import Manifest, ManifestStore, verify_manifest

# The verified manifests the CID's manifest replicas hold (FileStore.fetch_manifests).
Replicas = Callable[[str], Awaitable[list[Manifest]]]


def records_here(manifest: Manifest, digest: bytes, here: bytes | None) -> bool:
    """Whether ``manifest`` records fragment ``digest`` (in any slot) at node ``here``."""
    return here is not None and any(
        frag.hash == digest and manifest.holder_of(s, i) == here
        for s, stripe in enumerate(manifest.body.stripes)
        for i, frag in enumerate(stripe.fragments))


def check_sent(req: storage_pb2.DeleteFragmentRequest, here: bytes | None) -> Manifest:
    """The request's own manifest, verified; raises unless it allows the delete by itself."""
    if not req.HasField("manifest"):
        raise InvalidArgumentError("delete needs the file's signed manifest")
    manifest = verify_manifest(req.manifest)
    if manifest.file_id != req.file:
        raise InvalidArgumentError("the manifest is another file's")
    if not any(f.hash == req.hash for s in manifest.body.stripes for f in s.fragments):
        raise InvalidArgumentError("the manifest names no such fragment")
    if records_here(manifest, req.hash, here):
        raise PermissionDeniedError("the manifest records this fragment here: it stays")
    return manifest


def check_newest(sent: Manifest, digest: bytes, here: bytes | None,
                 local: Iterable[Manifest], replicas: Iterable[Manifest]) -> None:
    """Raises unless the newest manifests known (``local``: this node's own, ``replicas``: the
    replicas' answers) allow the delete that ``sent`` asks for (rules: module docstring)."""
    def same_file(m: Manifest) -> bool:
        # another owner's manifest under this file_id proves nothing about the owner's file
        return m.file_id == sent.file_id and m.body.owner_key == sent.body.owner_key

    remote = [m for m in replicas if same_file(m)]
    known = [m for m in local if same_file(m)] + remote
    t = sent.body.created_ms
    if any(m.body.created_ms >= t and records_here(m, digest, here) for m in known):
        raise PermissionDeniedError("a manifest of the file at least as new as the one sent "
                                    "records this fragment here: it stays")
    if any(m.body.created_ms > t for m in known):
        raise FailedPreconditionError("a newer manifest of the file exists: the one sent is "
                                      "superseded")
    if not remote:
        raise UnavailableError("cannot confirm the file's newest manifest (no manifest replica "
                               "answered with one): the copy stays, try later")


class DeleteGuard:
    """The checks of one holder, against its own manifests and the file's replicas."""

    def __init__(self, manifests: ManifestStore, here: bytes | None) -> None:
        self.manifests = manifests
        self.here = here
        # set by StorageService once its FileStore exists; None: deletes are refused
        self.replicas: Replicas | None = None

    async def confirm(self, sent: Manifest, digest: bytes) -> None:
        """``check_newest`` over this node's manifests of the CID and its replicas' answers."""
        def local() -> list[Manifest]:
            return [verify_manifest(s, sent.cid) for s in self.manifests.get(sent.cid)]

        mine = await asyncio.to_thread(local)
        theirs: list[Manifest] = []
        if self.replicas is not None:
            try:
                theirs = await self.replicas(sent.cid)
            except MeshError:            # e.g. no live peer: nothing confirmed
                theirs = []
        check_newest(sent, digest, self.here, mine, theirs)

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
- ``check_owner``: the sent manifest is signed by the file's owner, the key the file_id is bound
  to (a document record carries the nonce that binds them, storage/documents.py; this node's
  own, else the newest the document replicas answer with). A manifest names its file_id and
  CID freely, so any member could sign one naming another user's file_id and fragments under a
  CID of its own, store it as that CID's manifest, and have every holder drop the owner's
  copies (PERMISSION_DENIED; UNAVAILABLE when no record is found: the copy stays);
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
from storage.documents import DocumentStore, verify_document
from storage.manifest import Manifest, ManifestStore, verify_manifest

# The verified manifests the CID's manifest replicas hold (FileStore.fetch_manifests).
Replicas = Callable[[str], Awaitable[list[Manifest]]]
# The newest verified document record of a file_id the replicas hold (Documents.record).
Records = Callable[[str], Awaitable[storage_pb2.DocumentBody]]


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


def check_owner(sent: Manifest, owner_key: bytes) -> None:
    """Raises unless ``sent`` is signed by ``owner_key``, the key its file_id is bound to."""
    if sent.body.owner_key != owner_key:
        raise PermissionDeniedError("the manifest is not signed by the file's owner: the copy "
                                    "stays")


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

    def __init__(self, manifests: ManifestStore, here: bytes | None,
                 documents: DocumentStore | None = None) -> None:
        self.manifests = manifests
        self.here = here
        self.documents = documents      # this node's document records (a replica's)
        # set by StorageService once its FileStore exists; None: deletes are refused
        self.replicas: Replicas | None = None
        self.records: Records | None = None

    async def owner(self, file_id: str) -> bytes:
        """The key ``file_id`` is bound to, from a verified document record (this node's,
        else the document replicas'); UnavailableError if none is found."""
        def local() -> bytes | None:
            if self.documents is None:
                return None
            for signed in self.documents.get(file_id):
                return bytes(verify_document(signed, file_id).owner_key)
            return None

        found = await asyncio.to_thread(local)
        if found is not None:
            return found
        if self.records is not None:
            try:
                return bytes((await self.records(file_id)).owner_key)
            except MeshError:            # no replica holds one, or none answered
                pass
        raise UnavailableError(f"cannot confirm who owns {file_id} (no document record "
                               "found): the copy stays, try later")

    async def confirm(self, sent: Manifest, digest: bytes) -> None:
        """``check_owner`` against the file's document record, then ``check_newest`` over
        this node's manifests of the CID and its replicas' answers."""
        check_owner(sent, await self.owner(sent.file_id))
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

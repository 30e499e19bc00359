"""The versions write path: Revise, Synchronous (with the owner's first record) and Grant.

Revise: the content is pushed like any Push (erasure-coded, encrypted with a fresh key sealed to
the owner, every granted writer and the first version's readers, or public if the file is),
then the writer's node signs a version record whose vector dominates its parents and pushes it
to the replicas (the pipeline is in ``VersionWriter.revise``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mesh.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    MeshError,
    NotFoundError,
    PeerCallError,
    PermissionDeniedError,
)
from mesh.identity import Identity
from proto import versions_pb2
from storage.versions.grants import sign_revocation
from storage.versions.local import LocalVersions
from storage.versions.reads import cancel
from storage.versions.records import (
    file_id_text,
    parse_file_id,
    record_id,
    sign_grant,
    writer_id,
)
from storage.versions.sync import SyncResult
from storage.versions.vset import Version, VersionSet

log = logging.getLogger(__name__)


class VersionWriter:
    """Signs version records and grants on this node and pushes them to the replicas."""

    def __init__(self, local: LocalVersions, counters: dict[str, int]) -> None:
        self.local = local
        self.store = local.store
        self.counters = counters
        self.last_revise_ms: dict[str, float] = {}
        self._readers: dict[bytes, tuple[bool, list[bytes]]] = {}

    # -- file setup --------------------------------------------------------------------------
    async def _ensure_bound(self, fid: bytes, vs: VersionSet, user: Identity | None) -> None:
        """Bind the set to its owner and, for the owner, write the genesis from the document."""
        if vs.binding is not None and len(vs) > 0:
            return
        doc = await self.local.storage.files.documents.record(file_id_text(fid))
        binding = versions_pb2.FileBinding(file_id=fid, owner_key=doc.owner_key, nonce=doc.nonce)
        vs.bind(binding)
        if len(vs) == 0 and user is not None and user.public_key == doc.owner_key:
            self.store.revise(user, binding, doc.cid, [])

    async def _content_options(self, vs: VersionSet) -> tuple[bool, list[bytes]]:
        """(public, readers) for a new version's content: like the file's first version."""
        fid = vs.file_id
        if fid not in self._readers:
            public, readers = False, list[bytes]()
            firsts = [v for v in vs.valid() if not v.record.parents]
            if firsts:
                try:
                    for m in await self.local.storage.files.fetch_manifests(firsts[0].cid):
                        public = public or bool(m.body.public_key)
                        readers.extend(k.recipient for k in m.body.keys)
                except MeshError as exc:
                    log.warning("readers of %s unknown: %s", file_id_text(fid), exc)
            self._readers[fid] = (public, list(dict.fromkeys(readers)))
        public, readers = self._readers[fid]
        return public, list(dict.fromkeys([*vs.writers(), *readers]))

    # -- Revise ------------------------------------------------------------------------------
    def _parents(self, vs: VersionSet, file_id: str, base_versions: list[str] | None
                 ) -> list[bytes]:
        heads = vs.heads()
        if base_versions:
            try:
                parents = sorted({bytes.fromhex(b) for b in base_versions})
            except ValueError:
                raise InvalidArgumentError("base versions are hex version ids") from None
            for p in parents:
                if p not in vs.valid_ids():
                    raise NotFoundError(f"no version {p.hex()} of {file_id}")
            return parents
        if len(heads) > 1:
            raise FailedPreconditionError(
                f"{file_id} has {len(heads)} conflicting heads "
                f"({', '.join(h.id.hex()[:16] for h in heads)}): name the base version(s); "
                "naming all of them merges")
        return [h.id for h in heads]

    def _check_writer(self, vs: VersionSet, user: Identity, parents: list[bytes]) -> None:
        me = writer_id(user.public_key)
        vs.authorize(user.public_key, vs.next_vector(user.public_key, parents,
                                                     floor=self.store.counter(vs.file_id, me)))

    async def _push_content(self, vs: VersionSet, data: bytes, user: Identity) -> Any:
        from storage.files import PushOptions
        public, readers = await self._content_options(vs)
        d = self.local.storage.files.defaults
        opts = PushOptions(k=d.k, m=d.m, stripe_size=d.stripe_size, public=public,
                           readers=[r for r in readers if r != user.public_key])
        return await self.local.storage.files.push_bytes(data, user.signing_key, opts)

    async def revise(self, file_id: str, data: bytes, user: Identity,
                     base_versions: list[str] | None = None) -> Version:
        """Store ``data`` and sign a version on ``base_versions`` (default: the single head).

        Pipeline: the content Push starts at once when this node's own set already lets the
        user write (else right after the sync), concurrently with the replica sync; once the
        sync fixed the parents, the writer's next counter is reserved durably while the content
        is still being stored. When the content is stored, the record is signed and then
        committed to disk while it is pushed to the replicas; the call returns when both are
        done (the record on disk here and on at least one remote replica). The record never
        leaves the node before its content is stored, and its counter is on disk before it is
        signed, so a crash at any point never makes this writer reuse a counter.
        """
        fid = parse_file_id(file_id)
        t0 = time.perf_counter()
        async with self.local.lock(fid):
            local = self.store.get(fid)
            content: asyncio.Task[Any] | None = None
            try:
                if local.binding is not None and len(local) > 0:
                    try:
                        self._check_writer(local, user, [h.id for h in local.heads()])
                        content = asyncio.create_task(self._push_content(local, data, user))
                    except PeerCallError:
                        content = None
                result = await self.local.sync(fid, persist=True)
                t_sync = time.perf_counter()
                vs = result.vs
                await self._ensure_bound(fid, vs, user)
                if vs.binding is None:
                    raise NotFoundError(f"no file {file_id}")
                binding = vs.binding
                parents = self._parents(vs, file_id, base_versions)
                self._check_writer(vs, user, parents)
                if content is None:
                    content = asyncio.create_task(self._push_content(vs, data, user))
                vector = await asyncio.to_thread(self.store.reserve, user, binding, parents)
                pushed = await content
            except BaseException:
                await cancel(content)
                raise
            t_content = time.perf_counter()
            record = self.store.sign(user, binding, pushed.cid, parents, vector,
                                     size=pushed.size, content_ref=pushed.file_id.encode())
            self.local.reads.remember(pushed.manifest)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(asyncio.to_thread(self.store.commit, record))
                    tg.create_task(self.local.push_records(fid, result, [
                        pushed.manifest.signed.SerializeToString()] if pushed.manifest else None))
            except ExceptionGroup as group:          # the commit's own error, unwrapped
                raise group.exceptions[0] from None
            t_end = time.perf_counter()
            self.last_revise_ms = {
                "sync": round((t_sync - t0) * 1e3, 2),
                "content_push": round((t_content - t0) * 1e3, 2),
                "commit_and_replicate": round((t_end - t_content) * 1e3, 2),
                "total": round((t_end - t0) * 1e3, 2)}
            self.counters["revisions"] += 1
            version = vs.get(record_id(record))
            assert version is not None
            return version

    # -- Synchronous -------------------------------------------------------------------------
    async def synchronous(self, file_id: str, user_id: str = "") -> SyncResult:
        """Sync now. A file pushed but never revised gets its first version record here when
        the caller is its owner (the document record names the owner and the first CID)."""
        fid = parse_file_id(file_id)
        async with self.local.lock(fid):
            result = await self.local.sync(fid)
            if len(result.vs) == 0:
                user = self.local.user(user_id)
                doc = await self.local.storage.files.documents.record(file_id)
                if doc.owner_key == user.public_key:
                    await self._ensure_bound(fid, self.store.get(fid), user)
                    result = await self.local.sync(fid, persist=True)
        if len(result.vs) == 0:
            raise NotFoundError(f"no versions of {file_id} on any replica yet (the owner's "
                                "first revise, grant, sync or log creates the first one)")
        return result

    # -- Grant -------------------------------------------------------------------------------
    async def grant(self, file_id: str, owner: Identity, grantee: bytes, revoke: bool) -> None:
        fid = parse_file_id(file_id)
        async with self.local.lock(fid):
            result = await self.local.sync(fid, persist=True)
            vs = result.vs
            await self._ensure_bound(fid, vs, owner)
            if vs.binding is None or vs.binding.owner_key != owner.public_key:
                raise PermissionDeniedError(f"only the owner of {file_id} grants or revokes")
            seq = max((g.seq for g in vs.grants()), default=0) + 1
            grant = (sign_revocation(owner, vs, grantee, seq) if revoke
                     else sign_grant(owner, vs.binding, grantee, seq=seq))
            self.store.add_grant(grant)
            self._readers.pop(fid, None)
            await self.local.push_records(fid, result)
            if not revoke:
                await self._share_owner_content(vs, owner, grantee)

    async def _share_owner_content(self, vs: VersionSet, owner: Identity, grantee: bytes) -> None:
        """A writer must read what it revises: seal the owner's versions' keys to it too
        (best effort; versions by other writers were sealed to the writers of their time)."""
        grant_read = getattr(self.local.storage.files, "grant", None)
        if grant_read is None:
            return
        public, _ = await self._content_options(vs)
        if public:
            return
        cids = dict.fromkeys(v.cid for v in vs.valid() if v.record.writer_key == owner.public_key)
        for cid in cids:
            try:
                await grant_read(cid, owner.signing_key, grantee)
            except MeshError as exc:
                log.warning("could not share %s with the new writer: %s", cid, exc)

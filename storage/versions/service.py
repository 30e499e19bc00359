"""The versions capability: Revise / Synchronous / Log / Grant / Get-by-file_id, replicas,
anti-entropy. ``create(ctx)`` registers it as ``ctx.registry["versions"]``; the storage
FileServicer delegates the version RPCs to the methods of the same name here.

Replicas and sync: storage/versions/sync.py. Reads of version content: reads.py.

Revise: the content is pushed like any Push (erasure-coded, encrypted with a fresh key sealed to
the owner, every granted writer and the first version's readers, or public if the file is),
then the writer's node signs a version record whose vector dominates its parents and pushes it
to the replicas (the pipeline is in ``VersionService.revise``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import nacl.signing

from mesh.context import MeshContext
from mesh.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    MeshError,
    NotFoundError,
    PeerCallError,
    PermissionDeniedError,
)
from mesh.identity import Identity
from proto import taskworker_pb2, versions_pb2
from storage.durable import local_failure
from storage.manifest import Manifest
from storage.versions.peer import FaultHooks, VersionHandlers
from storage.versions.reads import ContentReader, LatestGuess, ReadAhead, cancel
from storage.versions.records import (
    file_id_text,
    parse_file_id,
    record_id,
    sign_grant,
    writer_id,
)
from storage.versions.store import VersionStore
from storage.versions.sync import ReplicaSync, SyncResult
from storage.versions.sync import replica_key as replica_key  # noqa: F401 - public here too
from storage.versions.vset import Version, VersionSet

log = logging.getLogger(__name__)

DEFAULT_SYNC_INTERVAL = 30.0
_HEXKEY = re.compile(r"[0-9a-f]{64}")
Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


def _head(v: Version) -> taskworker_pb2.VersionHead:
    return taskworker_pb2.VersionHead(
        version=v.id.hex(), cid=v.cid, vector={w.hex(): c for w, c in v.vector.items()},
        writer=v.writer.hex(), time=v.record.time_ms / 1000)


class VersionService:
    name = "versions"

    def __init__(self, ctx: MeshContext) -> None:
        self.ctx = ctx
        self.store = VersionStore(ctx.data_dir)
        self.hooks = FaultHooks(ctx.data_dir)
        self.handlers = VersionHandlers(self.store, self.hooks)
        s = ctx.settings
        self.sync_interval = float(s.get("versions.sync_interval", DEFAULT_SYNC_INTERVAL))
        m = int(s.get("storage.m", 2))
        self.replicas = int(s.get("versions.replicas", 0) or m + 1)
        self.counters = {"revisions": 0, "syncs": 0, "background_syncs": 0, "withheld_seen": 0,
                         "records_pulled": 0, "records_pushed": 0, "refused_from_peers": 0,
                         "lagging_replicas": 0, "read_ahead_used": 0, "read_ahead_dropped": 0}
        self._task: asyncio.Task[None] | None = None
        self.replication = ReplicaSync(ctx, self.store, self.handlers, self.replicas,
                                       self.counters)
        self.last_revise_ms: dict[str, float] = {}
        self.last_get_ms: dict[str, float] = {}
        self.latest = LatestGuess()
        self._reads: ContentReader | None = None
        self._readers: dict[bytes, tuple[bool, list[bytes]]] = {}
        self._locks: dict[bytes, asyncio.Lock] = {}
        if "storage" in ctx.roles or not ctx.roles:
            for method, fn in (("versions.Digest", self.handlers.digest),
                               ("versions.Pull", self.handlers.pull),
                               ("versions.Push", self.handlers.push)):
                ctx.channel_server.handle(method, self._guarded(fn))
        self.handlers.manifest_sink = self._remember_manifest
        self.handlers.manifest_source = self._cached_manifest
        ctx.registry["versions"] = self

    def _guarded(self, fn: Callable[[bytes], Awaitable[bytes]]
                 ) -> Callable[[Any, bytes], Awaitable[bytes]]:
        async def handler(caller: Any, body: bytes) -> bytes:
            self.handlers.check_caller(caller.node_id)
            return await fn(body)
        return handler

    # -- MeshService -----------------------------------------------------------------------
    def attach(self, api_server: grpc.aio.Server) -> None:
        """Nothing to add: the storage FileServicer delegates Revise/Sync/Log/Grant here."""

    async def start(self) -> None:
        if self.sync_interval > 0:
            self._task = asyncio.create_task(self._anti_entropy(), name="versions-anti-entropy")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.replication.stop()
        self.store.close()

    def status(self) -> dict[str, Any]:
        return {**self.counters, "files": len(self.store.files()), "replicas": self.replicas,
                "sync_interval_s": self.sync_interval, "peer_calls": self.handlers.calls,
                "refused_records": self.handlers.refused,
                "manifest_cache_hits": self._reads.hits if self._reads is not None else 0,
                "last_revise_ms": self.last_revise_ms, "last_get_ms": self.last_get_ms}

    def load(self) -> int:
        return 0

    # -- helpers ---------------------------------------------------------------------------
    @property
    def storage(self) -> Any:
        storage = self.ctx.registry.get("storage")
        if storage is None:
            raise FailedPreconditionError("this node has no storage service")
        return storage

    @property
    def reads(self) -> ContentReader:
        if self._reads is None:
            self._reads = ContentReader(self.storage.files)
        return self._reads

    def _lock(self, fid: bytes) -> asyncio.Lock:
        return self._locks.setdefault(fid, asyncio.Lock())

    async def sync(self, fid: bytes, *, persist: bool | None = None,
                   on_digest: Callable[[versions_pb2.Digest], None] | None = None
                   ) -> SyncResult:
        return await self.replication.sync(fid, persist=persist, on_digest=on_digest)

    async def _push_records(self, fid: bytes, result: SyncResult,
                            manifests: list[bytes] | None = None) -> int:
        return await self.replication.push_records(fid, result, manifests)

    def _cached_manifest(self, cid: str) -> Manifest | None:
        return self._reads.cached(cid) if self._reads is not None else None

    def _remember_manifest(self, manifest: Manifest) -> None:
        """A replica was handed the manifest of a new version's content (peer.py)."""
        try:
            self.reads.remember(manifest)
        except MeshError:
            pass                    # no storage service here: nothing reads content

    async def _anti_entropy(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval * random.uniform(0.8, 1.2))  # noqa: S311
            for fid in self.store.files():
                try:
                    async with self._lock(fid):
                        await self.sync(fid, persist=True)
                    self.counters["background_syncs"] += 1
                except MeshError as exc:
                    log.debug("background sync of %s failed: %s", file_id_text(fid), exc)
                except Exception:
                    log.exception("background sync of %s failed", file_id_text(fid))

    # -- file setup --------------------------------------------------------------------------
    async def _ensure_bound(self, fid: bytes, vs: VersionSet, user: Identity | None) -> None:
        """Bind the set to its owner and, for the owner, write the genesis from the document."""
        if vs.binding is not None and len(vs) > 0:
            return
        doc = await self.storage.files.documents.record(file_id_text(fid))
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
                    for m in await self.storage.files.fetch_manifests(firsts[0].cid):
                        public = public or bool(m.body.public_key)
                        readers.extend(k.recipient for k in m.body.keys)
                except MeshError as exc:
                    log.warning("readers of %s unknown: %s", file_id_text(fid), exc)
            self._readers[fid] = (public, list(dict.fromkeys(readers)))
        public, readers = self._readers[fid]
        return public, list(dict.fromkeys([*vs.writers(), *readers]))

    def _user(self, user_id: str) -> Identity:
        return Identity(self.storage.keyring.user(user_id))

    def _key_of(self, name: str) -> bytes:
        if _HEXKEY.fullmatch(name):
            return bytes.fromhex(name)
        key: bytes = self.storage.keyring.public_key(name)
        return key

    # -- API (called by storage.servicer.FileServicer) --------------------------------------
    async def _guard(self, context: Context, work: Callable[[], Awaitable[T]]) -> T:
        try:
            return await work()
        except PeerCallError as exc:
            await context.abort(exc.code, str(exc))
        except (MeshError, ValueError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except (OSError, sqlite3.Error) as exc:
            local = local_failure(exc)
            if local is None:
                raise
            full, message = local
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED if full
                                else grpc.StatusCode.UNAVAILABLE, message)
        raise AssertionError("unreachable")

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
        d = self.storage.files.defaults
        opts = PushOptions(k=d.k, m=d.m, stripe_size=d.stripe_size, public=public,
                           readers=[r for r in readers if r != user.public_key])
        return await self.storage.files.push_bytes(data, user.signing_key, opts)

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
        async with self._lock(fid):
            local = self.store.get(fid)
            content: asyncio.Task[Any] | None = None
            try:
                if local.binding is not None and len(local) > 0:
                    try:
                        self._check_writer(local, user, [h.id for h in local.heads()])
                        content = asyncio.create_task(self._push_content(local, data, user))
                    except PeerCallError:
                        content = None
                result = await self.sync(fid, persist=True)
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
            self.reads.remember(pushed.manifest)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(asyncio.to_thread(self.store.commit, record))
                    tg.create_task(self._push_records(fid, result, [
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

    async def Revise(self, request: taskworker_pb2.ReviseRequest,
                     context: Context) -> taskworker_pb2.ReviseResponse:
        async def work() -> taskworker_pb2.ReviseResponse:
            v = await self.revise(request.file_id, request.file_data,
                                  self._user(request.user_id), list(request.base_versions))
            return taskworker_pb2.ReviseResponse(
                version=v.id.hex(), cid=v.cid, vector={w.hex(): c for w, c in v.vector.items()})
        return await self._guard(context, work)

    async def synchronous(self, file_id: str, user_id: str = "") -> SyncResult:
        """Sync now. A file pushed but never revised gets its first version record here when
        the caller is its owner (the document record names the owner and the first CID)."""
        fid = parse_file_id(file_id)
        async with self._lock(fid):
            result = await self.sync(fid)
            if len(result.vs) == 0:
                user = self._user(user_id)
                doc = await self.storage.files.documents.record(file_id)
                if doc.owner_key == user.public_key:
                    await self._ensure_bound(fid, self.store.get(fid), user)
                    result = await self.sync(fid, persist=True)
        if len(result.vs) == 0:
            raise NotFoundError(f"no versions of {file_id} on any replica yet (the owner's "
                                "first revise, grant, sync or log creates the first one)")
        return result

    async def Synchronous(self, request: taskworker_pb2.SynchronousRequest,
                          context: Context) -> taskworker_pb2.SynchronousResponse:
        async def work() -> taskworker_pb2.SynchronousResponse:
            r = await self.synchronous(request.file_id, request.user_id)
            heads = r.vs.heads()
            return taskworker_pb2.SynchronousResponse(
                heads=[_head(h) for h in heads], records=len(r.vs.valid_ids()),
                replicas_reached=r.reached, conflict=len(heads) > 1)
        return await self._guard(context, work)

    async def Log(self, request: taskworker_pb2.LogRequest,
                  context: Context) -> taskworker_pb2.LogResponse:
        async def work() -> taskworker_pb2.LogResponse:
            r = await self.synchronous(request.file_id, request.user_id)
            return taskworker_pb2.LogResponse(
                versions=[_head(v) for v in r.vs.valid()],
                heads=[h.id.hex() for h in r.vs.heads()])
        return await self._guard(context, work)

    async def grant(self, file_id: str, owner: Identity, grantee: bytes, revoke: bool) -> None:
        fid = parse_file_id(file_id)
        async with self._lock(fid):
            result = await self.sync(fid, persist=True)
            vs = result.vs
            await self._ensure_bound(fid, vs, owner)
            if vs.binding is None or vs.binding.owner_key != owner.public_key:
                raise PermissionDeniedError(f"only the owner of {file_id} grants or revokes")
            seq = max((g.seq for g in vs.grants()), default=0) + 1
            grant = sign_grant(owner, vs.binding, grantee, revoke=revoke, seq=seq,
                               vector=vs.vector() if revoke else None)
            self.store.add_grant(grant)
            self._readers.pop(fid, None)
            await self._push_records(fid, result)
            if not revoke:
                await self._share_owner_content(vs, owner, grantee)

    async def _share_owner_content(self, vs: VersionSet, owner: Identity, grantee: bytes) -> None:
        """A writer must read what it revises: seal the owner's versions' keys to it too
        (best effort; versions by other writers were sealed to the writers of their time)."""
        grant_read = getattr(self.storage.files, "grant", None)
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

    async def Grant(self, request: taskworker_pb2.GrantRequest,
                    context: Context) -> taskworker_pb2.GrantResponse:
        async def work() -> taskworker_pb2.GrantResponse:
            if not request.grantee:
                raise InvalidArgumentError("name the grantee (a user or a public key hex)")
            await self.grant(request.file_id, self._user(request.user_id),
                             self._key_of(request.grantee), request.revoke)
            return taskworker_pb2.GrantResponse(ok=True)
        return await self._guard(context, work)

    async def resolve(self, request: taskworker_pb2.GetRequest,
                      on_digest: Callable[[versions_pb2.Digest], None] | None = None
                      ) -> tuple[Version | None, list[taskworker_pb2.VersionHead]]:
        """The version a Get by file_id (or version id) names, or the conflicting heads.

        (None, []) means the file has no version records: read ``request.file_id`` itself.
        Shared by unary Get and the storage servicer's GetStream.
        """
        fid = parse_file_id(request.file_id)
        async with self._lock(fid):
            r = await self.sync(fid, on_digest=on_digest)
        vs = r.vs
        if r.stale:
            raise FailedPreconditionError(
                f"replicas of {request.file_id} withhold versions newer than this node has "
                "seen, and no other peer has them")
        if request.version:
            try:
                vid = bytes.fromhex(request.version)
            except ValueError:
                raise InvalidArgumentError("a version id is hex") from None
            if vid not in vs.valid_ids():
                raise NotFoundError(f"no version {request.version} of {request.file_id}")
            return vs.get(vid), []
        heads = vs.heads()
        self.latest.note(fid, heads[0] if len(heads) == 1 else None)
        if len(heads) > 1:
            return None, [_head(h) for h in heads]
        return (heads[0] if heads else None), []

    async def Get(self, request: taskworker_pb2.GetRequest,
                  context: Context) -> taskworker_pb2.GetResponse:
        """Get by file_id (single head, or the conflict) or by version id.

        Get-latest reads the head this node expects ahead, during the sync (reads.py); what it
        returns is still the head the sync decides.
        """
        async def work() -> taskworker_pb2.GetResponse:
            t0 = time.perf_counter()
            latest = not request.version
            guess = self.latest.guess(self.store.get(parse_file_id(request.file_id))) \
                if latest else None
            ahead = ReadAhead(self.reads, self._reader_key(request.user_id) if latest else None)
            try:
                if guess is not None:
                    ahead.start(guess.id, guess.cid)
                target, conflicts = await self.resolve(request, ahead.offer if latest else None)
                t_sync = time.perf_counter()
                if conflicts:
                    return taskworker_pb2.GetResponse(conflicts=conflicts)
                if target is None:
                    return await self._get_document(request)
                task = ahead.take(target.id)
                if task is not None:
                    self.counters["read_ahead_used"] += 1
                    data, reader = await task
                else:
                    data, reader = await self.reads.read(
                        target.cid, self.storage.keyring.user(request.user_id))
            finally:
                await ahead.close()
                self.counters["read_ahead_dropped"] += ahead.dropped
            t_end = time.perf_counter()
            self.last_get_ms = {"sync": round((t_sync - t0) * 1e3, 2),
                                "total": round((t_end - t0) * 1e3, 2)}
            return taskworker_pb2.GetResponse(
                file_data=data, cid=reader.manifest.cid, filename=reader.filename,
                size=len(data), version=target.id.hex())
        return await self._guard(context, work)

    def _reader_key(self, user_id: str) -> nacl.signing.SigningKey | None:
        try:
            key: nacl.signing.SigningKey = self.storage.keyring.user(user_id)
        except MeshError:
            return None             # no read-ahead: the read after the sync reports it
        return key

    async def _get_document(self, request: taskworker_pb2.GetRequest
                            ) -> taskworker_pb2.GetResponse:
        """A file with no version records: read what its document record names."""
        reader = await self.storage.files.open(request.file_id,
                                               self.storage.keyring.user(request.user_id))
        data = await reader.read_all()
        return taskworker_pb2.GetResponse(
            file_data=data, cid=reader.manifest.cid, filename=reader.filename, size=len(data))


def create(ctx: MeshContext) -> VersionService:
    return VersionService(ctx)

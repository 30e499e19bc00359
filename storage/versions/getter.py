"""The versions read path: Get by file_id (the single head, or the conflict) or by version id.

``resolve`` syncs with the replicas and picks the version; ``get`` also reads its content,
reading the expected head ahead during the sync (reads.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import nacl.signing

from mesh.errors import FailedPreconditionError, InvalidArgumentError, MeshError, NotFoundError
from proto import taskworker_pb2, versions_pb2
from storage.servicer import UNARY_GET_MAX
from storage.versions.local import LocalVersions
from storage.versions.reads import LatestGuess, ReadAhead
from storage.versions.records import parse_file_id
from storage.versions.vset import Version


def head(v: Version) -> taskworker_pb2.VersionHead:
    return taskworker_pb2.VersionHead(
        version=v.id.hex(), cid=v.cid, vector={w.hex(): c for w, c in v.vector.items()},
        writer=v.writer.hex(), time=v.record.time_ms / 1000)


class VersionGetter:
    """Resolves and reads versions for the local API's Get and GetStream."""

    def __init__(self, local: LocalVersions, counters: dict[str, int]) -> None:
        self.local = local
        self.store = local.store
        self.counters = counters
        self.latest = LatestGuess()
        self.last_get_ms: dict[str, float] = {}

    async def resolve(self, request: taskworker_pb2.GetRequest,
                      on_digest: Callable[[versions_pb2.Digest], None] | None = None
                      ) -> tuple[Version | None, list[taskworker_pb2.VersionHead]]:
        """The version a Get by file_id (or version id) names, or the conflicting heads.

        (None, []) means the file has no version records: read ``request.file_id`` itself.
        Shared by unary Get and the storage servicer's GetStream.
        """
        fid = parse_file_id(request.file_id)
        async with self.local.lock(fid):
            r = await self.local.sync(fid, on_digest=on_digest)
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
            return None, [head(h) for h in heads]
        return (heads[0] if heads else None), []

    async def get(self, request: taskworker_pb2.GetRequest) -> taskworker_pb2.GetResponse:
        """Get by file_id (single head, or the conflict) or by version id.

        Get-latest reads the head this node expects ahead, during the sync (reads.py); what it
        returns is still the head the sync decides.
        """
        t0 = time.perf_counter()
        latest = not request.version
        guess = self.latest.guess(self.store.get(parse_file_id(request.file_id))) \
            if latest else None
        ahead = ReadAhead(self.local.reads,
                          self._reader_key(request.user_id) if latest else None)
        try:
            if guess is not None:
                ahead.start(guess.id, guess.cid, guess.record.writer_key)
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
                data, reader = await self.local.reads.read(
                    target.cid, self.local.storage.keyring.user(request.user_id),
                    target.record.writer_key)
        finally:
            await ahead.close()
            self.counters["read_ahead_dropped"] += ahead.dropped
        t_end = time.perf_counter()
        self.last_get_ms = {"sync": round((t_sync - t0) * 1e3, 2),
                            "total": round((t_end - t0) * 1e3, 2)}
        return taskworker_pb2.GetResponse(
            file_data=data, cid=reader.manifest.cid, filename=reader.filename,
            size=len(data), version=target.id.hex())

    def _reader_key(self, user_id: str) -> nacl.signing.SigningKey | None:
        try:
            key: nacl.signing.SigningKey = self.local.storage.keyring.user(user_id)
        except MeshError:
            return None             # no read-ahead: the read after the sync reports it
        return key

    async def _get_document(self, request: taskworker_pb2.GetRequest
                            ) -> taskworker_pb2.GetResponse:
        """A file with no version records: read what its document record names."""
        data, reader = await self.local.storage.files.read(
            request.file_id, self.local.storage.keyring.user(request.user_id),
            max_size=UNARY_GET_MAX)
        return taskworker_pb2.GetResponse(
            file_data=data, cid=reader.manifest.cid, filename=reader.filename, size=len(data))

"""Reading a version's content fast: a cache of manifests, and the latest head read ahead.

A version names its content by CID; reading it takes the manifest (one round to the manifest
replicas) and then k fragments. ``ContentReader`` keeps the verified manifests of the versions
this node stored (Revise hands over the one it just signed), was pushed as a replica (with a
Revise's record), was sent in a replica's Digest (for a head) or read, so a later Get of that
version goes straight to the fragments. A cached manifest is only a shortcut: if it names no key
for the reader (a later grant re-sealed the file key in a newer manifest) or its holders do not
answer, the read starts again from the manifest replicas.

``LatestGuess`` remembers, for files this node does not hold records of, the head it last
returned. ``ReadAhead``: Get-latest starts reading the head this node expects (its own single
head, or that one) while it syncs with the replicas, and also the head a replica's Digest shows
when it is another single head (at most two reads in all: a lying replica wastes one read,
nothing more). It keeps the read whose version the sync picks and drops the others; if none
matches it reads the synced head. What Get returns is decided by the sync exactly as before
(withholding replicas are noticed the same way); only the reads overlap the Digest and Pull
rounds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from typing import Any

import nacl.signing
from google.protobuf.message import DecodeError

from mesh.errors import MeshError
from proto import storage_pb2, versions_pb2
from storage.files import Reader
from storage.manifest import Manifest, verify_manifest
from storage.reader import size_error
from storage.servicer import UNARY_GET_MAX
from storage.versions.errors import VersionError
from storage.versions.records import decode_version, record_id
from storage.versions.vset import Version, VersionSet

log = logging.getLogger(__name__)

CACHE_SIZE = 256


class _Lru(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class ContentReader:
    """Reads version content through ``files`` (storage.files.FileStore), caching manifests."""

    def __init__(self, files: Any, size: int = CACHE_SIZE) -> None:
        self.files = files
        self._manifests = _Lru(size)
        self._keys = _Lru(size)           # (CID, reader's public key) -> file key
        self.hits = 0

    def remember(self, manifest: Manifest | None) -> None:
        if manifest is not None:
            self._manifests.put(manifest.cid, manifest)

    def cached(self, cid: str) -> Manifest | None:
        m: Manifest | None = self._manifests.get(cid)
        return m

    def _key(self, m: Manifest, user: nacl.signing.SigningKey) -> bytes | None:
        slot = (m.cid, hashlib.sha256(m.signed.body).digest(), bytes(user.verify_key))
        key: bytes | None = self._keys.get(slot)
        if key is None:
            key = m.file_key(user)
            if key is not None:
                self._keys.put(slot, key)
        return key

    async def read(self, cid: str, user: nacl.signing.SigningKey, writer: bytes = b""
                   ) -> tuple[bytes, Reader]:
        """The plaintext of ``cid`` as ``user`` reads it, and the reader that got it;
        ``writer``: the version's writer, whose manifest is tried first.

        Refuses (INVALID_ARGUMENT) a file larger than a unary Get returns, before reading it.
        """
        cached: Manifest | None = self._manifests.get(cid)
        if cached is not None:
            key = self._key(cached, user)
            if key is not None:
                _check_size(cached)
                reader = Reader(self.files, cached, key)
                try:
                    data = await reader.read_all()
                except MeshError as exc:
                    log.info("cached manifest of %s did not serve: %s", cid, exc)
                    self._manifests.pop(cid, None)
                    self._keys.clear()
                else:
                    self.hits += 1
                    self.files.counters["gets"] += 1
                    self.files.counters["bytes_out"] += len(data)
                    return data, reader
        # the writer's manifest first; another one if it does not serve (storage/reader.py)
        data, reader = await self.files.read(cid, user, max_size=UNARY_GET_MAX, prefer=writer)
        self.remember(reader.manifest)
        return data, reader


def _check_size(m: Manifest) -> None:
    if m.body.size > UNARY_GET_MAX:
        raise size_error(m, UNARY_GET_MAX)


class LatestGuess:
    """Which version a Get-latest of a file will most likely return (see module docstring)."""

    def __init__(self, size: int = 4 * CACHE_SIZE) -> None:
        self._last = _Lru(size)

    def guess(self, vs: VersionSet) -> Version | None:
        heads = vs.heads()
        if len(heads) == 1:
            return heads[0]
        if heads:
            return None
        last: Version | None = self._last.get(vs.file_id)
        return last

    def note(self, file_id: bytes, version: Version | None) -> None:
        if version is None:
            self._last.pop(file_id, None)
        else:
            self._last.put(file_id, version)


class ReadAhead:
    """The reads one Get-latest started before its sync decided (see module docstring)."""

    MAX_READS = 2

    def __init__(self, reader: ContentReader, user: nacl.signing.SigningKey | None) -> None:
        self.reader = reader
        self.user = user
        self.tasks: dict[bytes, asyncio.Task[tuple[bytes, Reader]]] = {}
        self.dropped = 0

    def start(self, version_id: bytes, cid: str, writer: bytes = b"") -> None:
        if self.user is None or version_id in self.tasks or len(self.tasks) >= self.MAX_READS:
            return
        self.tasks[version_id] = asyncio.create_task(self.reader.read(cid, self.user, writer))

    def offer(self, digest: versions_pb2.Digest) -> None:
        """A replica's Digest arrived: read its head too if it is a single one (with the
        manifest of its content the replica sent, if that verifies)."""
        if len(digest.head_records) != 1:
            return
        try:
            record = decode_version(digest.head_records[0])
        except VersionError:
            return
        vid = record_id(record)
        if vid in self.tasks or self.user is None or len(self.tasks) >= self.MAX_READS:
            return                          # already reading it, or reading nothing more
        for raw in digest.head_manifests[:1]:
            try:
                m = verify_manifest(storage_pb2.SignedManifest.FromString(raw), record.cid)
            except (DecodeError, MeshError):
                continue
            if m.body.owner_key != record.writer_key:
                continue                    # not the content its writer pushed
            if self.reader.cached(m.cid) is None:
                self.reader.remember(m)
        self.start(vid, record.cid, record.writer_key)

    def take(self, version_id: bytes) -> asyncio.Task[tuple[bytes, Reader]] | None:
        return self.tasks.pop(version_id, None)

    async def close(self) -> None:
        """Cancel the reads nobody took."""
        tasks, self.tasks = list(self.tasks.values()), {}
        self.dropped += len(tasks)
        for t in tasks:
            await cancel(t)


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel a read-ahead no longer wanted and wait for it to end."""
    if task is not None and not task.done():
        task.cancel()
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)

"""The server half of the storage peer calls: one node's fragments, manifests and document
records, served over the sealed channel (methods: storage/peer.py).

Handlers check every size and hash (a fragment is stored only under the hash it claims) and
refuse oversized bodies; peers only ever see ciphertext fragments and signed manifests.
StoreBatch items run concurrently, each exactly as its own method would (same checks, durable
before the reply); the framing is in storage/peer_wire.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from mesh.channel import Caller, ChannelServer
from mesh.channel.frames import Body, body_parts
from mesh.errors import (
    InvalidArgumentError,
    NotFoundError,
    PeerCallError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from mesh.wire import Buffer, bytes_field_key
from proto import storage_pb2
from storage.capacity import Capacity, StorageFull
from storage.delete_check import DeleteGuard, check_sent
from storage.documents import DocumentStore, is_file_id
from storage.fragstore import FragmentMismatch, FragmentStore
from storage.manifest import MAX_MANIFEST_BYTES, ManifestStore
from storage.peer_wire import (
    _BATCHED,
    _ITEM,
    MAX_FRAGMENT_BYTES,
    _fragment_request,
    _frames,
    _hex,
    _parse,
)

MAX_BATCH = 100_000
MAX_STORE_BATCH_BYTES = 56 * 2**20     # a StoreBatch body (the channel's frame is 64 MiB)
# methods that take the body as a view into the opened frame: a fragment is never copied out
_VIEWS = frozenset({"storage.StoreFragment", "storage.StoreBatch"})


class StorageHandlers:
    """The server half: one node's fragments, manifests and document records."""

    def __init__(self, fragments: FragmentStore, manifests: ManifestStore,
                 documents: DocumentStore, self_id: bytes | None = None,
                 capacity: Capacity | None = None) -> None:
        self.self_id = self_id  # this node: never drop a fragment a manifest records here
        self.capacity = capacity    # None: no reserve (tests of the handlers alone)
        self.fragments = fragments
        self.manifests = manifests
        self.documents = documents
        # who may drop a copy: delete_check.py
        self.deletes = DeleteGuard(manifests, self_id, documents)
        self.calls = 0
        self._deep = asyncio.Semaphore(1)   # deep HasFragments checks, one at a time
        # the _VIEWS methods take any buffer, the others bytes (dispatch hands each its kind)
        self._methods: dict[str, Callable[[Any], Awaitable[Body]]] = {
            "storage.StoreFragment": self.store_fragment,
            "storage.FetchFragment": self.fetch_fragment,
            "storage.HasFragments": self.has_fragments,
            "storage.DeleteFragment": self.delete_fragment,
            "storage.StoreManifest": self.store_manifest,
            "storage.FetchManifests": self.fetch_manifests,
            "storage.StoreDocument": self.store_document,
            "storage.FetchDocument": self.fetch_document,
            "storage.StoreBatch": self.store_batch,
        }

    def register(self, server: ChannelServer) -> None:
        for method in self._methods:
            if method in _VIEWS:
                server.handle_view(method, self._peer_handler(method))
            else:
                server.handle(method, self._peer_handler(method))

    def _peer_handler(self, method: str) -> Callable[[Caller, Buffer], Awaitable[Body]]:
        async def handler(caller: Caller, body: Buffer) -> Body:
            return await self._run(method, body)    # parts go to the seal as they are
        return handler

    async def dispatch(self, method: str, body: Body) -> bytes:
        """A call from this node's own client: parts are joined both ways."""
        if not isinstance(body, bytes | bytearray | memoryview):
            body = b"".join(body)
        reply = await self._run(method, body)
        return reply if isinstance(reply, bytes) else b"".join(body_parts(reply))

    async def _run(self, method: str, body: Buffer) -> Body:
        fn = self._methods.get(method)
        if fn is None:
            raise NotFoundError(f"unknown storage method {method!r}")
        self.calls += 1
        return await fn(body if method in _VIEWS else bytes(body))

    async def store_fragment(self, body: Buffer) -> bytes:
        req, data = _fragment_request(body)
        if len(data) > MAX_FRAGMENT_BYTES:
            raise ResourceExhaustedError(f"fragment of {len(data)} bytes is too large")
        if len(req.file) > 512:
            raise InvalidArgumentError("file reference too long")
        want = _hex(req.hash)

        def put() -> str:
            self._make_room(len(data), want)
            try:
                return self.fragments.put(data, req.file, req.index, expect=want)
            except FragmentMismatch as exc:            # checked before anything is written
                raise InvalidArgumentError("fragment bytes do not match their hash") from exc
            except (OSError, sqlite3.Error) as exc:   # disk full, I/O error: the pusher uses a spare
                raise ResourceExhaustedError(f"cannot store the fragment here: {exc}") from exc

        await asyncio.to_thread(put)
        return storage_pb2.StoreFragmentReply(hash=req.hash).SerializeToString()

    async def store_own_fragment(self, file: str, index: int, data: bytes | memoryview,
                                 digest: bytes) -> None:
        """A Push on this node storing one of its fragments here: no request to encode and
        parse, and no second hash (the pusher hashed exactly these bytes in this process)."""
        if len(data) > MAX_FRAGMENT_BYTES:
            raise ResourceExhaustedError(f"fragment of {len(data)} bytes is too large")
        if len(file) > 512:
            raise InvalidArgumentError("file reference too long")
        self.calls += 1
        known = _hex(digest)

        def put() -> None:
            self._make_room(len(data), known)
            try:
                self.fragments.put(data, file, index, known_hash=known)
            except (OSError, sqlite3.Error) as exc:
                raise ResourceExhaustedError(f"cannot store the fragment here: {exc}") from exc

        await asyncio.to_thread(put)

    def _make_room(self, size: int, fragment: str | None = None) -> None:
        """StorageFull if ``size`` new bytes would eat into the reserve (storage/capacity.py);
        a fragment held already needs no room (a hedged re-send, a repair's re-store)."""
        if self.capacity is None:
            return
        try:
            self.capacity.check(size)
        except StorageFull:
            if fragment is None or not self.fragments.has(fragment):
                raise

    async def store_batch(self, body: Buffer) -> bytes:
        if len(body) > MAX_STORE_BATCH_BYTES:
            raise ResourceExhaustedError(f"StoreBatch of {len(body)} bytes exceeds "
                                         f"{MAX_STORE_BATCH_BYTES}")
        items = _frames(body)
        calls = []
        for kind, sub in items:
            method = _BATCHED.get(kind)
            if method is None:
                raise InvalidArgumentError(f"StoreBatch item of unknown kind {kind}")
            calls.append(self._methods[method](sub if method in _VIEWS else bytes(sub)))
        results = await asyncio.gather(*calls, return_exceptions=True)
        out: list[Buffer] = []
        for r in results:
            if isinstance(r, PeerCallError):
                msg = str(r).encode()
                out += [_ITEM.pack(r.code.value[0] or grpc.StatusCode.UNKNOWN.value[0],
                                   len(msg)), msg]
            elif isinstance(r, BaseException):
                raise r
            else:
                parts = body_parts(r)
                out += [_ITEM.pack(0, sum(memoryview(p).nbytes for p in parts)), *parts]
        return b"".join(out)

    async def fetch_fragment(self, body: bytes) -> list[Buffer]:
        """A FetchFragmentReply in parts: the key of field 1 (data), then the fragment as read
        (protobuf would copy it into the message and again on serializing)."""
        req = _parse(storage_pb2.FetchFragmentRequest, body, 1024)
        data = await self._read(req.hash)
        return [bytes_field_key(1, len(data)), data]

    async def fetch_own_fragment(self, digest: bytes) -> bytes:
        """A read on this node of its own store: no request, no reply to encode and parse."""
        self.calls += 1
        return await self._read(digest)

    async def _read(self, digest: bytes) -> bytes:
        data = await asyncio.to_thread(self.fragments.get, _hex(digest))   # re-hashes it
        if data is None:
            raise NotFoundError(f"fragment {digest.hex()[:16]} not held here")
        return data

    async def has_fragments(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.HasFragmentsRequest, body, MAX_BATCH * 40)
        hashes = [_hex(h) for h in req.hashes]

        def check() -> list[bool]:
            # each distinct hash once: a repeated one must not have a deep check re-read it
            if req.deep:                      # re-hashes: finds rot (and drops it)
                found = {h: self.fragments.get(h) is not None for h in dict.fromkeys(hashes)}
            else:
                found = {h: self.fragments.has(h) for h in dict.fromkeys(hashes)}
            return [found[h] for h in hashes]

        if not req.deep:
            present = await asyncio.to_thread(check)
        else:
            async with self._deep:   # may read all this node holds: one worker thread at most
                present = await asyncio.to_thread(check)
        return storage_pb2.HasFragmentsReply(present=present).SerializeToString()

    async def delete_fragment(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.DeleteFragmentRequest, body, MAX_MANIFEST_BYTES + 4096)
        if not is_file_id(req.file):
            raise InvalidArgumentError("delete needs the file_id that references the fragment")
        sent = check_sent(req, self.self_id)
        h = _hex(req.hash)
        if not await asyncio.to_thread(self.fragments.has, h):
            return storage_pb2.DeleteFragmentReply(removed=False).SerializeToString()
        await self.deletes.confirm(sent, req.hash)     # an older manifest must not drop it
        removed = await asyncio.to_thread(self.fragments.delete, h, req.file)
        return storage_pb2.DeleteFragmentReply(removed=removed).SerializeToString()

    async def store_manifest(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.StoreManifestRequest, body, MAX_MANIFEST_BYTES + 8192)

        def put() -> bool:
            self._make_room(len(body))
            self.manifests.put(req.manifest)
            if not req.HasField("document"):
                return False
            try:
                self.documents.put(req.document)
            except (InvalidArgumentError, PermissionDeniedError):
                return False         # the manifest stands; the pusher counts the record missing
            return True

        try:
            doc = await asyncio.to_thread(put)
        except (OSError, sqlite3.Error) as exc:  # disk full, I/O error: answer; the pusher counts it
            raise ResourceExhaustedError(f"cannot store the manifest here: {exc}") from exc
        return storage_pb2.StoreManifestReply(stored=True, document_stored=doc).SerializeToString()

    async def fetch_manifests(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.FetchManifestsRequest, body, 1024)
        found = self.manifests.get_now(req.cid)        # a point read: no thread hop if free
        if found is None:
            found = await asyncio.to_thread(self.manifests.get, req.cid)
        return storage_pb2.FetchManifestsReply(manifests=found).SerializeToString()

    async def store_document(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.StoreDocumentRequest, body, 8192)

        def put() -> bool:
            self._make_room(len(body))
            return self.documents.put(req.document)

        try:
            stored = await asyncio.to_thread(put)
        except (OSError, sqlite3.Error) as exc:
            raise ResourceExhaustedError(f"cannot store the document here: {exc}") from exc
        return storage_pb2.StoreDocumentReply(stored=stored).SerializeToString()

    async def fetch_document(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.FetchDocumentRequest, body, 1024)
        found = await asyncio.to_thread(self.documents.get, req.file_id)
        return storage_pb2.FetchDocumentReply(documents=found).SerializeToString()

"""Storage peer calls: handlers a node serves over the sealed channel, and a typed client.

Methods (all unary; a fragment is one stripe / k bytes, at most MAX_FRAGMENT_BYTES, far below
the channel's 64 MiB frame):
    storage.StoreFragment   StoreFragmentRequest  -> StoreFragmentReply
    storage.FetchFragment   FetchFragmentRequest  -> FetchFragmentReply
    storage.HasFragments    HasFragmentsRequest   -> HasFragmentsReply
    storage.DeleteFragment  DeleteFragmentRequest -> DeleteFragmentReply
    storage.StoreManifest   StoreManifestRequest  -> StoreManifestReply
    storage.FetchManifests  FetchManifestsRequest -> FetchManifestsReply
    storage.StoreDocument   StoreDocumentRequest  -> StoreDocumentReply
    storage.FetchDocument   FetchDocumentRequest  -> FetchDocumentReply
    storage.StoreBatch      several StoreFragment/StoreManifest/StoreDocument requests in one
                            call (framing below), each answered on its own
Handlers check every size and hash (a fragment is stored only under the sha256 it claims) and
refuse oversized bodies; peers only ever see ciphertext fragments and signed manifests.
The client verifies what it fetches again: a fragment whose hash differs is reported missing.

StoreBatch exists because a small Push sends a fragment and its manifest/document records to
the same peers (in a five-node mesh every peer): one sealed call per peer instead of two or
three, each channel call costing far more CPU than a 256 KiB fragment's checks. Body: per item
``kind`` (1 byte: 1 StoreFragment, 2 StoreManifest, 3 StoreDocument), length (4 bytes, big
endian), the request. Reply: per item status (1 byte: 0 OK, else the gRPC status code value),
length, then the reply or the UTF-8 error message. The items run concurrently, each exactly as
its own method would (same checks, durable before the reply); a peer that does not know
StoreBatch answers NOT_FOUND and the client falls back to one call per item.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from mesh.channel import Caller, ChannelServer, PeerChannel
from mesh.errors import (
    InvalidArgumentError,
    MeshError,
    NotFoundError,
    PeerCallError,
    PermissionDeniedError,
    ResourceExhaustedError,
    error_for_code,
)
from proto import storage_pb2
from storage.documents import DocumentStore, is_file_id
from storage.fragstore import FragmentStore
from storage.manifest import MAX_MANIFEST_BYTES, ManifestStore

MAX_FRAGMENT_BYTES = 48 * 2**20
MAX_BATCH = 100_000
MAX_STORE_BATCH_BYTES = 56 * 2**20     # a StoreBatch body (the channel's frame is 64 MiB)
STORE_BATCH_SHARE = 8 * 2**20          # a client packs fragments into batches up to this size
MAX_STORE_BATCH_ITEMS = 64
_ITEM = struct.Struct(">BI")
_BATCHED = {1: "storage.StoreFragment", 2: "storage.StoreManifest", 3: "storage.StoreDocument"}
FETCH_TIMEOUT_S = 30.0

Transport = Callable[[str, bytes], Awaitable[bytes]]
M = TypeVar("M", bound=Message)


def _parse(cls: type[M], body: bytes, limit: int = MAX_FRAGMENT_BYTES + 4096) -> M:
    if len(body) > limit:
        raise ResourceExhaustedError(f"request of {len(body)} bytes exceeds {limit}")
    msg = cls()
    try:
        msg.ParseFromString(body)
    except DecodeError as exc:
        raise InvalidArgumentError(f"malformed {cls.__name__}") from exc
    return msg


def _with_data(head: bytes, data: bytes | memoryview) -> bytes:
    """A serialized StoreFragmentRequest: ``head`` (its other fields) plus field 4 (data),
    written straight from the caller's buffer (one copy instead of bytes() then Serialize)."""
    size = memoryview(data).nbytes
    length = bytearray()
    while True:
        length.append((size & 0x7F) | (0x80 if size > 0x7F else 0))
        size >>= 7
        if not size:
            break
    return b"".join((head, b"\x22", length, data))      # 0x22: field 4, length-delimited


def _frames(body: bytes) -> list[tuple[int, bytes]]:
    view = memoryview(body)
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(view):
        if pos + _ITEM.size > len(view) or len(out) >= MAX_STORE_BATCH_ITEMS:
            raise InvalidArgumentError("malformed StoreBatch")
        kind, size = _ITEM.unpack_from(view, pos)
        pos += _ITEM.size
        if pos + size > len(view):
            raise InvalidArgumentError("malformed StoreBatch")
        out.append((kind, bytes(view[pos:pos + size])))
        pos += size
    return out


def _hex(h: bytes) -> str:
    if len(h) != 32:
        raise InvalidArgumentError("a fragment hash has 32 bytes")
    return h.hex()


@dataclass(frozen=True)
class FragmentItem:
    file: str
    index: int
    data: bytes | memoryview
    digest: bytes          # computed by the caller from ``data`` itself


@dataclass(frozen=True)
class StoreItem:
    """One write in a StoreBatch: a fragment, a manifest (with or without a document record
    riding along, as in StoreManifest), or a document record alone."""

    kind: int
    fragment: FragmentItem | None = None
    manifest: storage_pb2.SignedManifest | None = None
    document: storage_pb2.SignedDocument | None = None

    @classmethod
    def of_fragment(cls, file: str, index: int, data: bytes | memoryview,
                    digest: bytes) -> StoreItem:
        return cls(1, fragment=FragmentItem(file, index, data, digest))

    @classmethod
    def of_records(cls, manifest: storage_pb2.SignedManifest | None,
                   document: storage_pb2.SignedDocument | None) -> StoreItem:
        return cls(2 if manifest is not None else 3, manifest=manifest, document=document)

    def request(self) -> bytes:
        if self.kind == 1:
            assert self.fragment is not None
            f = self.fragment
            head = storage_pb2.StoreFragmentRequest(file=f.file, index=f.index, hash=f.digest)
            return _with_data(head.SerializeToString(), f.data)
        if self.kind == 2:
            return storage_pb2.StoreManifestRequest(
                manifest=self.manifest, document=self.document).SerializeToString()
        return storage_pb2.StoreDocumentRequest(document=self.document).SerializeToString()


class StorageHandlers:
    """The server half: one node's fragments, manifests and document records."""

    def __init__(self, fragments: FragmentStore, manifests: ManifestStore,
                 documents: DocumentStore) -> None:
        self.fragments = fragments
        self.manifests = manifests
        self.documents = documents
        self.calls = 0
        self._methods: dict[str, Callable[[bytes], Awaitable[bytes]]] = {
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
            server.handle(method, self._peer_handler(method))

    def _peer_handler(self, method: str) -> Callable[[Caller, bytes], Awaitable[bytes]]:
        async def handler(caller: Caller, body: bytes) -> bytes:
            return await self.dispatch(method, body)
        return handler

    async def dispatch(self, method: str, body: bytes) -> bytes:
        fn = self._methods.get(method)
        if fn is None:
            raise NotFoundError(f"unknown storage method {method!r}")
        self.calls += 1
        return await fn(body)

    async def store_fragment(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.StoreFragmentRequest, body)
        if len(req.data) > MAX_FRAGMENT_BYTES:
            raise ResourceExhaustedError(f"fragment of {len(req.data)} bytes is too large")
        if len(req.file) > 512:
            raise InvalidArgumentError("file reference too long")
        want = _hex(req.hash)

        def put() -> str:
            try:
                got = self.fragments.put(req.data, req.file, req.index)   # hashes the bytes once
            except (OSError, sqlite3.Error) as exc:   # disk full, I/O error: the pusher uses a spare
                raise ResourceExhaustedError(f"cannot store the fragment here: {exc}") from exc
            if got != want:
                self.fragments.delete(got, req.file, req.index)
                raise InvalidArgumentError("fragment bytes do not match their hash")
            return got

        await asyncio.to_thread(put)
        return storage_pb2.StoreFragmentReply(hash=req.hash).SerializeToString()

    async def store_own_fragment(self, file: str, index: int, data: bytes | memoryview,
                                 digest: bytes) -> None:
        """A Push on this node storing one of its fragments here: no request to encode and
        parse, and no second sha256 (the pusher hashed exactly these bytes in this process)."""
        if len(data) > MAX_FRAGMENT_BYTES:
            raise ResourceExhaustedError(f"fragment of {len(data)} bytes is too large")
        if len(file) > 512:
            raise InvalidArgumentError("file reference too long")
        self.calls += 1
        known = _hex(digest)

        def put() -> None:
            try:
                self.fragments.put(data, file, index, known_hash=known)
            except (OSError, sqlite3.Error) as exc:
                raise ResourceExhaustedError(f"cannot store the fragment here: {exc}") from exc

        await asyncio.to_thread(put)

    async def store_batch(self, body: bytes) -> bytes:
        if len(body) > MAX_STORE_BATCH_BYTES:
            raise ResourceExhaustedError(f"StoreBatch of {len(body)} bytes exceeds "
                                         f"{MAX_STORE_BATCH_BYTES}")
        items = _frames(body)
        calls = []
        for kind, sub in items:
            method = _BATCHED.get(kind)
            if method is None:
                raise InvalidArgumentError(f"StoreBatch item of unknown kind {kind}")
            calls.append(self._methods[method](sub))
        results = await asyncio.gather(*calls, return_exceptions=True)
        out = []
        for r in results:
            if isinstance(r, PeerCallError):
                msg = str(r).encode()
                out += [_ITEM.pack(r.code.value[0] or grpc.StatusCode.UNKNOWN.value[0],
                                   len(msg)), msg]
            elif isinstance(r, BaseException):
                raise r
            else:
                out += [_ITEM.pack(0, len(r)), r]
        return b"".join(out)

    async def fetch_fragment(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.FetchFragmentRequest, body, 1024)
        data = await asyncio.to_thread(self.fragments.get, _hex(req.hash))
        if data is None:
            raise NotFoundError(f"fragment {req.hash.hex()[:16]} not held here")
        return storage_pb2.FetchFragmentReply(data=data).SerializeToString()

    async def has_fragments(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.HasFragmentsRequest, body, MAX_BATCH * 40)
        hashes = [_hex(h) for h in req.hashes]

        def check() -> list[bool]:
            if req.deep:                      # re-hashes: finds rot (and drops it)
                return [self.fragments.get(h) is not None for h in hashes]
            return [self.fragments.has(h) for h in hashes]

        return storage_pb2.HasFragmentsReply(
            present=await asyncio.to_thread(check)).SerializeToString()

    async def delete_fragment(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.DeleteFragmentRequest, body, 2048)
        if not is_file_id(req.file):
            raise InvalidArgumentError("delete needs the file_id that references the fragment")
        removed = await asyncio.to_thread(self.fragments.delete, _hex(req.hash), req.file)
        return storage_pb2.DeleteFragmentReply(removed=removed).SerializeToString()

    async def store_manifest(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.StoreManifestRequest, body, MAX_MANIFEST_BYTES + 8192)

        def put() -> bool:
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
        found = await asyncio.to_thread(self.manifests.get, req.cid)
        return storage_pb2.FetchManifestsReply(manifests=found).SerializeToString()

    async def store_document(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.StoreDocumentRequest, body, 8192)
        try:
            stored = await asyncio.to_thread(self.documents.put, req.document)
        except (OSError, sqlite3.Error) as exc:
            raise ResourceExhaustedError(f"cannot store the document here: {exc}") from exc
        return storage_pb2.StoreDocumentReply(stored=stored).SerializeToString()

    async def fetch_document(self, body: bytes) -> bytes:
        req = _parse(storage_pb2.FetchDocumentRequest, body, 1024)
        found = await asyncio.to_thread(self.documents.get, req.file_id)
        return storage_pb2.FetchDocumentReply(documents=found).SerializeToString()


class StorageClient:
    """Typed storage calls to one peer (remote over the sealed channel, or this node)."""

    def __init__(self, node_id: bytes, transport: Transport, trusted: bool = False,
                 handlers: StorageHandlers | None = None) -> None:
        self.node_id = node_id
        self._call = transport
        self._trusted = trusted     # this node's own store: it re-hashed the bytes it returns
        self._handlers = handlers   # this node's own store, for store_fragment(hashed=True)

    @classmethod
    def remote(cls, channel: PeerChannel, timeout: float = FETCH_TIMEOUT_S) -> StorageClient:
        async def call(method: str, body: bytes) -> bytes:
            return await channel.unary(method, body, timeout=timeout)
        return cls(channel.node_id, call)

    @classmethod
    def local(cls, node_id: bytes, handlers: StorageHandlers) -> StorageClient:
        return cls(node_id, handlers.dispatch, trusted=True, handlers=handlers)

    async def store_fragment(self, file: str, index: int, data: bytes | memoryview,
                             digest: bytes, hashed: bool = False) -> None:
        """``hashed``: the caller computed ``digest`` from ``data`` itself; a store on this
        node then skips the request round and the re-hash (a peer always re-hashes)."""
        if hashed and self._handlers is not None:
            await self._handlers.store_own_fragment(file, index, data, digest)
            return
        head = storage_pb2.StoreFragmentRequest(file=file, index=index, hash=digest)
        await self._call("storage.StoreFragment", _with_data(head.SerializeToString(), data))

    async def store_batch(self, items: list[StoreItem]) -> list[bytes | MeshError]:
        """Store several fragments and records on this peer in one round; per item the reply
        body or the error it got (a failed call is that error for each of its items).

        Items go in StoreBatch calls of up to STORE_BATCH_SHARE bytes of fragment data (a
        larger fragment alone), sent concurrently: usually one call."""
        if self._handlers is not None:
            return list(await asyncio.gather(*(self._store_one(it) for it in items)))
        groups: list[list[int]] = []
        size = STORE_BATCH_SHARE
        for n, it in enumerate(items):
            nbytes = memoryview(it.fragment.data).nbytes if it.fragment is not None else 0
            if not groups or size + nbytes > STORE_BATCH_SHARE \
                    or len(groups[-1]) >= MAX_STORE_BATCH_ITEMS:
                groups.append([])
                size = 0
            groups[-1].append(n)
            size += nbytes
        out: list[bytes | MeshError] = [InvalidArgumentError("not sent")] * len(items)

        async def send(group: list[int]) -> None:
            try:
                got = await self._store_batch([items[n] for n in group])
            except MeshError as exc:
                got = [exc] * len(group)
            for n, r in zip(group, got, strict=True):
                out[n] = r

        await asyncio.gather(*(send(g) for g in groups))
        return out

    async def _store_batch(self, items: list[StoreItem]) -> list[bytes | MeshError]:
        parts: list[bytes | memoryview] = []
        for it in items:
            body = it.request()
            parts += [_ITEM.pack(it.kind, len(body)), body]
        try:
            reply = await self._call("storage.StoreBatch", b"".join(parts))
        except NotFoundError as exc:
            if "StoreBatch" not in str(exc):
                raise
            return list(await asyncio.gather(*(self._store_one(it) for it in items)))
        frames = _frames(reply)
        if len(frames) != len(items):
            raise InvalidArgumentError("StoreBatch answered for a different number of items")
        return [body if status == 0 else error_for_code(status, body.decode(errors="replace"))
                for status, body in frames]

    async def _store_one(self, item: StoreItem) -> bytes | MeshError:
        """One item as its own call (this node's store, or a peer without StoreBatch)."""
        try:
            if item.kind == 1 and self._handlers is not None:
                assert item.fragment is not None
                f = item.fragment
                await self._handlers.store_own_fragment(f.file, f.index, f.data, f.digest)
                return storage_pb2.StoreFragmentReply(hash=f.digest).SerializeToString()
            return await self._call(_BATCHED[item.kind], item.request())
        except MeshError as exc:
            return exc

    async def fetch_fragment(self, digest: bytes) -> bytes:
        """The fragment's bytes; NotFoundError if absent or if the peer sent other bytes."""
        body = await self._call("storage.FetchFragment",
                                storage_pb2.FetchFragmentRequest(hash=digest).SerializeToString())
        data = _parse(storage_pb2.FetchFragmentReply, body).data
        if not self._trusted and hashlib.sha256(data).digest() != digest:
            raise NotFoundError(f"peer {self.node_id.hex()[:16]} sent a corrupt fragment "
                                f"{digest.hex()[:16]}")
        return data

    async def has_fragments(self, digests: list[bytes], deep: bool = False) -> list[bool]:
        body = await self._call("storage.HasFragments", storage_pb2.HasFragmentsRequest(
            hashes=digests, deep=deep).SerializeToString())
        present = list(_parse(storage_pb2.HasFragmentsReply, body).present)
        if len(present) != len(digests):
            raise InvalidArgumentError("HasFragments answered for a different number of hashes")
        return present

    async def delete_fragment(self, digest: bytes, file: str) -> bool:
        body = await self._call("storage.DeleteFragment", storage_pb2.DeleteFragmentRequest(
            hash=digest, file=file).SerializeToString())
        return _parse(storage_pb2.DeleteFragmentReply, body).removed

    async def store_manifest(self, signed: storage_pb2.SignedManifest,
                             document: storage_pb2.SignedDocument | None = None) -> bool:
        """Store a manifest (and a document record with it); True if the record was kept."""
        body = await self._call("storage.StoreManifest", storage_pb2.StoreManifestRequest(
            manifest=signed, document=document).SerializeToString())
        return _parse(storage_pb2.StoreManifestReply, body, 1024).document_stored

    async def fetch_manifests(self, cid: str) -> list[storage_pb2.SignedManifest]:
        body = await self._call("storage.FetchManifests",
                                storage_pb2.FetchManifestsRequest(cid=cid).SerializeToString())
        return list(_parse(storage_pb2.FetchManifestsReply, body,
                           MAX_MANIFEST_BYTES * 4).manifests)

    async def store_document(self, signed: storage_pb2.SignedDocument) -> None:
        await self._call("storage.StoreDocument",
                         storage_pb2.StoreDocumentRequest(document=signed).SerializeToString())

    async def fetch_documents(self, file_id: str) -> list[storage_pb2.SignedDocument]:
        body = await self._call("storage.FetchDocument",
                                storage_pb2.FetchDocumentRequest(file_id=file_id).SerializeToString())
        return list(_parse(storage_pb2.FetchDocumentReply, body, 65536).documents)

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
Handlers check every size and hash (a fragment is stored only under the sha256 it claims) and
refuse oversized bodies; peers only ever see ciphertext fragments and signed manifests.
The client verifies what it fetches again: a fragment whose hash differs is reported missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from mesh.channel import Caller, ChannelServer, PeerChannel
from mesh.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from proto import storage_pb2
from storage.documents import DocumentStore, is_file_id
from storage.fragstore import FragmentStore
from storage.manifest import MAX_MANIFEST_BYTES, ManifestStore

MAX_FRAGMENT_BYTES = 48 * 2**20
MAX_BATCH = 100_000
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


def _hex(h: bytes) -> str:
    if len(h) != 32:
        raise InvalidArgumentError("a fragment hash has 32 bytes")
    return h.hex()


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

    def __init__(self, node_id: bytes, transport: Transport, trusted: bool = False) -> None:
        self.node_id = node_id
        self._call = transport
        self._trusted = trusted     # this node's own store: it re-hashed the bytes it returns

    @classmethod
    def remote(cls, channel: PeerChannel, timeout: float = FETCH_TIMEOUT_S) -> StorageClient:
        async def call(method: str, body: bytes) -> bytes:
            return await channel.unary(method, body, timeout=timeout)
        return cls(channel.node_id, call)

    @classmethod
    def local(cls, node_id: bytes, handlers: StorageHandlers) -> StorageClient:
        return cls(node_id, handlers.dispatch, trusted=True)

    async def store_fragment(self, file: str, index: int, data: bytes | memoryview,
                             digest: bytes) -> None:
        head = storage_pb2.StoreFragmentRequest(file=file, index=index, hash=digest)
        await self._call("storage.StoreFragment", _with_data(head.SerializeToString(), data))

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

"""The client half of the storage peer calls: typed calls to one peer, remote over the sealed
channel or this node's own handlers (methods: storage/peer.py).

The client verifies what it fetches again: a fragment whose hash differs is reported missing.
A remote reply is a view into the opened frame (``PeerChannel.unary_view``); a fetched fragment
is lifted out of it as a view (``split_bytes_field``), not parsed out by protobuf (two copies).
``store_batch`` packs several writes into StoreBatch calls (framing: storage/peer_wire.py); a
peer that does not know StoreBatch answers NOT_FOUND and the client falls back to one call per
item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mesh.channel import PeerChannel
from mesh.channel.frames import Body, body_parts
from mesh.errors import InvalidArgumentError, MeshError, NotFoundError, error_for_code
from mesh.wire import Buffer, split_bytes_field
from proto import storage_pb2
from storage.fraghash import matches
from storage.manifest import MAX_MANIFEST_BYTES
from storage.peer_handlers import StorageHandlers
from storage.peer_wire import (
    _BATCHED,
    _ITEM,
    MAX_STORE_BATCH_ITEMS,
    StoreItem,
    _frames,
    _parse,
    _with_data,
)

STORE_BATCH_SHARE = 8 * 2**20          # a client packs fragments into batches up to this size
FETCH_TIMEOUT_S = 30.0
# Stores are idempotent (content-addressed fragments, INSERT OR IGNORE refs, the same signed
# manifest or record), so a store unanswered after STORE_HEDGE_S is sent again on another
# connection to the same peer (PeerChannel.unary). Reads hedge across holders (fetch.py).
STORE_HEDGE_S = 1.0
_IDEMPOTENT = frozenset({"storage.StoreBatch", "storage.StoreFragment", "storage.StoreManifest",
                         "storage.StoreDocument"})

Transport = Callable[[str, Body], Awaitable[Buffer]]


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
        async def call(method: str, body: Body) -> memoryview:
            return await channel.unary_view(
                method, body, timeout=timeout,
                hedge_after=STORE_HEDGE_S if method in _IDEMPOTENT else None)
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
        parts: list[bytes | bytearray | memoryview] = []
        for it in items:
            body = body_parts(it.request())
            parts += [_ITEM.pack(it.kind, sum(memoryview(b).nbytes for b in body)), *body]
        try:
            reply = await self._call("storage.StoreBatch", parts)
        except NotFoundError as exc:
            if "StoreBatch" not in str(exc):
                raise
            return list(await asyncio.gather(*(self._store_one(it) for it in items)))
        frames = _frames(reply)
        if len(frames) != len(items):
            raise InvalidArgumentError("StoreBatch answered for a different number of items")
        return [bytes(body) if status == 0
                else error_for_code(status, bytes(body).decode(errors="replace"))
                for status, body in frames]

    async def _store_one(self, item: StoreItem) -> bytes | MeshError:
        """One item as its own call (this node's store, or a peer without StoreBatch)."""
        try:
            if item.kind == 1 and self._handlers is not None:
                assert item.fragment is not None
                f = item.fragment
                await self._handlers.store_own_fragment(f.file, f.index, f.data, f.digest)
                return storage_pb2.StoreFragmentReply(hash=f.digest).SerializeToString()
            return bytes(await self._call(_BATCHED[item.kind], item.request()))
        except MeshError as exc:
            return exc

    async def fetch_fragment(self, digest: bytes) -> bytes | memoryview:
        """The fragment's bytes (from a peer, a view into its reply); NotFoundError if absent
        or if the peer sent other bytes."""
        if self._handlers is not None:
            return await self._handlers.fetch_own_fragment(digest)
        body = await self._call("storage.FetchFragment",
                                storage_pb2.FetchFragmentRequest(hash=digest).SerializeToString())
        rest, data = split_bytes_field(body, 1)
        _parse(storage_pb2.FetchFragmentReply, rest)      # any other field: still well formed
        if not self._trusted and not matches(data, digest):
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

    async def delete_fragment(self, digest: bytes, file: str,
                              manifest: storage_pb2.SignedManifest) -> bool:
        """Drop an extra copy; ``manifest`` (the file's) shows the holder it is not recorded."""
        body = await self._call("storage.DeleteFragment", storage_pb2.DeleteFragmentRequest(
            hash=digest, file=file, manifest=manifest).SerializeToString())
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

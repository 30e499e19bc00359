"""The server half of the storage peer calls: which handler answers which method, and how a
call reaches it (methods: storage/peer.py).

The handlers themselves are storage/fragment_handlers.py (ciphertext fragments) and
storage/record_handlers.py (manifests and document records); they check every size and hash and
refuse oversized bodies, and peers only ever see ciphertext fragments and signed manifests. Here
is the one method table, and the three ways in: from a peer over the sealed channel
(``register``), from this node's own client without a channel (``dispatch``, and the
own-fragment shortcuts that skip encoding altogether), and as the items of a StoreBatch, which
run concurrently, each exactly as its own method would (same checks, durable before the reply;
the framing is in storage/peer_wire.py). Every way in counts in ``calls``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from mesh.channel import Caller, ChannelServer
from mesh.channel.frames import Body, body_parts
from mesh.errors import InvalidArgumentError, NotFoundError, PeerCallError, ResourceExhaustedError
from mesh.wire import Buffer
from storage.capacity import Capacity
from storage.delete_check import DeleteGuard
from storage.documents import DocumentStore
from storage.fragment_handlers import FragmentHandlers, check_fragment
from storage.fragstore import FragmentStore
from storage.manifest import ManifestStore
from storage.peer_wire import _BATCHED, _ITEM, _frames
from storage.record_handlers import RecordHandlers

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
        self._fragment_handlers = FragmentHandlers(fragments, self.deletes, self_id, capacity)
        frag = self._fragment_handlers
        rec = RecordHandlers(manifests, documents, capacity, owner_of=self.deletes.owner)
        # the _VIEWS methods take any buffer, the others bytes (dispatch hands each its kind)
        self._methods: dict[str, Callable[[Any], Awaitable[Body]]] = {
            "storage.StoreFragment": frag.store_fragment,
            "storage.FetchFragment": frag.fetch_fragment,
            "storage.HasFragments": frag.has_fragments,
            "storage.DeleteFragment": frag.delete_fragment,
            "storage.StoreManifest": rec.store_manifest,
            "storage.FetchManifests": rec.fetch_manifests,
            "storage.StoreDocument": rec.store_document,
            "storage.FetchDocument": rec.fetch_document,
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

    async def store_own_fragment(self, file: str, index: int, data: bytes | memoryview,
                                 digest: bytes) -> None:
        """A Push on this node storing one of its fragments here: no request to encode and
        parse, and no second hash (the pusher hashed exactly these bytes in this process)."""
        check_fragment(file, len(data))      # a refused fragment is not counted as a call
        self.calls += 1
        await self._fragment_handlers.store_hashed(file, index, data, digest)

    async def fetch_own_fragment(self, digest: bytes) -> bytes:
        """A read on this node of its own store: no request, no reply to encode and parse."""
        self.calls += 1
        return await self._fragment_handlers.read(digest)

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

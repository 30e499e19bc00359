"""The fragment half of the storage peer calls: store, fetch, check and delete one node's
ciphertext fragments (dispatch and StoreBatch: storage/peer_handlers.py).

Fragments are the bulk of what a holder keeps and the only calls that carry megabytes, so these
handlers take the request as a view and reply in parts (nothing copied out of the frame), and
they are where a holder's trust rules live: a fragment is stored only under the hash it claims,
a store that would eat into the reserve is refused unless the fragment is held already, and a
copy is deleted only on the word of the newest manifest (storage/delete_check.py).
"""

from __future__ import annotations

import asyncio
import sqlite3

from mesh.errors import InvalidArgumentError, NotFoundError, ResourceExhaustedError
from mesh.wire import Buffer, bytes_field_key
from proto import storage_pb2
from storage.capacity import Capacity, StorageFull
from storage.delete_check import DeleteGuard, check_sent
from storage.documents import is_file_id
from storage.fragstore import FragmentMismatch, FragmentStore
from storage.manifest import MAX_MANIFEST_BYTES
from storage.peer_wire import MAX_FRAGMENT_BYTES, _fragment_request, _hex, _parse

MAX_BATCH = 100_000     # hashes one HasFragments may ask about
MAX_FILE_REF = 512      # the file reference a fragment is stored under


def check_fragment(file: str, size: int) -> None:
    """Refuse a fragment of ``size`` bytes for ``file`` before anything is read or written."""
    if size > MAX_FRAGMENT_BYTES:
        raise ResourceExhaustedError(f"fragment of {size} bytes is too large")
    if len(file) > MAX_FILE_REF:
        raise InvalidArgumentError("file reference too long")


class FragmentHandlers:
    """One node's fragment store, served to peers (and to its own client)."""

    def __init__(self, fragments: FragmentStore, deletes: DeleteGuard,
                 self_id: bytes | None = None, capacity: Capacity | None = None) -> None:
        self.fragments = fragments
        self.deletes = deletes       # who may drop a copy: delete_check.py
        self.self_id = self_id       # this node: never drop a fragment a manifest records here
        self.capacity = capacity     # None: no reserve (tests of the handlers alone)
        self._deep = asyncio.Semaphore(1)   # deep HasFragments checks, one at a time

    async def store_fragment(self, body: Buffer) -> bytes:
        req, data = _fragment_request(body)
        check_fragment(req.file, len(data))
        want = _hex(req.hash)

        def put() -> str:
            self.make_room(len(data), want)
            try:
                return self.fragments.put(data, req.file, req.index, expect=want)
            except FragmentMismatch as exc:            # checked before anything is written
                raise InvalidArgumentError("fragment bytes do not match their hash") from exc
            except (OSError, sqlite3.Error) as exc:   # disk full, I/O error: the pusher uses a spare
                raise ResourceExhaustedError(f"cannot store the fragment here: {exc}") from exc

        await asyncio.to_thread(put)
        return storage_pb2.StoreFragmentReply(hash=req.hash).SerializeToString()

    async def store_hashed(self, file: str, index: int, data: bytes | memoryview,
                           digest: bytes) -> None:
        """Store bytes this process hashed itself (``check_fragment`` already passed): no
        second hash."""
        known = _hex(digest)

        def put() -> None:
            self.make_room(len(data), known)
            try:
                self.fragments.put(data, file, index, known_hash=known)
            except (OSError, sqlite3.Error) as exc:
                raise ResourceExhaustedError(f"cannot store the fragment here: {exc}") from exc

        await asyncio.to_thread(put)

    def make_room(self, size: int, fragment: str | None = None) -> None:
        """StorageFull if ``size`` new bytes would eat into the reserve (storage/capacity.py);
        a fragment held already needs no room (a hedged re-send, a repair's re-store)."""
        if self.capacity is None:
            return
        try:
            self.capacity.check(size)
        except StorageFull:
            if fragment is None or not self.fragments.has(fragment):
                raise

    async def fetch_fragment(self, body: bytes) -> list[Buffer]:
        """A FetchFragmentReply in parts: the key of field 1 (data), then the fragment as read
        (protobuf would copy it into the message and again on serializing)."""
        req = _parse(storage_pb2.FetchFragmentRequest, body, 1024)
        data = await self.read(req.hash)
        return [bytes_field_key(1, len(data)), data]

    async def read(self, digest: bytes) -> bytes:
        """The fragment named ``digest``, re-hashed on the way; NOT_FOUND if not held."""
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

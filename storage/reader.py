"""The read path's last step: a resolved file's stripes fetched ahead, decoded, opened and
checked against the CID, in order (see storage/files.py for the whole Get).

Falling back (``read_first``, ``stream_first``): any mesh member may store a manifest for any
CID, and a read by CID cannot tell the first uploader's from a later one's (the same content may
well be pushed by several users). A member could so make a CID unreadable by signing a newer
(or public) manifest that points at fragments nobody holds: the CID check stops wrong bytes,
but the read failed. So a read tries the next manifest it can open when one does not serve
(fragments missing, a stripe or the CID not matching), up to ``MAX_CANDIDATES``, and the node
ranks a manifest that failed last for its next reads (``FailedManifests``). A stream falls
back only before its first stripe is out: after that it fails as before (a junk manifest whose
first stripe is genuine needs a public file's plaintext, and is caught by the CID check).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING

from mesh.errors import InvalidArgumentError, MeshError, NotFoundError, UnavailableError
from storage.cid import CidHasher
from storage.codec import NotEnoughFragmentsError
from storage.crypto import STRIPE_OVERHEAD, CryptoError, DecryptionError, open_stripe
from storage.fetch import ReadHints
from storage.inline import open_inline
from storage.manifest import Manifest
from storage.results import FILENAME_INDEX, IntegrityError

if TYPE_CHECKING:                      # files.py builds Readers: import it only for the types
    from storage.files import FileStore

log = logging.getLogger(__name__)

MAX_CANDIDATES = 8
# What makes a read try the next manifest: this one did not serve (not the user's fault).
_DID_NOT_SERVE = (IntegrityError, NotEnoughFragmentsError, NotFoundError, UnavailableError)


class Reader:
    """A resolved, readable file: its verified manifest and file key."""

    def __init__(self, store: FileStore, manifest: Manifest, key: bytes) -> None:
        self.store = store
        self.manifest = manifest
        self.key = key
        self.codec = manifest.codec()
        self.hints = ReadHints()

    @property
    def filename(self) -> str:
        return open_filename(self.manifest, self.key)

    async def read_all(self) -> bytes:
        parts = [s async for s in self.stripes()]
        return b"".join(parts)

    async def stripes(self) -> AsyncGenerator[bytes, None]:
        """Plaintext stripes in order; the CID is checked before the last one is released."""
        body = self.manifest.body
        if body.inline:
            try:
                data = open_inline(self.key, self.manifest)
            except DecryptionError as exc:
                raise IntegrityError(f"inline {body.cid}: {exc}") from exc
            hasher = CidHasher()
            hasher.update(data)
            self._check(hasher)
            yield data
            return
        count = len(body.stripes)
        hasher = CidHasher()
        window = self.store.read_window
        tasks: deque[asyncio.Task[bytes]] = deque()
        nxt = 0
        try:
            for s in range(count):
                while nxt < count and nxt < s + window:
                    tasks.append(asyncio.create_task(self._stripe(nxt)))
                    nxt += 1
                data = await tasks.popleft()
                hasher.update(data)
                if s == count - 1:
                    self._check(hasher)
                yield data
            if count == 0:
                self._check(hasher)
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    def _check(self, hasher: CidHasher) -> None:
        body = self.manifest.body
        if hasher.size != body.size or hasher.cid() != body.cid:
            raise IntegrityError(f"content does not match its CID {body.cid} "
                                 f"(got {hasher.cid()}, {hasher.size} bytes)")

    async def _stripe(self, s: int) -> bytes:
        body = self.manifest.body
        plain_len = self.manifest.stripe_len(s)
        frags = await self.store.fetcher.fragments(self.manifest, s, self.hints)
        last = s == len(body.stripes) - 1

        def decode() -> bytes:
            try:
                sealed = self.codec.decode_into(frags, plain_len + STRIPE_OVERHEAD)
                return open_stripe(self.key, sealed, context=body.file_id.encode(), index=s,
                                   last=last)
            except (DecryptionError, NotEnoughFragmentsError, ValueError) as exc:
                raise IntegrityError(f"stripe {s} of {body.cid}: {exc}") from exc

        if plain_len <= _INLINE_DECODE:
            return decode()            # less work than a hop to a worker thread and back
        return await asyncio.to_thread(decode)


_INLINE_DECODE = 64 * 1024


def open_filename(manifest: Manifest, key: bytes) -> str:
    sealed = manifest.body.filename_sealed
    if not sealed:
        return ""
    try:
        raw = open_stripe(key, sealed, context=b"filename\x00" + manifest.body.file_id.encode(),
                          index=FILENAME_INDEX, last=True)
        return raw.decode("utf-8", errors="replace")
    except CryptoError:
        return ""


class FailedManifests:
    """Manifests a read on this node could not use lately (bounded, least recent dropped)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._failed: OrderedDict[bytes, None] = OrderedDict()
        self.fallbacks = 0      # reads that went on to another manifest (Status)

    @staticmethod
    def _slot(m: Manifest) -> bytes:
        return hashlib.sha256(m.signed.body).digest()

    def add(self, m: Manifest) -> None:
        self.fallbacks += 1
        self._failed[self._slot(m)] = None
        self._failed.move_to_end(self._slot(m))
        while len(self._failed) > self._size:
            self._failed.popitem(last=False)

    def discard(self, m: Manifest) -> None:
        self._failed.pop(self._slot(m), None)

    def has(self, m: Manifest) -> bool:
        return self._slot(m) in self._failed


def size_error(m: Manifest, max_size: int) -> InvalidArgumentError:
    """The refusal of a unary read of ``m`` over ``max_size`` bytes."""
    return InvalidArgumentError(f"{m.cid} has {m.body.size} bytes, more than unary Get "
                                f"returns ({max_size}); use GetStream")


async def read_first(readers: list[Reader], failed: FailedManifests,
                     max_size: int | None = None) -> tuple[bytes, Reader]:
    """The plaintext from the first of ``readers`` that serves it (module docstring); else
    the first one's error. A manifest over ``max_size`` is not read (INVALID_ARGUMENT if none
    under it served)."""
    first: MeshError | None = None
    for reader in readers:
        m = reader.manifest
        if max_size is not None and m.body.size > max_size:
            first = first or size_error(m, max_size)
            continue
        try:
            data = await reader.read_all()
        except _DID_NOT_SERVE as exc:
            _note(failed, m, exc)
            first = first or exc
            continue
        failed.discard(m)
        return data, reader
    assert first is not None, "readers is never empty"
    raise first


async def stream_first(readers: list[Reader], failed: FailedManifests
                       ) -> tuple[Reader, AsyncIterator[bytes]]:
    """The first of ``readers`` whose first stripe arrives (module docstring), with its
    stripes; else the first one's error."""
    first: MeshError | None = None
    for reader in readers:
        stripes = reader.stripes()
        try:
            head = [await anext(stripes)]
        except StopAsyncIteration:           # an empty file: nothing to yield, CID checked
            head = []
        except _DID_NOT_SERVE as exc:
            await stripes.aclose()
            _note(failed, reader.manifest, exc)
            first = first or exc
            continue
        except BaseException:
            await stripes.aclose()               # its prefetches are cancelled now, not at GC
            raise
        failed.discard(reader.manifest)
        return reader, _chain(head, stripes)
    assert first is not None, "readers is never empty"
    raise first


async def _chain(head: list[bytes], rest: AsyncGenerator[bytes, None]
                 ) -> AsyncIterator[bytes]:
    try:
        for data in head:
            yield data
        async for data in rest:
            yield data
    finally:
        await rest.aclose()      # a stream abandoned midway cancels the stripes fetched ahead


def _note(failed: FailedManifests, m: Manifest, exc: MeshError) -> None:
    failed.add(m)
    log.info("manifest of %s by %s did not serve (%s); trying the next one", m.cid,
             m.body.owner_key.hex()[:16], exc)

"""The read path's last step: a resolved file's stripes fetched ahead, decoded, opened and
checked against the CID, in order (see storage/files.py for the whole Get)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from storage.cid import CidHasher
from storage.codec import NotEnoughFragmentsError
from storage.crypto import STRIPE_OVERHEAD, CryptoError, DecryptionError, open_stripe
from storage.fetch import ReadHints
from storage.inline import open_inline
from storage.manifest import Manifest
from storage.results import FILENAME_INDEX, IntegrityError

if TYPE_CHECKING:                      # files.py builds Readers: import it only for the types
    from storage.files import FileStore


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

    async def stripes(self) -> AsyncIterator[bytes]:
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

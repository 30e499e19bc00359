"""A streamed Push's stripe pipeline: the source's stripes to their holders, memory bounded.

A stream's length is unknown until it ends, so its stripes cannot wait for the whole file: each
stripe is hashed into the CID, sealed, erasure-coded and stored while the next ones arrive. Kept
apart from storage/push.py (which places the Push and signs its manifest) because this is the
part whose concurrency needs care: which work overlaps, in what order, and what a failed Push
must cancel or wait for.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable
from concurrent.futures import ThreadPoolExecutor

from proto import storage_pb2
from storage.cid import CidHasher
from storage.codec import Codec
from storage.crypto import seal_stripe_buffer
from storage.fraghash import fragment_digest
from storage.late_stores import LateStores
from storage.manifest import NO_HOLDER
from storage.restripe import restripe
from storage.tail import Tail
from storage.upload import Placer, Uploader

# The CID is one SHA-256 over the whole file, so its updates must run in stripe order: one
# thread, FIFO. Sealing, coding and fragment hashes of the stripes run beside it on the default
# executor, so a multi-stripe Push keeps both cores busy (the next stripe's bytes arrive
# meanwhile).
_CID_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cid")

Encoded = tuple[list[memoryview], list[bytes]]     # one stripe's fragments and their hashes


class StripePipeline:
    """One streamed Push's stripes: CID, seal, encode and store, overlapped (module docstring).

    After ``run``: ``stripes`` (each stripe's fragment hashes, holders as the uploader placed
    them), ``placed_min`` (the fewest fragments placed for any stripe) and ``hasher`` (the
    plaintext's CID and size). ``close`` after a failed ``run`` cancels what is left.
    """

    def __init__(self, upload: Uploader, file_id: str, file_key: bytes, codec: Codec,
                 placer: Placer, tail: Tail, late: LateStores, *, window: int) -> None:
        self._upload = upload
        self._file_id = file_id
        self._file_key = file_key
        self._context = file_id.encode()
        self._codec = codec
        self._placer = placer
        self._tail = tail
        self._late = late
        self._window = window              # stripes whose stores run at once
        self.hasher = CidHasher()
        self.stripes: list[storage_pb2.Stripe] = []
        self.placed_min = codec.n
        self._uploads: deque[asyncio.Task[int]] = deque()
        # (CID update, encode) of stripes read but not yet handed to the uploader: at most two,
        # so memory stays a few stripes whatever the file size.
        self._coding: deque[tuple[asyncio.Future[None], asyncio.Future[Encoded]]] = deque()

    def _encode(self, data: bytes | bytearray, index: int, last: bool) -> Encoded:
        sealed = seal_stripe_buffer(self._file_key, data, context=self._context, index=index,
                                    last=last)
        frags = self._codec.encode_views(sealed)
        return frags, [fragment_digest(f) for f in frags]

    async def run(self, source: AsyncIterable[bytes | memoryview], stripe_size: int,
                  inline_max: int) -> bytes | None:
        """Store every stripe of ``source``. A stream that is one stripe of at most
        ``inline_max`` bytes is stored nowhere: its bytes are returned, for an inline Push."""
        loop = asyncio.get_running_loop()
        async for index, data, last in restripe(source, stripe_size):
            if index == 0 and last and len(data) <= inline_max:     # a small stream
                return bytes(data)
            self._coding.append((loop.run_in_executor(_CID_THREAD, self.hasher.update, data),
                                 loop.run_in_executor(None, self._encode, data, index, last)))
            del data
            if len(self._coding) >= 2:
                await self._hand_over()
        while self._coding:
            await self._hand_over()
        while self._uploads:
            self.placed_min = min(self.placed_min, await self._uploads.popleft())
        return None

    async def _hand_over(self) -> None:
        """The oldest coded stripe to the uploader; waits while ``window`` stores run."""
        hashed, encoded = self._coding.popleft()
        try:
            frags, hashes = await encoded
        finally:
            await hashed
        stripe = storage_pb2.Stripe(fragments=[
            storage_pb2.Fragment(hash=h, holder=NO_HOLDER) for h in hashes])
        self.stripes.append(stripe)
        self._uploads.append(asyncio.create_task(
            self._upload.send_stripe(self._file_id, len(self.stripes) - 1, frags, stripe,
                                     self._placer, self._codec, self._tail, self._late)))
        del frags
        while len(self._uploads) >= self._window:
            self.placed_min = min(self.placed_min, await self._uploads.popleft())

    async def close(self) -> None:
        """Cancel the stores still under way and let the coding threads finish (a failed
        Push; after a complete ``run`` nothing is left)."""
        for t in self._uploads:
            t.cancel()
        if self._uploads:
            await asyncio.gather(*self._uploads, return_exceptions=True)
        for hashed, encoded in self._coding:
            await asyncio.gather(hashed, encoded, return_exceptions=True)

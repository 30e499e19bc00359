"""The write path: one Push from plaintext to a signed manifest (see storage/files.py).

Encoding and sealing happen here; where the fragments and records go is storage/upload.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import nacl.signing

from mesh.errors import UnavailableError
from proto import storage_pb2
from storage.cid import CidHasher, cid_for
from storage.codec import Codec
from storage.crypto import new_file_key, seal_key_to, seal_stripe, seal_stripe_buffer
from storage.documents import new_file_id
from storage.fraghash import fragment_digest
from storage.inline import seal_inline
from storage.late_copies import LateCopies
from storage.late_stores import LateStores
from storage.manifest import NO_HOLDER, Manifest, sign_manifest
from storage.placement import Network, placement_key
from storage.restripe import restripe
from storage.results import FILENAME_INDEX, IntegrityError, PushOptions, PushResult
from storage.tail import Tail
from storage.upload import Placer, Uploader

log = logging.getLogger(__name__)
WARN_EVERY_S = 60.0

# The CID is one SHA-256 over the whole file, so its updates must run in stripe order: one
# thread, FIFO. Sealing, coding and fragment hashes of the stripes run beside it on the default
# executor, so a multi-stripe Push keeps both cores busy (the next stripe's bytes arrive
# meanwhile).
_CID_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cid")


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


class Pusher:
    """Push over a Network; ``inflight`` counts the Pushes under way. ``late_copies`` gets
    the stores each Push gave up on, to delete their copies if they land after all."""

    def __init__(self, network: Network, upload: Uploader, counters: dict[str, int], *,
                 inline_max: int, window: int, late_copies: LateCopies | None = None) -> None:
        self.network = network
        self.late_copies = late_copies
        self._upload = upload
        self.counters = counters
        self.inline_max = inline_max          # files up to this size go inline (storage/inline.py)
        self.window = window
        self.inflight = 0
        self._warned: dict[str, float] = {}   # warning -> when last logged at WARNING

    async def push_bytes(self, data: bytes, owner: nacl.signing.SigningKey,
                         opts: PushOptions) -> PushResult:
        """Unary Push: the CID is known first, so placement derives from it; a one-stripe file
        takes the one-round-trip path (_push_small)."""
        if self.inline_max < len(data) <= opts.stripe_size:
            return await self._push_small(data, owner, opts)
        cid = await asyncio.to_thread(cid_for, data) if len(data) > 65536 else cid_for(data)
        if len(data) <= self.inline_max:
            opts.validate()
            return await self._push_inline(data, owner, opts, cid, *new_file_id(
                bytes(owner.verify_key)))
        return await self.push(_one_chunk(data), owner, opts, cid=cid)

    async def push(self, source: AsyncIterable[bytes | memoryview], owner: nacl.signing.SigningKey,
                   opts: PushOptions, *, cid: str | None = None) -> PushResult:
        codec = opts.validate()
        owner_pub = bytes(owner.verify_key)
        file_id, nonce = new_file_id(owner_pub)
        pkey = placement_key("cid", cid) if cid else placement_key("upload", file_id)
        placer, warnings = await self._placer(pkey, codec)
        tail, late = Tail(self.counters, on_stuck=self.network.suspect), LateStores()
        file_key = new_file_key()
        context = file_id.encode()
        hasher = CidHasher()
        stripes: list[storage_pb2.Stripe] = []
        inflight: deque[asyncio.Task[int]] = deque()
        placed_min = codec.n
        self.inflight += 1

        def encode(data: bytes | bytearray, index: int,
                   last: bool) -> tuple[list[memoryview], list[bytes]]:
            sealed = seal_stripe_buffer(file_key, data, context=context, index=index, last=last)
            frags = codec.encode_views(sealed)
            return frags, [fragment_digest(f) for f in frags]

        loop = asyncio.get_running_loop()
        # (CID update, encode) of stripes read but not yet handed to the uploader: at most two,
        # so memory stays a few stripes whatever the file size.
        coding: deque[tuple[asyncio.Future[None],
                            asyncio.Future[tuple[list[memoryview], list[bytes]]]]] = deque()

        async def hand_over() -> None:
            nonlocal placed_min
            hashed, encoded = coding.popleft()
            try:
                frags, hashes = await encoded
            finally:
                await hashed
            stripe = storage_pb2.Stripe(fragments=[
                storage_pb2.Fragment(hash=h, holder=NO_HOLDER) for h in hashes])
            stripes.append(stripe)
            inflight.append(asyncio.create_task(
                self._upload.send_stripe(file_id, len(stripes) - 1, frags, stripe, placer,
                                         codec, tail, late)))
            del frags
            while len(inflight) >= self.window:
                placed_min = min(placed_min, await inflight.popleft())

        try:
            async for index, data, last in restripe(source, opts.stripe_size):
                if index == 0 and last and len(data) <= self.inline_max:   # a small stream
                    return await self._push_inline(bytes(data), owner, opts, cid_for(data),
                                                   file_id, nonce)
                coding.append((loop.run_in_executor(_CID_THREAD, hasher.update, data),
                               loop.run_in_executor(None, encode, data, index, last)))
                del data
                if len(coding) >= 2:
                    await hand_over()
            while coding:
                await hand_over()
            while inflight:
                placed_min = min(placed_min, await inflight.popleft())
        finally:
            self.inflight -= 1
            for t in inflight:
                t.cancel()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
            for hashed, encoded in coding:      # a failed Push: let the threads finish
                await asyncio.gather(hashed, encoded, return_exceptions=True)

        if not stripes and self.inline_max >= 0:           # an empty stream
            return await self._push_inline(b"", owner, opts, hasher.cid(), file_id, nonce)
        final_cid = hasher.cid()
        if cid is not None and cid != final_cid:
            raise IntegrityError("the uploaded bytes changed while being stored")
        under = len(set(placer.current)) < codec.n or placed_min < codec.n
        if placed_min < codec.n:
            warnings.append(f"some stripes have only {placed_min} of {codec.n} fragments placed")
        body = self._manifest_body(final_cid, file_id, hasher.size, codec, opts, owner_pub,
                                   file_key, pkey, placer.holders, stripes, under)
        signed = sign_manifest(body, owner)
        replicas, docs = await self._upload.store_records(signed, owner, opts, nonce, tail)
        return self._finish(body, replicas, docs, warnings + tail.warning(), signed, late)

    async def _push_inline(self, data: bytes, owner: nacl.signing.SigningKey,
                           opts: PushOptions, cid: str, file_id: str,
                           nonce: bytes) -> PushResult:
        """A small file sealed into its manifest: manifest and document records are stored in
        one concurrent round; acknowledged once they are durable (see storage/inline.py)."""
        codec = opts.validate()
        file_key = new_file_key()
        body = self._manifest_body(cid, file_id, len(data), codec, opts, bytes(owner.verify_key),
                                   file_key, b"", [], [], False)
        body.inline = seal_inline(file_key, data, file_id)
        signed = sign_manifest(body, owner)
        self.inflight += 1
        try:
            replicas, docs = await self._upload.store_records(signed, owner, opts, nonce)
        finally:
            self.inflight -= 1
        result = self._finish(body, replicas, docs, [], signed)
        result.under_replicated = replicas < codec.m + 1
        return result

    async def _push_small(self, data: bytes, owner: nacl.signing.SigningKey,
                          opts: PushOptions) -> PushResult:
        """One stripe: fragments, manifest and document are stored concurrently.

        The CID (which placement needs), sealing, encoding and the fragment hashes are one
        worker-thread job (one hop; the file_id and key are random, so none waits on a call).
        The manifest optimistically names the primary holders; if one of them fails and a
        spare takes its fragment, a corrected manifest (newer created_ms) is stored after.
        """
        codec = opts.validate()
        owner_pub = bytes(owner.verify_key)
        file_id, nonce = new_file_id(owner_pub)
        file_key = new_file_key()

        def encode() -> tuple[str, list[memoryview], list[bytes]]:
            cid = cid_for(data)
            sealed = seal_stripe_buffer(file_key, data, context=file_id.encode(), index=0,
                                        last=True)
            frags = codec.encode_views(sealed)
            return cid, frags, [fragment_digest(f) for f in frags]

        cid, frags, hashes = await asyncio.to_thread(encode) if len(data) > 65536 else encode()
        pkey = placement_key("cid", cid)
        placer, warnings = await self._placer(pkey, codec)
        planned = [placer.slot(h) for h in placer.current]
        stripes = [storage_pb2.Stripe(fragments=[
            storage_pb2.Fragment(hash=h, holder=slot) for h, slot in zip(hashes, planned,
                                                                         strict=True)])]
        stripes = stripes if data else []
        under = len(set(placer.current)) < codec.n
        body = self._manifest_body(cid, file_id, len(data), codec, opts, owner_pub, file_key,
                                   pkey, list(placer.holders), stripes, under)
        actual = storage_pb2.Stripe()
        if stripes:
            actual.CopyFrom(stripes[0])
        self.inflight += 1
        signed = sign_manifest(body, owner)
        tail, late = Tail(self.counters, on_stuck=self.network.suspect), LateStores()
        try:
            if data:
                sent, replicas, docs = await self._upload.store_small(
                    cid, file_id, frags, actual, placer, codec, signed, owner, opts, nonce, tail,
                    late)
            else:
                sent = codec.n
                replicas, docs = await self._upload.store_records(signed, owner, opts, nonce,
                                                                  tail)
        finally:
            self.inflight -= 1
        if data and (sent < codec.n or [f.holder for f in actual.fragments] != planned):
            if sent < codec.n:
                warnings.append(f"only {sent} of {codec.n} fragments placed")
            spread = len({f.holder for f in actual.fragments if f.holder != NO_HOLDER})
            body = self._manifest_body(cid, file_id, len(data), codec, opts, owner_pub,
                                       file_key, pkey, placer.holders, [actual],
                                       sent < codec.n or spread < codec.n,
                                       body.created_ms + 1, body.filename_sealed)
            signed = sign_manifest(body, owner)
            replicas = await self._upload.store_manifest(cid, signed, codec.m + 1, tail)
        return self._finish(body, replicas, docs, warnings + tail.warning(), signed, late)

    async def _placer(self, pkey: bytes, codec: Codec) -> tuple[Placer, list[str]]:
        """The closest live peers for the fragments, and a warning when there are too few."""
        ranked = await self.network.closest(pkey, codec.n + min(codec.n, 8))
        placer = Placer(ranked, codec.n)
        if len(set(placer.current)) >= codec.n:
            return placer, []
        return placer, [f"only {len(set(placer.current))} live storage peer(s) for {codec.n} "
                        "fragments: several fragments share a holder (under-replicated)"]

    def _manifest_body(self, cid: str, file_id: str, size: int, codec: Codec, opts: PushOptions,
                       owner_pub: bytes, file_key: bytes, pkey: bytes, holders: list[bytes],
                       stripes: list[storage_pb2.Stripe], under: bool,
                       created_ms: int | None = None,
                       sealed_name: bytes | None = None) -> storage_pb2.ManifestBody:
        if sealed_name is None:
            sealed_name = seal_stripe(
                file_key, opts.filename.encode(), context=b"filename\x00" + file_id.encode(),
                index=FILENAME_INDEX, last=True) if opts.filename else b""
        keys = [storage_pb2.SealedKey(recipient=r, sealed=seal_key_to(r, file_key))
                for r in dict.fromkeys([owner_pub, *opts.readers])]
        return storage_pb2.ManifestBody(
            format=1, cid=cid, file_id=file_id, size=size, k=codec.k, m=codec.m,
            stripe_size=opts.stripe_size, codec_format=int(codec.params()["format"]),
            packet_size=codec.packet_size, matrix=codec.matrix, owner_key=owner_pub,
            keys=[] if opts.public else keys, public_key=file_key if opts.public else b"",
            filename_sealed=sealed_name, placement_key=pkey, holders=holders,
            stripes=stripes, under_replicated=under,
            created_ms=int(time.time() * 1000) if created_ms is None else created_ms)

    def _finish(self, body: storage_pb2.ManifestBody, replicas: int, docs: int,
                warnings: list[str], signed: storage_pb2.SignedManifest | None = None,
                late: LateStores | None = None) -> PushResult:
        if replicas == 0:
            raise UnavailableError(f"no peer accepted the manifest of {body.cid}")
        if replicas < body.m + 1:
            warnings.append(f"manifest stored on {replicas} of {body.m + 1} peers")
        if docs == 0:
            warnings.append("no peer accepted the document record: Get by file_id will fail")
        now = time.monotonic()
        for w in warnings:
            # a small mesh under-replicates every Push: log each kind once a minute (it is in
            # every PushResult anyway), not a line per Push
            if now - self._warned.get(w, -WARN_EVERY_S) >= WARN_EVERY_S:
                if len(self._warned) > 64:
                    self._warned.clear()
                self._warned[w] = now
                log.warning("push %s: %s (repeats logged at debug for %.0f s)", body.cid, w,
                            WARN_EVERY_S)
            else:
                log.debug("push %s: %s", body.cid, w)
        self.counters["pushes"] += 1
        self.counters["bytes_in"] += body.size
        placed = sum(1 for s in body.stripes for f in s.fragments if f.holder != NO_HOLDER)
        manifest = Manifest(body, signed) if signed is not None else None
        if late is not None and manifest is not None and self.late_copies is not None:
            self.late_copies.submit(late, manifest)     # queued only: the Push is done
        return PushResult(body.cid, body.file_id, body.size, body.k, body.m, placed,
                          body.under_replicated, warnings, replicas, manifest)

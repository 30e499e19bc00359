"""The write path: one Push from plaintext to a signed manifest (see storage/files.py).

A Push takes one of three paths by size: inline (sealed into its manifest, storage/inline.py),
one stripe (fragments and records in a single round) or streamed (stripes stored as they
arrive: the pipeline is storage/push_stream.py). This module picks the path, signs the manifest
and turns what each path stored into a PushResult; the manifest body and the holders it names
are storage/push_manifest.py, where the fragments and records go is storage/upload.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator

import nacl.signing

from mesh.errors import UnavailableError
from proto import storage_pb2
from storage.cid import cid_for
from storage.crypto import new_file_key, seal_stripe_buffer
from storage.documents import new_file_id
from storage.fraghash import fragment_digest
from storage.inline import seal_inline
from storage.late_copies import LateCopies
from storage.late_stores import LateStores
from storage.manifest import NO_HOLDER, Manifest, sign_manifest
from storage.placement import Network, placement_key
from storage.push_manifest import choose_holders, manifest_body
from storage.push_stream import StripePipeline
from storage.results import IntegrityError, PushOptions, PushResult
from storage.tail import Tail
from storage.upload import Uploader

log = logging.getLogger(__name__)
WARN_EVERY_S = 60.0


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
        """Streamed Push: stripes are stored as they arrive (storage/push_stream.py); without
        ``cid`` placement derives from the file_id, with it the bytes must hash to it."""
        codec = opts.validate()
        owner_pub = bytes(owner.verify_key)
        file_id, nonce = new_file_id(owner_pub)
        pkey = placement_key("cid", cid) if cid else placement_key("upload", file_id)
        placer, warnings = await choose_holders(self.network, pkey, codec)
        tail, late = Tail(self.counters, on_stuck=self.network.suspect), LateStores()
        file_key = new_file_key()
        pipeline = StripePipeline(self._upload, file_id, file_key, codec, placer, tail, late,
                                  window=self.window)
        self.inflight += 1
        try:
            small = await pipeline.run(source, opts.stripe_size, self.inline_max)
            if small is not None:
                return await self._push_inline(small, owner, opts, cid_for(small), file_id, nonce)
        finally:
            self.inflight -= 1
            await pipeline.close()

        hasher, stripes, placed_min = pipeline.hasher, pipeline.stripes, pipeline.placed_min
        if not stripes and self.inline_max >= 0:           # an empty stream
            return await self._push_inline(b"", owner, opts, hasher.cid(), file_id, nonce)
        final_cid = hasher.cid()
        if cid is not None and cid != final_cid:
            raise IntegrityError("the uploaded bytes changed while being stored")
        under = len(set(placer.current)) < codec.n or placed_min < codec.n
        if placed_min < codec.n:
            warnings.append(f"some stripes have only {placed_min} of {codec.n} fragments placed")
        body = manifest_body(final_cid, file_id, hasher.size, codec, opts, owner_pub,
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
        body = manifest_body(cid, file_id, len(data), codec, opts, bytes(owner.verify_key),
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
        placer, warnings = await choose_holders(self.network, pkey, codec)
        planned = [placer.slot(h) for h in placer.current]
        stripes = [storage_pb2.Stripe(fragments=[
            storage_pb2.Fragment(hash=h, holder=slot) for h, slot in zip(hashes, planned,
                                                                         strict=True)])]
        stripes = stripes if data else []
        under = len(set(placer.current)) < codec.n
        body = manifest_body(cid, file_id, len(data), codec, opts, owner_pub, file_key,
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
            body = manifest_body(cid, file_id, len(data), codec, opts, owner_pub,
                                 file_key, pkey, placer.holders, [actual],
                                 sent < codec.n or spread < codec.n,
                                 body.created_ms + 1, body.filename_sealed)
            signed = sign_manifest(body, owner)
            replicas = await self._upload.store_manifest(cid, signed, codec.m + 1, tail)
        return self._finish(body, replicas, docs, warnings + tail.warning(), signed, late)

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

"""Push and Get: stripes → AEAD → erasure code → XOR-closest peers, and back. No gRPC here.

Push (``FileStore.push``) reads the source stripe by stripe (default 4 MiB). Per stripe, in a
worker thread (hashlib, libsodium and numpy release the GIL): feed the plaintext CID hasher,
seal the stripe with the per-file key (context = file_id, index, last flag), erasure-code the
ciphertext into n = k+m fragments and hash each. The stores of up to ``window`` stripes run
concurrently with the encoding of the next, so memory stays ~window stripes whatever the size.
At the end the owner signs the manifest (storage/manifest.py), which goes to the m+1 closest
peers to the CID, and a document record (storage/documents.py) maps the file_id to the CID;
both in one round, one call to a peer that keeps both (storage/records.py). A file of at most
``inline_max`` bytes (4 KiB) skips the fragments: it is sealed into its manifest
(storage/inline.py), so its Push is that one round and its Get one manifest fetch. A unary Push
of one stripe (``_push_small``, e.g. 1 MiB) hashes, seals, encodes and signs first, then stores
fragments, manifest and document record in a single round of one StoreBatch call per peer
(storage/peer.py), and the fragment this node holds goes to its own store without a re-hash.

Get (``FileStore.open`` then ``Reader.stripes``) resolves a CID or file_id to a verified manifest
the user can open (this node's own replica first, without a channel call), then fetches any k hash-verified fragments per stripe (data fragments first:
no decode work; on failure the next holder), several stripes ahead with bounded concurrency,
decodes, authenticates and decrypts each stripe in order and recomputes the CID; a mismatch raises
IntegrityError (DATA_LOSS) — never silent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import nacl.signing

from mesh.errors import (
    InvalidArgumentError,
    MeshError,
    NotFoundError,
    PeerCallError,
    PermissionDeniedError,
    UnavailableError,
)
from proto import storage_pb2
from storage.cid import CidHasher, cid_for, is_cid
from storage.codec import Codec, NotEnoughFragmentsError
from storage.crypto import (
    STRIPE_OVERHEAD,
    CryptoError,
    DecryptionError,
    new_file_key,
    open_stripe,
    seal_key_to,
    seal_stripe,
    seal_stripe_buffer,
)
from storage.documents import Documents, document_key, is_file_id, new_file_id, sign_document
from storage.inline import INLINE_MAX, ReplicaHealth, health_of, open_inline, seal_inline
from storage.manifest import NO_HOLDER, Manifest, manifest_key, sign_manifest, verify_manifest
from storage.peer import StoreItem
from storage.placement import Network, assign, placement_key
from storage.records import store_records

log = logging.getLogger(__name__)

DEFAULT_K, DEFAULT_M = 4, 2
DEFAULT_STRIPE = 4 * 2**20
MIN_STRIPE, MAX_STRIPE = 4096, 32 * 2**20
MAX_FILENAME = 1024
FILENAME_INDEX = 2**63        # AEAD index used for the sealed filename (never a stripe index)


class IntegrityError(PeerCallError):
    """Fetched data did not authenticate or its CID did not match (DATA_LOSS)."""

    code = grpc.StatusCode.DATA_LOSS


@dataclass
class PushOptions:
    k: int = DEFAULT_K
    m: int = DEFAULT_M
    stripe_size: int = DEFAULT_STRIPE
    public: bool = False
    filename: str = ""
    readers: list[bytes] = field(default_factory=list)   # Ed25519 public keys
    document: bool = True     # publish a document record (file_id -> CID); versions don't

    def validate(self) -> Codec:
        if not MIN_STRIPE <= self.stripe_size <= MAX_STRIPE:
            raise InvalidArgumentError(
                f"stripe_size must be in {MIN_STRIPE}..{MAX_STRIPE}, got {self.stripe_size}")
        if not 1 <= self.k or not 0 <= self.m or self.k + self.m > 255:
            raise InvalidArgumentError(f"need k >= 1, m >= 0, k+m <= 255; got k={self.k} m={self.m}")
        if not isinstance(self.filename, str) or len(self.filename) > MAX_FILENAME:
            raise InvalidArgumentError(f"filename longer than {MAX_FILENAME} characters")
        for r in self.readers:
            if len(r) != 32:
                raise InvalidArgumentError("a reader is named by a 32-byte Ed25519 public key")
        try:
            return Codec(self.k, self.m)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from exc


@dataclass
class PushResult:
    cid: str
    file_id: str
    size: int
    k: int
    m: int
    fragments_placed: int
    under_replicated: bool
    warnings: list[str]
    manifest_replicas: int = 0
    manifest: Manifest | None = None     # what was stored (lets a caller skip a fetch)


@dataclass
class FragmentHealth:
    index: int
    holder: bytes | None
    address: str
    reachable: bool
    healthy: bool


@dataclass
class StatResult:
    manifest: Manifest
    filename: str
    fragments: list[FragmentHealth]
    health: str
    stripes_ok: int
    stripes_degraded: int
    stripes_lost: int

    def as_dict(self) -> dict[str, Any]:
        b = self.manifest.body
        return {
            "cid": b.cid, "file_id": b.file_id, "size": b.size, "k": b.k, "m": b.m,
            "stripe_size": b.stripe_size, "stripes": len(b.stripes), "filename": self.filename,
            "owner": b.owner_key.hex(), "public": bool(b.public_key), "health": self.health,
            "under_replicated": b.under_replicated, "inline": bool(b.inline),
            "stripes_healthy": self.stripes_ok, "stripes_degraded": self.stripes_degraded,
            "stripes_unrecoverable": self.stripes_lost,
            "fragments": [{"index": f.index, "holder": f.holder.hex() if f.holder else "",
                           "address": f.address, "reachable": f.reachable,
                           "healthy": f.healthy} for f in self.fragments],
        }


async def restripe(source: AsyncIterable[bytes],
                   size: int) -> AsyncIterator[tuple[int, bytes | bytearray, bool]]:
    """(index, stripe, is_last) for a stream of arbitrary chunks; holds one stripe back.

    Linear in the input: every byte is copied once, into a stripe buffer allocated whole (no
    growing, no second copy); a chunk that is exactly one stripe is passed on as it is.
    """
    buf = bytearray()
    fill = 0
    pending: bytes | bytearray | None = None
    index = 0
    async for chunk in source:
        view = memoryview(chunk)
        pos = 0
        while pos < len(view):
            piece: bytes | bytearray | None = None
            if not fill and pos == 0 and len(view) == size:
                piece, pos = chunk, size
            else:
                if not fill:
                    buf = bytearray(size)
                take = min(size - fill, len(view) - pos)
                buf[fill:fill + take] = view[pos:pos + take]
                fill += take
                pos += take
                if fill == size:
                    piece, fill = buf, 0
            if piece is not None:
                if pending is not None:
                    yield index, pending, False
                    index += 1
                pending = piece
    if fill:
        if pending is not None:
            yield index, pending, False
            index += 1
        del buf[fill:]
        pending = buf
    if pending is not None:
        yield index, pending, True


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


class _Placer:
    """Holder choice for one upload: primaries by index, spares for failed holders."""

    def __init__(self, ranked: list[bytes], n: int) -> None:
        self.current = assign(ranked[:n], n)
        self.spares = ranked[n:]
        self.failed: set[bytes] = set()
        self.holders: list[bytes] = []
        self._slot: dict[bytes, int] = {}

    def slot(self, node_id: bytes) -> int:
        if node_id not in self._slot:
            self._slot[node_id] = len(self.holders)
            self.holders.append(node_id)
        return self._slot[node_id]

    def replace(self, index: int, bad: bytes) -> bytes | None:
        self.failed.add(bad)
        if self.current[index] != bad and self.current[index] not in self.failed:
            return self.current[index]          # another stripe already replaced it
        while self.spares:
            spare = self.spares.pop(0)
            if spare not in self.failed:
                self.current[index] = spare
                return spare
        others = [h for h in dict.fromkeys(self.current) if h not in self.failed]
        if others:
            self.current[index] = others[index % len(others)]
            return self.current[index]
        return None


class _ReadHints:
    """What one read learns as it goes: dead holders, the placement key's closest peers."""

    def __init__(self) -> None:
        self.dead: set[bytes] = set()
        self._ranked: list[bytes] | None = None
        self._lock = asyncio.Lock()

    async def ranked(self, network: Network, body: storage_pb2.ManifestBody) -> list[bytes]:
        async with self._lock:
            if self._ranked is None:
                n = body.k + body.m
                try:
                    self._ranked = await network.closest(body.placement_key, n + min(n, 8))
                except MeshError:
                    self._ranked = []
            return self._ranked


class Reader:
    """A resolved, readable file: its verified manifest and file key."""

    def __init__(self, store: FileStore, manifest: Manifest, key: bytes) -> None:
        self.store = store
        self.manifest = manifest
        self.key = key
        self.codec = manifest.codec()
        self.hints = _ReadHints()

    @property
    def filename(self) -> str:
        return _open_filename(self.manifest, self.key)

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
        frags = await self.store._fetch_fragments(self.manifest, s, self.hints)
        last = s == len(body.stripes) - 1

        def decode() -> bytes:
            try:
                sealed = self.codec.decode_into(frags, plain_len + STRIPE_OVERHEAD)
                return open_stripe(self.key, sealed, context=body.file_id.encode(), index=s,
                                   last=last)
            except (DecryptionError, NotEnoughFragmentsError, ValueError) as exc:
                raise IntegrityError(f"stripe {s} of {body.cid}: {exc}") from exc

        return await asyncio.to_thread(decode)


def _same_file(signed: storage_pb2.SignedManifest, file_id: str) -> bool:
    try:
        return verify_manifest(signed).file_id == file_id
    except InvalidArgumentError:
        return False


def _open_filename(manifest: Manifest, key: bytes) -> str:
    sealed = manifest.body.filename_sealed
    if not sealed:
        return ""
    try:
        raw = open_stripe(key, sealed, context=b"filename\x00" + manifest.body.file_id.encode(),
                          index=FILENAME_INDEX, last=True)
        return raw.decode("utf-8", errors="replace")
    except CryptoError:
        return ""


class FileStore:
    """Push/Get/Stat over a Network (the mesh in a node, a fake in unit tests)."""

    def __init__(self, network: Network, *, defaults: PushOptions | None = None,
                 window: int = 6, read_window: int = 4, fetch_concurrency: int = 24,
                 inline_max: int = INLINE_MAX) -> None:
        self.network = network
        self.inline_max = inline_max          # files up to this size go inline (storage/inline.py)
        self.defaults = defaults or PushOptions()
        self.window = window
        self.read_window = read_window
        self._fetch_sem = asyncio.Semaphore(fetch_concurrency)
        self.documents = Documents(network, replicas=self.defaults.m + 1)
        self.counters = {"pushes": 0, "gets": 0, "bytes_in": 0, "bytes_out": 0,
                         "corrupt_fragments": 0, "fragment_failures": 0}
        self.inflight = 0

    # -- Push -------------------------------------------------------------------------------
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

    async def push(self, source: AsyncIterable[bytes], owner: nacl.signing.SigningKey,
                   opts: PushOptions, *, cid: str | None = None) -> PushResult:
        codec = opts.validate()
        owner_pub = bytes(owner.verify_key)
        file_id, nonce = new_file_id(owner_pub)
        pkey = placement_key("cid", cid) if cid else placement_key("upload", file_id)
        ranked = await self.network.closest(pkey, codec.n + min(codec.n, 8))
        placer = _Placer(ranked, codec.n)
        warnings: list[str] = []
        if len(set(placer.current)) < codec.n:
            warnings.append(f"only {len(set(placer.current))} live storage peer(s) for "
                            f"{codec.n} fragments: several fragments share a holder "
                            "(under-replicated)")
        file_key = new_file_key()
        context = file_id.encode()
        hasher = CidHasher()
        stripes: list[storage_pb2.Stripe] = []
        inflight: deque[asyncio.Task[int]] = deque()
        placed_min = codec.n
        self.inflight += 1

        def encode(data: bytes | bytearray, index: int,
                   last: bool) -> tuple[list[memoryview], list[bytes]]:
            hasher.update(data)
            sealed = seal_stripe_buffer(file_key, data, context=context, index=index, last=last)
            frags = codec.encode_views(sealed)
            return frags, [hashlib.sha256(f).digest() for f in frags]

        try:
            async for index, data, last in restripe(source, opts.stripe_size):
                if index == 0 and last and len(data) <= self.inline_max:   # a small stream
                    return await self._push_inline(bytes(data), owner, opts, cid_for(data),
                                                   file_id, nonce)
                frags, hashes = await asyncio.to_thread(encode, data, index, last)
                del data
                stripe = storage_pb2.Stripe(fragments=[
                    storage_pb2.Fragment(hash=h, holder=NO_HOLDER) for h in hashes])
                stripes.append(stripe)
                inflight.append(asyncio.create_task(
                    self._send_stripe(file_id, index, frags, stripe, placer, codec)))
                del frags
                while len(inflight) >= self.window:
                    placed_min = min(placed_min, await inflight.popleft())
            while inflight:
                placed_min = min(placed_min, await inflight.popleft())
        finally:
            self.inflight -= 1
            for t in inflight:
                t.cancel()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)

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
        replicas, docs = await self._store_records(signed, owner, opts, nonce)
        return self._finish(body, replicas, docs, warnings, signed)

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
            replicas, docs = await self._store_records(signed, owner, opts, nonce)
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
            return cid, frags, [hashlib.sha256(f).digest() for f in frags]

        cid, frags, hashes = await asyncio.to_thread(encode) if len(data) > 65536 else encode()
        pkey = placement_key("cid", cid)
        ranked = await self.network.closest(pkey, codec.n + min(codec.n, 8))
        placer = _Placer(ranked, codec.n)
        warnings: list[str] = []
        if len(set(placer.current)) < codec.n:
            warnings.append(f"only {len(set(placer.current))} live storage peer(s) for "
                            f"{codec.n} fragments: several fragments share a holder "
                            "(under-replicated)")
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
        try:
            if data:
                sent, replicas, docs = await self._store_small(
                    cid, file_id, frags, actual, placer, codec, signed, owner, opts, nonce)
            else:
                sent = codec.n
                replicas, docs = await self._store_records(signed, owner, opts, nonce)
        finally:
            self.inflight -= 1
        if data and (sent < codec.n or [f.holder for f in actual.fragments] != planned):
            if sent < codec.n:
                warnings.append(f"only {sent} of {codec.n} fragments placed")
            body = self._manifest_body(cid, file_id, len(data), codec, opts, owner_pub,
                                       file_key, pkey, placer.holders, [actual], True,
                                       body.created_ms + 1, body.filename_sealed)
            signed = sign_manifest(body, owner)
            replicas = await self._store_manifest(cid, signed, codec.m + 1)
        return self._finish(body, replicas, docs, warnings, signed)

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
                warnings: list[str], signed: storage_pb2.SignedManifest | None = None
                ) -> PushResult:
        if replicas == 0:
            raise UnavailableError(f"no peer accepted the manifest of {body.cid}")
        if replicas < body.m + 1:
            warnings.append(f"manifest stored on {replicas} of {body.m + 1} peers")
        if docs == 0:
            warnings.append("no peer accepted the document record: Get by file_id will fail")
        for w in warnings:
            log.warning("push %s: %s", body.cid, w)
        self.counters["pushes"] += 1
        self.counters["bytes_in"] += body.size
        placed = sum(1 for s in body.stripes for f in s.fragments if f.holder != NO_HOLDER)
        return PushResult(body.cid, body.file_id, body.size, body.k, body.m, placed,
                          body.under_replicated, warnings, replicas,
                          Manifest(body, signed) if signed is not None else None)

    async def _store_records(self, signed: storage_pb2.SignedManifest,
                             owner: nacl.signing.SigningKey, opts: PushOptions,
                             nonce: bytes) -> tuple[int, int]:
        """Manifest and (unless opts.document is off) document record, one concurrent round;
        returns (manifest replicas, document replicas) stored (storage/records.py)."""
        body = storage_pb2.ManifestBody.FromString(signed.body)
        doc = sign_document(body.file_id, nonce, body.cid, owner) if opts.document else None
        replicas, docs = await store_records(self.network, signed, body.cid, body.m + 1, doc,
                                             body.file_id, self.documents.replicas)
        return replicas, docs if opts.document else 1

    def _fragment_failed(self, i: int, index: int, holder: bytes, exc: MeshError) -> None:
        self.counters["fragment_failures"] += 1
        log.warning("storing fragment %d of stripe %d on %s failed: %s", i, index,
                    holder.hex()[:16], exc)

    async def _place(self, file_id: str, index: int, i: int, frags: list[memoryview],
                     stripe: storage_pb2.Stripe, placer: _Placer, holder: bytes | None) -> bool:
        """Store fragment i of stripe ``index`` on holder, else on spares; True if stored."""
        while holder is not None:
            try:
                client = await self.network.client(holder)
                await client.store_fragment(file_id, index * 256 + i, frags[i],
                                            stripe.fragments[i].hash, hashed=True)
            except MeshError as exc:
                self._fragment_failed(i, index, holder, exc)
                holder = placer.replace(i, holder)
                continue
            stripe.fragments[i].holder = placer.slot(holder)
            return True
        return False

    async def _send_stripe(self, file_id: str, index: int, frags: list[memoryview],
                           stripe: storage_pb2.Stripe, placer: _Placer, codec: Codec) -> int:
        placed = sum(await asyncio.gather(*(
            self._place(file_id, index, i, frags, stripe, placer, placer.current[i])
            for i in range(codec.n))))
        if placed < codec.k:
            raise UnavailableError(f"stripe {index}: only {placed} of {codec.n} fragments could "
                                   f"be stored (need at least k={codec.k})")
        return placed

    async def _store_small(self, cid: str, file_id: str, frags: list[memoryview],
                           stripe: storage_pb2.Stripe, placer: _Placer, codec: Codec,
                           signed: storage_pb2.SignedManifest, owner: nacl.signing.SigningKey,
                           opts: PushOptions, nonce: bytes) -> tuple[int, int, int]:
        """A one-stripe Push's fragments, manifest and document record in one round: one
        StoreBatch call per peer carrying whatever that peer keeps (its fragments; the
        manifest if it is a manifest replica, the record if a document replica; the same
        peers as _send_stripe and storage/records.py choose). A fragment whose holder failed
        then goes to spares as in _send_stripe. Returns (fragments placed, manifest replicas,
        document replicas); acknowledged only after every call has answered, i.e. after all
        of it is durable where it was accepted.
        """
        doc = sign_document(file_id, nonce, cid, owner) if opts.document else None
        mpeers = await self.network.closest(manifest_key(cid), codec.m + 1)
        dpeers = (await self.network.closest(document_key(file_id), self.documents.replicas)
                  if doc is not None else [])
        plan: dict[bytes, list[tuple[str, int]]] = {}
        for i, holder in enumerate(placer.current):
            plan.setdefault(holder, []).append(("fragment", i))
        for p in mpeers:
            plan.setdefault(p, []).append(("manifest", 0))
        for p in dpeers:
            if p not in mpeers:
                plan.setdefault(p, []).append(("document", 0))
        failed: list[tuple[int, bytes]] = []
        stored = {"fragment": 0, "manifest": 0, "document": 0}

        async def to_peer(peer: bytes, what: list[tuple[str, int]]) -> None:
            items = [StoreItem.of_fragment(file_id, i, frags[i], stripe.fragments[i].hash)
                     if kind == "fragment" else
                     StoreItem.of_records(signed if kind == "manifest" else None,
                                          doc if peer in dpeers else None)
                     for kind, i in what]
            try:
                client = await self.network.client(peer)
            except MeshError as exc:
                results: list[bytes | MeshError] = [exc] * len(items)
            else:
                results = await client.store_batch(items)
            for (kind, i), r in zip(what, results, strict=True):
                if isinstance(r, MeshError):
                    if kind == "fragment":
                        self._fragment_failed(i, 0, peer, r)
                        failed.append((i, peer))
                    else:
                        log.warning("%s of %s not stored on %s: %s", kind, cid, peer.hex()[:16], r)
                    continue
                stored[kind] += 1
                if kind == "fragment":
                    stripe.fragments[i].holder = placer.slot(peer)
                elif kind == "manifest" and peer in dpeers and storage_pb2.StoreManifestReply \
                        .FromString(r).document_stored:
                    stored["document"] += 1

        await asyncio.gather(*(to_peer(p, w) for p, w in plan.items()))
        retried = await asyncio.gather(*(
            self._place(file_id, 0, i, frags, stripe, placer, placer.replace(i, bad))
            for i, bad in failed))
        placed = stored["fragment"] + sum(retried)
        if placed < codec.k:
            raise UnavailableError(f"stripe 0: only {placed} of {codec.n} fragments could "
                                   f"be stored (need at least k={codec.k})")
        return placed, stored["manifest"], stored["document"] if doc is not None else 1

    async def _store_manifest(self, cid: str, signed: storage_pb2.SignedManifest,
                              replicas: int) -> int:
        peers = await self.network.closest(manifest_key(cid), replicas)

        async def one(node_id: bytes) -> bool:
            try:
                await (await self.network.client(node_id)).store_manifest(signed)
            except MeshError as exc:
                log.warning("manifest of %s not stored on %s: %s", cid, node_id.hex()[:16], exc)
                return False
            return True

        return sum(await asyncio.gather(*(one(p) for p in peers)))

    # -- Get --------------------------------------------------------------------------------
    async def fetch_manifests(self, cid: str,
                              enough: Callable[[Manifest], bool] | None = None,
                              unreachable: list[bytes] | None = None) -> list[Manifest]:
        """Verified manifests for a CID from its closest peers (widening once if none).

        Returns as soon as a replica's answer holds a manifest for which ``enough`` is true
        (the other replicas' answers are then not awaited).
        """
        key = manifest_key(cid)
        asked: set[bytes] = set()
        found: dict[bytes, Manifest] = {}

        async def one(node_id: bytes) -> list[storage_pb2.SignedManifest]:
            try:
                return await (await self.network.client(node_id)).fetch_manifests(cid)
            except MeshError as exc:
                log.info("manifests of %s from %s: %s", cid, node_id.hex()[:16], exc)
                if unreachable is not None:
                    unreachable.append(node_id)
                return []

        def keep(answer: list[storage_pb2.SignedManifest]) -> bool:
            hit = False
            for signed in answer:
                try:
                    m = verify_manifest(signed, cid)
                except InvalidArgumentError:
                    continue
                found.setdefault(hashlib.sha256(signed.body).digest(), m)
                hit = hit or (enough is not None and enough(m))
            return hit

        for n in (self.defaults.m + 1, 3 * (self.defaults.m + 1) + 2):
            peers = [p for p in await self.network.closest(key, n) if p not in asked]
            asked.update(peers)
            fresh = bool(peers)
            me = self.network.self_id
            if me in peers:            # a replica here: no channel, and no remote work if enough
                peers.remove(me)
                if keep(await one(me)):
                    return list(found.values())
            pending = {asyncio.create_task(one(p)) for p in peers}
            try:
                while pending:
                    done, pending = await asyncio.wait(pending,
                                                       return_when=asyncio.FIRST_COMPLETED)
                    if sum(keep(task.result()) for task in done):
                        return list(found.values())
            finally:
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
            if found or not fresh:
                break
        return list(found.values())

    async def resolve(self, ref: str, user: nacl.signing.SigningKey | None,
                      need_key: bool = True) -> tuple[Manifest, bytes | None]:
        """The manifest (and file key) a CID or file_id names for this user."""
        if is_cid(ref):
            cid, want_id, want_owner = ref, None, None
        elif is_file_id(ref):
            doc = await self.documents.record(ref)
            cid, want_id, want_owner = doc.cid, ref, doc.owner_key
        else:
            raise InvalidArgumentError(f"not a CID or file_id: {ref!r:.80}")
        me = bytes(user.verify_key) if user is not None else b""

        def enough(m: Manifest) -> bool:
            return (want_id is None or m.file_id == want_id) and m.readable_by(me)

        down: list[bytes] = []
        manifests = await self.fetch_manifests(cid, enough, down)
        if want_id is not None:
            manifests = [m for m in manifests
                         if m.file_id == want_id and m.body.owner_key == want_owner]
        if not manifests:
            raise NotFoundError(f"no manifest found for {ref} on the live peers closest to its "
                                "manifest key" + (
                f"; missing: {len(down)} manifest replica peer(s) unreachable ("
                + ", ".join(p.hex()[:16] for p in down) + ")" if down else ""))
        manifests.sort(key=lambda m: (m.body.owner_key != me, not m.body.public_key,
                                      -m.body.created_ms))
        for m in manifests:
            key = await asyncio.to_thread(m.file_key, user)
            if key is not None:
                return m, key
        if need_key:
            raise PermissionDeniedError(f"{ref} is private to its owner; this user holds no key")
        return manifests[0], None

    async def open(self, ref: str, user: nacl.signing.SigningKey | None) -> Reader:
        manifest, key = await self.resolve(ref, user)
        assert key is not None
        self.counters["gets"] += 1
        self.counters["bytes_out"] += manifest.body.size
        return Reader(self, manifest, key)

    async def _fetch_fragments(self, manifest: Manifest, s: int,
                               hints: _ReadHints | None = None) -> dict[int, bytes]:
        """Any k verified fragments of stripe s; UnavailableError listing what is missing.

        Order: data fragments first (decoding them is a copy), holders that already failed in
        this read last. If the recorded holders cannot supply k, fragment i is also looked for
        on the i-th XOR-closest live peer to the manifest's placement key, then on the other
        close peers: where repair puts a rebuilt fragment (the owner-signed manifest cannot be
        re-signed by a repairing node).
        """
        body = manifest.body
        k = body.k
        frags = body.stripes[s].fragments
        hints = hints or _ReadHints()
        recorded = [(i, manifest.holder_of(s, i)) for i in range(len(frags))]
        candidates: list[tuple[int, bytes | None]] = sorted(
            recorded, key=lambda c: c[1] in hints.dead)
        tried: set[tuple[int, bytes | None]] = set()
        got: dict[int, bytes] = {}
        missing: dict[int, str] = {}
        pending: dict[asyncio.Task[bytes], tuple[int, bytes | None]] = {}
        fell_back = False

        async def fetch(i: int, holder: bytes | None) -> bytes:
            if holder is None:
                raise NotFoundError("never placed")
            async with self._fetch_sem:
                client = await self.network.client(holder)
                return await client.fetch_fragment(frags[i].hash)

        try:
            while len(got) < k:
                candidates = [c for c in candidates if c[0] not in got and c not in tried]
                if not candidates and not pending and not fell_back:
                    fell_back = True
                    ranked = await hints.ranked(self.network, body)
                    short = [i for i in range(len(frags)) if i not in got]
                    candidates = []
                    if ranked:
                        placed = assign(ranked, len(frags))     # repair's rule, wrapping too
                        candidates = [(i, placed[i]) for i in short]
                    candidates += [(i, p) for i in short for p in ranked]
                    candidates = [c for c in dict.fromkeys(candidates)
                                  if c not in tried and c[1] not in hints.dead]
                while candidates and len(pending) < k - len(got):
                    c = candidates.pop(0)
                    tried.add(c)
                    pending[asyncio.create_task(fetch(*c))] = c
                if not pending:
                    break
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    i, holder = pending.pop(task)
                    try:
                        data = task.result()
                    except MeshError as exc:
                        if isinstance(exc, UnavailableError) and holder is not None:
                            hints.dead.add(holder)
                        if "corrupt" in str(exc):
                            self.counters["corrupt_fragments"] += 1
                        if (i, holder) in recorded:
                            who = holder.hex()[:16] if holder else "nobody"
                            missing[i] = f"fragment {i} on {who}: {exc}"
                        continue
                    if i not in got:
                        got[i] = data
                        missing.pop(i, None)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if len(got) < k:
            raise UnavailableError(
                f"{body.cid}: stripe {s} has {len(got)} of the {k} fragments needed; missing: "
                + "; ".join(missing[i] for i in sorted(missing)))
        return dict(sorted(got.items())[:k])

    # -- Grant ------------------------------------------------------------------------------
    async def grant(self, ref: str, owner: nacl.signing.SigningKey, grantee: bytes,
                    revoke: bool = False) -> int:
        """Seal the file key to grantee (or drop its sealed key); returns manifest replicas.

        A re-signed, newer manifest replaces the old one on the replicas. Revoking stops
        future reads through the manifest; it cannot take back a key a reader already opened.
        """
        if len(grantee) != 32:
            raise InvalidArgumentError("grantee must be a 32-byte Ed25519 public key")
        owner_pub = bytes(owner.verify_key)
        manifest, key = await self.resolve(ref, owner)
        if manifest.body.owner_key != owner_pub:
            raise PermissionDeniedError(f"only the owner of {ref} can change its readers")
        if manifest.body.public_key:
            raise InvalidArgumentError(f"{ref} is public: everyone can read it already")
        if revoke and grantee == owner_pub:
            raise InvalidArgumentError("the owner cannot revoke their own key")
        assert key is not None
        body = storage_pb2.ManifestBody()
        body.CopyFrom(manifest.body)
        keys = [k for k in body.keys if k.recipient != grantee]
        if not revoke:
            keys.append(storage_pb2.SealedKey(recipient=grantee, sealed=seal_key_to(grantee, key)))
        del body.keys[:]
        body.keys.extend(keys)
        body.created_ms = max(int(time.time() * 1000), manifest.body.created_ms + 1)
        replicas = await self._store_manifest(body.cid, sign_manifest(body, owner), body.m + 1)
        if replicas == 0:
            raise UnavailableError(f"no manifest replica of {body.cid} accepted the change")
        return replicas

    # -- Stat -------------------------------------------------------------------------------
    async def stat(self, ref: str, user: nacl.signing.SigningKey | None,
                   deep: bool = False) -> StatResult:
        """Fragments, holders, health. ``deep``: holders re-hash every fragment (reads all)."""
        manifest, key = await self.resolve(ref, user, need_key=False)
        body = manifest.body
        filename = _open_filename(manifest, key) if key else ""
        if body.inline:
            replicas = await self._inline_replicas(manifest)
            return StatResult(manifest, filename, [
                FragmentHealth(i, r.peer, self.network.address(r.peer), r.reachable, r.holds)
                for i, r in enumerate(replicas)], health_of(replicas, body.m), 1, 0, 0)
        by_holder: dict[bytes, list[tuple[int, int]]] = {}
        for s, stripe in enumerate(body.stripes):
            for i, _f in enumerate(stripe.fragments):
                holder = manifest.holder_of(s, i)
                if holder is not None:
                    by_holder.setdefault(holder, []).append((s, i))
        present: dict[tuple[int, int], bool] = {}
        reachable: dict[bytes, bool] = {}

        async def ask(holder: bytes, items: list[tuple[int, int]]) -> None:
            hashes = [body.stripes[s].fragments[i].hash for s, i in items]
            try:
                answer = await (await self.network.client(holder)).has_fragments(hashes, deep)
                reachable[holder] = True
            except MeshError:
                answer, reachable[holder] = [False] * len(items), False
            present.update(zip(items, answer, strict=True))

        await asyncio.gather(*(ask(h, items) for h, items in by_holder.items()))
        n = body.k + body.m
        ok = degraded = lost = 0
        for s in range(len(body.stripes)):
            count = sum(present.get((s, i), False) for i in range(n))
            if count >= n:
                ok += 1
            elif count >= body.k:
                degraded += 1
            else:
                lost += 1
        fragments = []
        for i in range(n):
            holders = [manifest.holder_of(s, i) for s in range(len(body.stripes))]
            holder = max(set(holders), key=holders.count) if holders else None
            fragments.append(FragmentHealth(
                i, holder, self.network.address(holder) if holder else "",
                reachable.get(holder, False) if holder else False,
                bool(holders) and all(present.get((s, i), False)
                                      for s in range(len(body.stripes)))))
        health = "unrecoverable" if lost else "degraded" if degraded else "healthy"
        if not body.stripes:
            fragments = []
        return StatResult(manifest, filename, fragments, health, ok, degraded, lost)

    async def _inline_replicas(self, manifest: Manifest) -> list[ReplicaHealth]:
        """The m+1 peers that should keep an inline file's manifest, and whether they do."""
        body = manifest.body

        async def ask(peer: bytes) -> ReplicaHealth:
            try:
                signed = await (await self.network.client(peer)).fetch_manifests(body.cid)
            except MeshError:
                return ReplicaHealth(peer, False, False)
            return ReplicaHealth(peer, True, any(s.body == manifest.signed.body or _same_file(
                s, body.file_id) for s in signed))

        peers = await self.network.closest(manifest_key(body.cid), body.m + 1)
        return list(await asyncio.gather(*(ask(p) for p in peers)))

    def status(self) -> dict[str, Any]:
        return {**self.counters, "inflight": self.inflight}


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
(storage/inline.py), so its Push is that one round and its Get one manifest fetch. A unary
Push of one stripe (``Pusher._push_small``, e.g. 1 MiB) hashes, seals, encodes and signs first,
then stores fragments, manifest and document record in a single round of one StoreBatch call per
peer (storage/peer.py), and the fragment this node holds goes to its own store without a re-hash.

Get (``FileStore.read``/``open_stream``, then ``Reader.stripes``) resolves a CID or file_id to
the verified manifests the user can open, best first (the next one if one does not serve:
storage/reader.py) (this node's own replica first, without a channel call), then fetches any k
hash-verified fragments per stripe (data fragments first: no decode work; on failure the next
holder), several stripes ahead with bounded concurrency, decodes, authenticates and decrypts
each stripe in order and recomputes the CID; a mismatch raises IntegrityError (DATA_LOSS) —
never silent.

Modules: this façade (``FileStore``: resolve, open, grant, stat), storage/push.py (Push,
``Pusher``) with storage/push_stream.py (the streamed stripe pipeline), storage/push_manifest.py,
storage/restripe.py and storage/upload.py (fragments and records to their peers),
storage/resolve.py (which manifests, best first), storage/fetch.py and storage/reader.py (Get), storage/known.py (the manifests this node wrote or
read, for their owners' next reads), storage/stat.py, storage/results.py (options, results,
IntegrityError). Everything callers import stays importable from here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

import nacl.signing

from mesh.errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    UnavailableError,
)
from proto import storage_pb2
from storage.crypto import seal_key_to
from storage.documents import Documents
from storage.fetch import Fetcher
from storage.inline import INLINE_MAX
from storage.known import KnownManifests
from storage.late_copies import LateCopies
from storage.manifest import Manifest, sign_manifest
from storage.placement import Network
from storage.push import Pusher
from storage.reader import MAX_CANDIDATES, FailedManifests, Reader, read_first, stream_first
from storage.resolve import ranked_manifests
from storage.restripe import restripe
from storage.results import (
    DEFAULT_K,
    DEFAULT_M,
    DEFAULT_STRIPE,
    FILENAME_INDEX,
    MAX_FILENAME,
    MAX_STRIPE,
    MIN_STRIPE,
    FragmentHealth,
    IntegrityError,
    PushOptions,
    PushResult,
    StatResult,
)
from storage.stat import file_health
from storage.upload import Uploader

__all__ = [
    "DEFAULT_K", "DEFAULT_M", "DEFAULT_STRIPE", "FILENAME_INDEX", "MAX_FILENAME", "MAX_STRIPE",
    "MIN_STRIPE", "FileStore", "FragmentHealth", "IntegrityError", "PushOptions", "PushResult",
    "Reader", "StatResult", "restripe",
]


class FileStore:
    """Push/Get/Stat over a Network (the mesh in a node, a fake in unit tests)."""

    def __init__(self, network: Network, *, defaults: PushOptions | None = None,
                 window: int = 6, read_window: int = 4, fetch_concurrency: int = 24,
                 inline_max: int = INLINE_MAX, late_copies: LateCopies | None = None) -> None:
        self.network = network
        self.defaults = defaults or PushOptions()
        self.read_window = read_window
        self.counters = {"pushes": 0, "gets": 0, "bytes_in": 0, "bytes_out": 0,
                         "corrupt_fragments": 0, "fragment_failures": 0, "fragment_hedges": 0,
                         "store_spares": 0, "replicas_cut": 0, "replicas_skipped": 0}
        self.documents = Documents(network, replicas=self.defaults.m + 1,
                                   counters=self.counters)
        self.fetcher = Fetcher(network, self.defaults, self.counters, fetch_concurrency)
        self.known = KnownManifests()  # what this node wrote or read: its owners' next reads
        self.failed = FailedManifests()  # manifests a read here could not use: ranked last
        self._upload = Uploader(network, self.documents, self.counters)
        self._pusher = Pusher(network, self._upload, self.counters, inline_max=inline_max,
                              window=window, late_copies=late_copies)

    @property
    def inline_max(self) -> int:
        """Files up to this size go inline (storage/inline.py)."""
        return self._pusher.inline_max

    @property
    def window(self) -> int:
        """Stripes of one Push stored concurrently with the encoding of the next."""
        return self._pusher.window

    @property
    def inflight(self) -> int:
        """Pushes under way."""
        return self._pusher.inflight

    # -- Push -------------------------------------------------------------------------------
    async def push_bytes(self, data: bytes, owner: nacl.signing.SigningKey,
                         opts: PushOptions) -> PushResult:
        """Unary Push (storage/push.py): a one-stripe file takes the one-round-trip path."""
        return self._known(await self._pusher.push_bytes(data, owner, opts))

    async def push(self, source: AsyncIterable[bytes | memoryview], owner: nacl.signing.SigningKey,
                   opts: PushOptions, *, cid: str | None = None) -> PushResult:
        """Streamed Push (storage/push.py); ``cid``, if known, places by CID and is checked."""
        return self._known(await self._pusher.push(source, owner, opts, cid=cid))

    def _known(self, result: PushResult) -> PushResult:
        if result.manifest is not None:
            self.known.remember(result.manifest)
        return result

    # -- Get --------------------------------------------------------------------------------
    async def fetch_manifests(self, cid: str,
                              enough: Callable[[Manifest], bool] | None = None,
                              unreachable: list[bytes] | None = None) -> list[Manifest]:
        """Verified manifests for a CID from its closest peers (storage/fetch.py)."""
        return await self.fetcher.manifests(cid, enough, unreachable)

    async def resolve(self, ref: str, user: nacl.signing.SigningKey | None,
                      need_key: bool = True, fresh: bool = False
                      ) -> tuple[Manifest, bytes | None]:
        """The manifest (and file key) a CID or file_id names for this user; ``fresh`` asks
        the replicas even when this node kept one (a grant must build on the newest)."""
        ranked = await self._ranked(ref, user, fresh=fresh)
        for m in ranked:
            key = m.file_key(user)     # at most one X25519 unseal (~0.1 ms): no thread hop
            if key is not None:
                return m, key
        if need_key:
            raise PermissionDeniedError(f"{ref} is private to its owner; this user holds no key")
        return ranked[0], None

    async def _ranked(self, ref: str, user: nacl.signing.SigningKey | None, *,
                      fresh: bool = False, prefer: bytes = b"") -> list[Manifest]:
        return await ranked_manifests(self, ref, user, fresh=fresh, prefer=prefer)

    async def readers(self, ref: str, user: nacl.signing.SigningKey, *,
                      prefer: bytes = b"") -> list[Reader]:
        """A Reader per manifest of ``ref`` this user can open, best first (``_ranked``), at
        most ``MAX_CANDIDATES``; PermissionDeniedError if there is none."""
        out: list[Reader] = []
        for m in await self._ranked(ref, user, prefer=prefer):
            key = m.file_key(user)
            if key is not None:
                out.append(Reader(self, m, key))
                if len(out) == MAX_CANDIDATES:
                    break
        if not out:
            raise PermissionDeniedError(f"{ref} is private to its owner; this user holds no key")
        return out

    async def open(self, ref: str, user: nacl.signing.SigningKey) -> Reader:
        """The best Reader of ``ref``. Reads that may fall back use ``read``/``open_stream``."""
        manifest, key = await self.resolve(ref, user)
        assert key is not None
        return self._counted(Reader(self, manifest, key))

    async def read(self, ref: str, user: nacl.signing.SigningKey, *, max_size: int | None = None,
                   prefer: bytes = b"") -> tuple[bytes, Reader]:
        """The whole plaintext of ``ref``, from the first manifest that serves it
        (storage/reader.py ``read_first``: another member's junk manifest for the CID only
        costs a try)."""
        data, reader = await read_first(await self.readers(ref, user, prefer=prefer),
                                        self.failed, max_size)
        self._counted(reader)
        return data, reader

    async def open_stream(self, ref: str, user: nacl.signing.SigningKey
                          ) -> tuple[Reader, AsyncIterator[bytes]]:
        """Like ``read``, streamed: the fallback covers a manifest whose first stripe fails."""
        reader, stripes = await stream_first(await self.readers(ref, user), self.failed)
        return self._counted(reader), stripes

    def _counted(self, reader: Reader) -> Reader:
        self.counters["gets"] += 1
        self.counters["bytes_out"] += reader.manifest.body.size
        return reader

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
        manifest, key = await self.resolve(ref, owner, fresh=True)
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
        signed = sign_manifest(body, owner)
        replicas = await self._upload.store_manifest(body.cid, signed, body.m + 1)
        if replicas == 0:
            raise UnavailableError(f"no manifest replica of {body.cid} accepted the change")
        self.known.remember(Manifest(body, signed))
        return replicas

    # -- Stat -------------------------------------------------------------------------------
    async def stat(self, ref: str, user: nacl.signing.SigningKey | None,
                   deep: bool = False) -> StatResult:
        """Fragments, holders, health. ``deep``: holders re-hash every fragment (reads all)."""
        manifest, key = await self.resolve(ref, user, need_key=False)
        return await file_health(self.network, manifest, key, deep, self.counters)

    def status(self) -> dict[str, Any]:
        return {**self.counters, "inflight": self.inflight,
                "manifest_cache_hits": self.known.hits,
                "manifest_fallbacks": self.failed.fallbacks}

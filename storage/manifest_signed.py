"""A manifest as signed and verified: its DHT key, the owner's signature over it, the checks a
reader makes before trusting anything in it, and the verified view (``Manifest``) the readers,
pushers and healers use. The store that keeps them is storage/manifest_store.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import nacl.signing
from google.protobuf.message import DecodeError

from mesh.errors import InvalidArgumentError
from mesh.identity import verify_signature
from proto import storage_pb2
from storage.cid import is_cid
from storage.codec import Codec
from storage.crypto import STRIPE_OVERHEAD, CryptoError, open_sealed_key

FORMAT = 1
NO_HOLDER = 0xFFFFFFFF
MAX_MANIFEST_BYTES = 32 * 2**20
INLINE_LIMIT = 65536       # largest inline file a reader accepts (pushers inline far less)
INLINE_VERIFY = 8          # manifests (of at most 1 MiB together) verified on the event loop
_DOMAIN = b"tw-mesh/manifest/v1\x00"


def manifest_key(cid: str) -> bytes:
    """The 20-byte DHT key whose closest peers keep a CID's manifests."""
    return hashlib.blake2b(cid.encode(), digest_size=20, person=b"tw-mesh-manifest").digest()


def sign_manifest(body: storage_pb2.ManifestBody,
                  owner: nacl.signing.SigningKey) -> storage_pb2.SignedManifest:
    if body.owner_key != bytes(owner.verify_key):
        raise ValueError("manifest owner_key is not the signer's key")
    raw = body.SerializeToString(deterministic=True)
    return storage_pb2.SignedManifest(body=raw, signature=owner.sign(_DOMAIN + raw).signature)


@dataclass(frozen=True)
class Manifest:
    """A verified manifest: its body plus the signed bytes it came from."""

    body: storage_pb2.ManifestBody
    signed: storage_pb2.SignedManifest

    @property
    def cid(self) -> str:
        return self.body.cid

    @property
    def file_id(self) -> str:
        return self.body.file_id

    def codec(self) -> Codec:
        b = self.body
        return Codec.from_params({"format": b.codec_format, "k": b.k, "m": b.m,
                                  "packet_size": b.packet_size, "matrix": b.matrix})

    def stripe_len(self, index: int) -> int:
        """Plaintext bytes in stripe ``index``."""
        b = self.body
        return int(min(b.stripe_size, b.size - index * b.stripe_size))

    def readable_by(self, public_key: bytes) -> bool:
        return bool(self.body.public_key) or any(k.recipient == public_key for k in self.body.keys)

    def file_key(self, user: nacl.signing.SigningKey | None) -> bytes | None:
        """The file key if public or sealed to ``user``; None if this user cannot read it."""
        if self.body.public_key:
            return bytes(self.body.public_key)
        if user is None:
            return None
        me = bytes(user.verify_key)
        for sealed in self.body.keys:
            if sealed.recipient == me:
                with contextlib.suppress(CryptoError):
                    return open_sealed_key(user, sealed.sealed)
        return None

    def holder_of(self, stripe: int, index: int) -> bytes | None:
        h = self.body.stripes[stripe].fragments[index].holder
        return None if h == NO_HOLDER or h >= len(self.body.holders) else self.body.holders[h]


def verify_manifest(signed: storage_pb2.SignedManifest, cid: str | None = None) -> Manifest:
    """Check signature, shape and (if given) the CID binding; InvalidArgumentError otherwise."""
    if len(signed.body) > MAX_MANIFEST_BYTES:
        raise InvalidArgumentError("manifest too large")
    body = storage_pb2.ManifestBody()
    try:
        body.ParseFromString(signed.body)
    except DecodeError as exc:
        raise InvalidArgumentError("manifest body is not a ManifestBody") from exc
    if body.format != FORMAT:
        raise InvalidArgumentError(f"unsupported manifest format {body.format}")
    if len(body.owner_key) != 32 or not verify_signature(body.owner_key, _DOMAIN + signed.body,
                                                         signed.signature):
        raise InvalidArgumentError("manifest signature does not verify")
    if cid is not None and body.cid != cid:
        raise InvalidArgumentError(f"manifest is for {body.cid!r}, not {cid!r}")
    if not is_cid(body.cid):
        raise InvalidArgumentError("manifest names an invalid CID")
    manifest = Manifest(body, signed)
    try:
        codec = manifest.codec()
    except ValueError as exc:
        raise InvalidArgumentError(f"manifest codec parameters invalid: {exc}") from exc
    if body.stripe_size < 1:
        raise InvalidArgumentError("manifest stripe_size must be >= 1")
    if body.inline:
        if body.size > INLINE_LIMIT or len(body.inline) != body.size + STRIPE_OVERHEAD \
                or body.stripes:
            raise InvalidArgumentError("inline manifest has a wrong size or also has stripes")
        return manifest
    want = -(-body.size // body.stripe_size)
    if len(body.stripes) != want:
        raise InvalidArgumentError(f"manifest has {len(body.stripes)} stripes, expected {want}")
    for s in body.stripes:
        if len(s.fragments) != codec.n or any(len(f.hash) != 32 for f in s.fragments):
            raise InvalidArgumentError("manifest stripe has a wrong number of fragments or hashes")
    return manifest


def _verify_some(answer: Sequence[storage_pb2.SignedManifest], cid: str | None
                 ) -> list[Manifest | None]:
    out: list[Manifest | None] = []
    for signed in answer:
        try:
            out.append(verify_manifest(signed, cid))
        except InvalidArgumentError:
            out.append(None)
    return out


async def verify_answer(answer: Sequence[storage_pb2.SignedManifest], cid: str | None = None
                        ) -> list[Manifest | None]:
    """``verify_manifest`` of each (None: it does not verify), on worker threads, 64 per hop,
    unless the answer is small: a FetchManifests answer may hold a CID's whole budget (48 MiB:
    ~200,000 small manifests, ~70 µs of Ed25519 each), which froze the reader's loop."""
    if len(answer) <= INLINE_VERIFY and sum(len(s.body) for s in answer) <= 2**20:
        return _verify_some(answer, cid)
    out: list[Manifest | None] = []
    for i in range(0, len(answer), 64):
        out += await asyncio.to_thread(_verify_some, answer[i:i + 64], cid)
    return out

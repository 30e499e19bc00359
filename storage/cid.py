"""Content IDs: CIDv1, multibase base32 (lower case), ``raw`` codec, sha2-256 multihash.

The same string ``ipfs add --cid-version 1 --raw-leaves`` (or any CIDv1 tool) gives for a raw
block of the bytes; the empty file is
``bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku``.
Hand-written because the format is fixed and tiny; tests cross-check it against the
independent ``multiformats`` package.
"""

from __future__ import annotations

import base64
import hashlib
import re

from mesh.errors import MeshError

# CIDv1 = <version 0x01><codec raw 0x55><multihash: sha2-256 0x12, length 0x20, digest>
_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])
_CID_LEN = 59  # 'b' + base32 of 36 bytes without padding
_RE = re.compile(r"b[a-z2-7]{58}")


class CidError(MeshError, ValueError):
    """A string is not a CIDv1/raw/sha2-256 content ID."""


def _encode(digest: bytes) -> str:
    return "b" + base64.b32encode(_PREFIX + digest).decode("ascii").lower().rstrip("=")


def cid_for(data: bytes | bytearray | memoryview) -> str:
    """CIDv1 of data's bytes."""
    return _encode(hashlib.sha256(data).digest())


def cid_from_digest(digest: bytes) -> str:
    """CIDv1 for a sha2-256 digest computed elsewhere."""
    if len(digest) != 32:
        raise CidError(f"sha2-256 digest must be 32 bytes, got {len(digest)}")
    return _encode(digest)


class CidHasher:
    """Incremental CID for data that arrives in pieces (streaming uploads)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._h.update(data)
        self.size += memoryview(data).nbytes

    def digest(self) -> bytes:
        return self._h.digest()

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def cid(self) -> str:
        return _encode(self._h.digest())


def parse_cid(s: str) -> bytes:
    """Validate a CID string and return its 32-byte sha2-256 digest; CidError if invalid."""
    if not isinstance(s, str) or len(s) != _CID_LEN or not _RE.fullmatch(s):
        raise CidError(f"not a CIDv1 base32 raw sha2-256 content ID: {s!r:.80}")
    raw = base64.b32decode(s[1:].upper() + "=" * (-(len(s) - 1) % 8))
    if raw[:4] != _PREFIX:
        raise CidError(f"CID is not version 1 / raw / sha2-256: {s!r}")
    if _encode(raw[4:]) != s:  # non-canonical trailing bits
        raise CidError(f"CID is not canonically encoded: {s!r}")
    return raw[4:]


def is_cid(s: object) -> bool:
    """True if s is a valid CID string of our kind."""
    if not isinstance(s, str):
        return False
    try:
        parse_cid(s)
    except CidError:
        return False
    return True

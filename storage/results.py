"""What Push, Get and Stat take and give back: options, results, the integrity error. No I/O.

Kept apart from the pipeline (storage/files.py) so callers that only build options or read
results (servicer, CLI, versions) need none of the network code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc

from mesh.errors import InvalidArgumentError, PeerCallError
from storage.codec import Codec
from storage.manifest import Manifest

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

"""Node identity: an Ed25519 key in the data dir; node ID = 20-byte BLAKE2b of the public key.

Kademlia 2.2.3 requires 20-byte IDs (other lengths crash its routing code), so the ID is a
160-bit hash, like the paper's SHA-1 IDs (Maymounkov & Mazières 2002, section 2), but derived
from the key so that a peer can prove its ID by signing.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

from mesh.errors import IdentityError

NODE_ID_BYTES = 20
KEY_FILE = "node.key"
_KEY_MAGIC = b"tw-mesh-ed25519-v1\n"


def node_id_for(public_key: bytes) -> bytes:
    """The 20-byte node ID that belongs to an Ed25519 public key."""
    if len(public_key) != 32:
        raise IdentityError(f"an Ed25519 public key has 32 bytes, got {len(public_key)}")
    return hashlib.blake2b(public_key, digest_size=NODE_ID_BYTES, person=b"tw-mesh-node-id").digest()


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Identity:
    """A signing key and the node ID derived from it."""

    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity, for tests and simulations."""
        return cls(nacl.signing.SigningKey(hashlib.sha256(seed).digest()))

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def node_id(self) -> bytes:
        return node_id_for(self.public_key)

    @property
    def node_id_hex(self) -> str:
        return self.node_id.hex()

    def sign(self, message: bytes) -> bytes:
        return bytes(self.signing_key.sign(message).signature)


def load_or_create(data_dir: Path) -> Identity:
    """Load the node key from ``data_dir`` or create it (mode 0600) on first start.

    Refuses a key file that is readable or writable by group/others, or that is corrupt:
    silently replacing it would change the node's ID.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / KEY_FILE
    if not path.exists():
        identity = Identity.generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(_KEY_MAGIC + bytes(identity.signing_key).hex().encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return identity
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise IdentityError(
            f"key file {path} has mode {mode:04o}; it must not be readable by others "
            f"(fix with: chmod 600 {path})"
        )
    raw = path.read_bytes()
    try:
        if not raw.startswith(_KEY_MAGIC):
            raise ValueError("missing header")
        seed = bytes.fromhex(raw[len(_KEY_MAGIC):].decode("ascii").strip())
        if len(seed) != 32:
            raise ValueError(f"seed has {len(seed)} bytes")
        return Identity(nacl.signing.SigningKey(seed))
    except (ValueError, UnicodeDecodeError) as exc:
        raise IdentityError(f"key file {path} is corrupt ({exc}); restore it from a backup "
                            "or move it away to start as a new node") from exc

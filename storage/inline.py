"""Inline small files: the sealed file travels inside its manifest, not as k+m fragments.

Why: a 1 KiB file erasure-coded (4,2) becomes six 320-byte fragments, each a durable write
(file, fsync, rename, directory fsync, index commit) on a peer, beside 3 manifest and 3 document
replicas: 12 durable writes and 12 sealed-channel calls for one kilobyte, and a Get needs a
second round for k fragments after the manifest. Tahoe-LAFS stores files up to 55 bytes in
the capability itself (LIT), Storj keeps segments under 4 KiB inline in the satellite's
metadata. Here a file of at most ``INLINE_MAX`` (4 KiB) plaintext bytes is sealed exactly like
a one-stripe file (per-file random key, AEAD with context file_id, index 0, last) and the
ciphertext is put in ``ManifestBody.inline``; the owner signs it with the rest of the manifest.

What still holds: the manifest goes to the m+1 XOR-closest peers of ``manifest_key(cid)``, so
any m of them can die (kill -9) and the file is still read from the last one; with all m+1 gone
Get fails NOT_FOUND naming the missing manifest replicas. Replicas hold only ciphertext and
sealed keys. Corruption: a rotted replica fails the owner's signature, is dropped and counted
missing, and the reader takes another; Get still recomputes the CID. Repair keeps m+1 manifest
replicas (storage/healing/repair.py), which for an inline file is its whole redundancy. Stat
asks the m+1 replica peers whether they hold this file's manifest: those are its holders.
Readers accept inline files up to ``INLINE_LIMIT`` (storage/manifest.py), so the threshold can
grow without a format change; ``FileStore(inline_max=-1)`` turns inlining off (0: only the
empty file).
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.crypto import open_stripe, seal_stripe
from storage.manifest import Manifest

INLINE_MAX = 4096


def seal_inline(key: bytes, data: bytes, file_id: str) -> bytes:
    """The inline payload: the file sealed as the one and last stripe of file_id."""
    return seal_stripe(key, data, context=file_id.encode(), index=0, last=True)


def open_inline(key: bytes, manifest: Manifest) -> bytes:
    """Decrypt and authenticate an inline manifest's payload (DecryptionError if it fails)."""
    body = manifest.body
    return open_stripe(key, body.inline, context=body.file_id.encode(), index=0, last=True)


@dataclass
class ReplicaHealth:
    """One of the m+1 peers that should keep an inline file's manifest."""

    peer: bytes
    reachable: bool
    holds: bool


def health_of(replicas: list[ReplicaHealth], m: int) -> str:
    held = sum(r.holds for r in replicas)
    return "healthy" if held >= m + 1 else "degraded" if held else "unrecoverable"

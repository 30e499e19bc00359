"""Fragment hashes: what a manifest signs for each fragment and what the store files it under.

New fragments are named by BLAKE3-256: ~7.7 GB/s here against SHA-256's ~2.0 GB/s (SHA-NI),
and a 64 MiB Push hashes ~96 MiB of fragments on the pushing node and ~80 MiB again on the
holders that check what they store (benchmarks/RESULTS.md, fourth session). Fragments written
before are named by SHA-256 and stay readable.

Checking needs no record of which function named a fragment: ``matches`` accepts bytes whose
BLAKE3-256 *or* SHA-256 digest is the 32-byte name. Both are preimage-resistant, so forging
bytes for a given name is as hard under the pair as under either one. The CID of a file is
unchanged: SHA-256 of the plaintext, as CIDv1 ``raw``/sha2-256 requires.
"""

from __future__ import annotations

import hashlib

from blake3 import blake3

DIGEST_BYTES = 32


def fragment_digest(data: bytes | bytearray | memoryview) -> bytes:
    """The name of a new fragment: BLAKE3-256 of its bytes."""
    return blake3(data).digest()


def matches(data: bytes | bytearray | memoryview, digest: bytes) -> bool:
    """Whether ``data`` is the fragment named ``digest`` (BLAKE3-256, or SHA-256 for
    fragments written before BLAKE3)."""
    if len(digest) != DIGEST_BYTES:
        return False
    return blake3(data).digest() == digest or hashlib.sha256(data).digest() == digest

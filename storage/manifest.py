"""Manifests: the owner-signed description of one stored file, and their on-disk store.

A manifest (``ManifestBody`` in proto/storage.proto) carries the CID, size, k, m, stripe size,
codec parameters, the file key sealed to the owner and readers (or in clear for public files),
the filename sealed with the file key, and per stripe the hash (storage/fraghash.py) and holder
of every fragment.
(The manifest's file_id is bound to the owner only through the document record; a replica
keeps the first owner it saw for a (CID, file_id) and the newest manifest of that owner, until
the owner the document record names shows up: storage/record_handlers.py.)
It is signed by the owner (domain-separated Ed25519) and kept on the m+1 XOR-closest peers to
``manifest_key(cid)``. Readers verify the signature and that the body names the CID they asked
for before trusting anything in it. Several manifests may exist for one CID (one per owner and
upload); the store keeps the newest per file_id.

The names are kept here for their importers: signing and verifying live in
storage/manifest_signed.py, the on-disk store in storage/manifest_store.py.
"""

from __future__ import annotations

from storage.manifest_signed import (
    FORMAT,
    INLINE_LIMIT,
    INLINE_VERIFY,
    MAX_MANIFEST_BYTES,
    NO_HOLDER,
    Manifest,
    manifest_key,
    sign_manifest,
    verify_answer,
    verify_manifest,
)
from storage.manifest_store import CID_BUDGET, BudgetFull, ManifestStore, OwnerConflict

__all__ = [
    "CID_BUDGET", "FORMAT", "INLINE_LIMIT", "INLINE_VERIFY", "MAX_MANIFEST_BYTES", "NO_HOLDER",
    "BudgetFull", "Manifest", "ManifestStore", "OwnerConflict", "manifest_key", "sign_manifest",
    "verify_answer", "verify_manifest",
]

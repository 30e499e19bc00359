"""Signed version records and grants: creation, canonical signing, stand-alone verification.

Conventions (as mesh/records.py): Ed25519 over a domain tag followed by the deterministic
protobuf encoding of the message with its signature field empty. Version records use
``tw-mesh/version/v1\\0`` and grants ``tw-mesh/grant/v1\\0``, so no signature made for one can be
replayed as the other (or as a DHT record or channel handshake).

A version id is the BLAKE2b-256 of the whole signed record's encoding: the same record always has
the same id (a replay is a duplicate), and any change to a signed byte changes it.

The owner is bound to the file: ``file_id = BLAKE2b-128(person="tw-mesh-file-id", owner_key ||
nonce)`` (the same binding as storage/documents.py: its text form is ``"f" + hex``). Each record and grant carries that binding (owner key + nonce), so a verifier checks it
without the genesis record, and nobody can claim another owner's file_id: they would need a
second preimage of the hash under their own key.

Writers are named by ``writer_id = node_id_for(writer_key)`` (20 bytes), the same derivation as
node IDs. Version vectors (lists of (writer_id, counter)) are in storage/versions/vectors.py.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from collections.abc import Iterable, Mapping

from google.protobuf.message import DecodeError

from mesh.identity import Identity, node_id_for, verify_signature
from proto import versions_pb2
from storage.cid import is_cid
from storage.versions.errors import (
    ForgedSignatureError,
    FutureRecordError,
    MalformedRecordError,
)
from storage.versions.vectors import Vector as Vector  # callers import vectors from here too
from storage.versions.vectors import check_entries
from storage.versions.vectors import dominates as dominates
from storage.versions.vectors import leq as leq
from storage.versions.vectors import vector_entries as vector_entries
from storage.versions.vectors import vector_of as vector_of
from storage.versions.vectors import vmax as vmax

VERSION_DOMAIN = b"tw-mesh/version/v1\x00"
GRANT_DOMAIN = b"tw-mesh/grant/v1\x00"
FILE_ID_BYTES = 16
NONCE_BYTES = 16
VERSION_ID_BYTES = 32
MAX_RECORD_BYTES = 16 * 1024
MAX_KEPT = 4096                     # record ids a revocation lists (GrantRecord.kept)
MAX_GRANT_BYTES = MAX_RECORD_BYTES + (2 + VERSION_ID_BYTES) * MAX_KEPT     # 152 KiB
MAX_PARENTS = 64
CLOCK_SKEW_MS = 120_000


def now_ms() -> int:
    return int(time.time() * 1000)


# -- file binding ----------------------------------------------------------------------------
def file_id_for(owner_key: bytes, nonce: bytes) -> bytes:
    if len(owner_key) != 32 or len(nonce) != NONCE_BYTES:
        raise MalformedRecordError("a file binding needs a 32-byte owner key and 16-byte nonce")
    return hashlib.blake2b(owner_key + nonce, digest_size=FILE_ID_BYTES,
                           person=b"tw-mesh-file-id").digest()


def file_id_text(file_id: bytes) -> str:
    """The API form of a file_id: 'f' + 32 hex digits (as storage/documents.py)."""
    return "f" + file_id.hex()


def parse_file_id(text: str) -> bytes:
    if (not isinstance(text, str) or len(text) != 1 + 2 * FILE_ID_BYTES or text[0] != "f"
            or any(c not in "0123456789abcdef" for c in text[1:])):
        raise MalformedRecordError(f"not a file_id: {text!r:.80}")
    return bytes.fromhex(text[1:])


def new_binding(owner_key: bytes, nonce: bytes | None = None) -> versions_pb2.FileBinding:
    """A fresh file_id owned by ``owner_key``."""
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    return versions_pb2.FileBinding(file_id=file_id_for(owner_key, nonce), owner_key=owner_key,
                                    nonce=nonce)


def check_binding(binding: versions_pb2.FileBinding) -> None:
    if (len(binding.file_id) != FILE_ID_BYTES or len(binding.owner_key) != 32
            or len(binding.nonce) != NONCE_BYTES):
        raise MalformedRecordError("file binding has wrong field sizes")
    if file_id_for(binding.owner_key, binding.nonce) != binding.file_id:
        raise MalformedRecordError("file_id is not bound to the owner key it names")


def writer_id(public_key: bytes) -> bytes:
    return node_id_for(public_key)


# -- signing ---------------------------------------------------------------------------------
def _signed_bytes(domain: bytes, msg: versions_pb2.VersionRecord | versions_pb2.GrantRecord
                  ) -> bytes:
    unsigned = copy.deepcopy(msg)
    unsigned.signature = b""
    return domain + unsigned.SerializeToString(deterministic=True)


def encode(msg: versions_pb2.VersionRecord | versions_pb2.GrantRecord) -> bytes:
    return msg.SerializeToString(deterministic=True)


def record_id(record: versions_pb2.VersionRecord) -> bytes:
    """The version id: BLAKE2b-256 of the signed record."""
    return hashlib.blake2b(encode(record), digest_size=VERSION_ID_BYTES,
                           person=b"tw-mesh-version").digest()


def grant_id(grant: versions_pb2.GrantRecord) -> bytes:
    return hashlib.blake2b(encode(grant), digest_size=VERSION_ID_BYTES,
                           person=b"tw-mesh-grant").digest()


def sign_version(identity: Identity, binding: versions_pb2.FileBinding, cid: str,
                 vector: Mapping[bytes, int], parents: Iterable[bytes], *, size: int = 0,
                 content_ref: bytes = b"", time_ms: int | None = None
                 ) -> versions_pb2.VersionRecord:
    record = versions_pb2.VersionRecord(
        cid=cid, vector=vector_entries(vector), parents=sorted(set(parents)),
        writer_key=identity.public_key, time_ms=now_ms() if time_ms is None else time_ms,
        size=size, content_ref=content_ref)
    record.file.CopyFrom(binding)
    record.signature = identity.sign(_signed_bytes(VERSION_DOMAIN, record))
    return record


def sign_grant(owner: Identity, binding: versions_pb2.FileBinding, grantee_key: bytes, *,
               revoke: bool = False, seq: int | None = None,
               vector: Mapping[bytes, int] | None = None, kept: Iterable[bytes] | None = None,
               kept_floor: int = 0) -> versions_pb2.GrantRecord:
    """A grant, or with ``revoke`` a revocation; ``kept`` (revocations only; None: a
    revocation as signed before the list, vector rule only) see grants.py."""
    ts = now_ms()
    grant = versions_pb2.GrantRecord(
        grantee_key=grantee_key, revoke=revoke, seq=ts if seq is None else seq,
        vector=vector_entries(vector or {}), time_ms=ts)
    if kept is not None:
        grant.kept.extend(sorted(set(kept)))
        grant.kept_floor = kept_floor
    grant.file.CopyFrom(binding)
    grant.signature = owner.sign(_signed_bytes(GRANT_DOMAIN, grant))
    return grant


# -- stand-alone verification ----------------------------------------------------------------
def verify_version(record: versions_pb2.VersionRecord, *, at_ms: int | None = None) -> None:
    """Checks that need no other record: structure, file binding, signature, clock.

    The rules that depend on the rest of the file's history (authorization, parents, counters)
    are in VersionSet.add.
    """
    check_binding(record.file)
    if len(record.writer_key) != 32 or len(record.signature) != 64:
        raise MalformedRecordError("record has no valid writer key or signature")
    if not is_cid(record.cid):
        raise MalformedRecordError("record names no valid CID")
    if len(record.parents) > MAX_PARENTS:
        raise MalformedRecordError(f"more than {MAX_PARENTS} parents")
    prev = b""
    for p in record.parents:
        if len(p) != VERSION_ID_BYTES or p <= prev:
            raise MalformedRecordError("parents must be 32-byte ids, sorted and unique")
        prev = p
    check_entries(record.vector, "vector")
    if len(record.content_ref) > 4096:
        raise MalformedRecordError("content_ref too large")
    if not verify_signature(record.writer_key, _signed_bytes(VERSION_DOMAIN, record),
                            record.signature):
        raise ForgedSignatureError("version record signature does not verify")
    me = writer_id(record.writer_key)
    if vector_of(record.vector).get(me, 0) <= 0:
        raise MalformedRecordError("the writer's own vector entry is missing")
    t = now_ms() if at_ms is None else at_ms
    if record.time_ms > t + CLOCK_SKEW_MS:
        raise FutureRecordError("version record is dated in the future")


def verify_grant(grant: versions_pb2.GrantRecord) -> None:
    check_binding(grant.file)
    if len(grant.grantee_key) != 32 or len(grant.signature) != 64:
        raise MalformedRecordError("grant has no valid grantee key or signature")
    check_entries(grant.vector, "grant vector")
    if (grant.kept or grant.HasField("kept_floor")) and not grant.revoke:
        raise MalformedRecordError("only a revocation lists kept records")
    if len(grant.kept) > MAX_KEPT:
        raise MalformedRecordError(f"a revocation lists at most {MAX_KEPT} records")
    if any(len(k) != VERSION_ID_BYTES or k <= p for p, k in zip([b""] + list(grant.kept),
                                                                 grant.kept, strict=False)):
        raise MalformedRecordError("kept records must be 32-byte ids, sorted and unique")
    if not verify_signature(grant.file.owner_key, _signed_bytes(GRANT_DOMAIN, grant),
                            grant.signature):
        raise ForgedSignatureError("grant is not signed by the file's owner")


def decode_version(data: bytes) -> versions_pb2.VersionRecord:
    if len(data) > MAX_RECORD_BYTES:
        raise MalformedRecordError(f"version record of {len(data)} bytes is too large")
    record = versions_pb2.VersionRecord()
    try:
        record.ParseFromString(data)
    except DecodeError as exc:
        raise MalformedRecordError("not a VersionRecord") from exc
    return record


def decode_grant(data: bytes) -> versions_pb2.GrantRecord:
    if len(data) > MAX_GRANT_BYTES:
        raise MalformedRecordError(f"grant of {len(data)} bytes is too large")
    grant = versions_pb2.GrantRecord()
    try:
        grant.ParseFromString(data)
    except DecodeError as exc:
        raise MalformedRecordError("not a GrantRecord") from exc
    return grant

"""Signed records: the only values the DHT accepts.

A record names its owner's Ed25519 key and is signed over its deterministic protobuf encoding
(with the signature field empty), prefixed by a domain tag so a record signature can never be
replayed as a channel or version signature. The DHT key of a record is derived from
(kind, owner, name), so a peer cannot store a record under a key it does not own.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from google.protobuf.message import DecodeError

from mesh.errors import RecordError
from mesh.identity import Identity, node_id_for, verify_signature
from proto import mesh_pb2

_DOMAIN = b"tw-mesh/record/v1\x00"
MAX_RECORD_BYTES = 4096
DEFAULT_TTL_S = 3600.0
CLOCK_SKEW_S = 120.0


def now_ms() -> int:
    return int(time.time() * 1000)


def record_key(kind: str, owner_key: bytes, name: bytes = b"") -> bytes:
    """DHT key (20 bytes) under which a record lives.

    Peer records live at the owner's node ID (so a lookup of the ID finds it); other kinds at a
    hash of (kind, name), shared by every owner that publishes that name (e.g. a function's
    providers), so one lookup returns all of them.
    """
    if kind == "peer":
        return node_id_for(owner_key)
    return hashlib.blake2b(kind.encode() + b"\x00" + name, digest_size=20,
                           person=b"tw-mesh-dht-key").digest()


def _signed_bytes(record: mesh_pb2.SignedRecord) -> bytes:
    unsigned = mesh_pb2.SignedRecord()
    unsigned.CopyFrom(record)
    unsigned.signature = b""
    return _DOMAIN + unsigned.SerializeToString(deterministic=True)


def sign_record(identity: Identity, kind: str, payload: bytes, *, name: bytes = b"",
                seq: int | None = None, ttl_s: float = DEFAULT_TTL_S) -> mesh_pb2.SignedRecord:
    """Build and sign a record. ``seq`` defaults to the current time in ms (monotonic enough)."""
    ts = now_ms()
    record = mesh_pb2.SignedRecord(
        kind=kind, owner_key=identity.public_key, name=name,
        seq=ts if seq is None else seq, timestamp_ms=ts,
        expires_ms=ts + int(ttl_s * 1000), payload=payload,
    )
    record.signature = identity.sign(_signed_bytes(record))
    return record


def verify_record(record: mesh_pb2.SignedRecord, *, at_ms: int | None = None) -> None:
    """Raise RecordError unless the record is well formed, correctly signed and not expired."""
    if len(record.owner_key) != 32 or len(record.signature) != 64:
        raise RecordError("record has no valid owner key or signature")
    if not record.kind:
        raise RecordError("record has no kind")
    if not verify_signature(record.owner_key, _signed_bytes(record), record.signature):
        raise RecordError("record signature does not verify")
    t = now_ms() if at_ms is None else at_ms
    if record.expires_ms <= t:
        raise RecordError("record has expired")
    if record.timestamp_ms > t + CLOCK_SKEW_S * 1000:
        raise RecordError("record is dated in the future")
    if record.kind == "peer":
        peer = decode_peer(record)
        if peer.node_id != node_id_for(record.owner_key) or peer.identity_key != record.owner_key:
            raise RecordError("peer record's node id does not match its key")


# A kind whose records compete for one key (a function-name claim: the first owner keeps it)
# checks a new record against the records of that kind already held at the key, on store.
StorePolicy = Callable[[mesh_pb2.SignedRecord, list[mesh_pb2.SignedRecord], int], str | None]
_STORE_POLICIES: dict[str, StorePolicy] = {}


def register_store_policy(kind: str, policy: StorePolicy) -> None:
    """``policy(new, held, now_ms)`` returns a refusal reason, or None to store ``new``
    (``held``: the records of the same kind at that key, the new record's owner's included)."""
    _STORE_POLICIES[kind] = policy


def check_store(record: mesh_pb2.SignedRecord, held: list[mesh_pb2.SignedRecord], *,
                at_ms: int | None = None) -> None:
    """Raise RecordError when the kind's store policy refuses ``record`` next to ``held``."""
    policy = _STORE_POLICIES.get(record.kind)
    if policy is None:
        return
    same_kind = [r for r in held if r.kind == record.kind]
    reason = policy(record, same_kind, now_ms() if at_ms is None else at_ms)
    if reason:
        raise RecordError(reason)


def decode_record(data: bytes) -> mesh_pb2.SignedRecord:
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError(f"record of {len(data)} bytes exceeds {MAX_RECORD_BYTES}")
    record = mesh_pb2.SignedRecord()
    try:
        record.ParseFromString(data)
    except DecodeError as exc:
        raise RecordError("record is not a valid SignedRecord") from exc
    return record


def decode_peer(record: mesh_pb2.SignedRecord) -> mesh_pb2.PeerRecord:
    peer = mesh_pb2.PeerRecord()
    try:
        peer.ParseFromString(record.payload)
    except DecodeError as exc:
        raise RecordError("peer record payload is malformed") from exc
    return peer


def newer(a: mesh_pb2.SignedRecord, b: mesh_pb2.SignedRecord) -> bool:
    """True when ``a`` supersedes ``b`` (same owner/kind/name, higher seq)."""
    return a.seq > b.seq

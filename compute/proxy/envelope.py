"""A secret's signed record: the envelope format, sealing it and opening it.

Pure functions, apart from the store (secrets.py) that keeps, publishes and fetches records:
a record of kind "secret" (name = the secret's name), signed by the owner node, whose payload
(SecretEnvelope) holds the value encrypted once under a random data key (SecretBox), that data
key sealed (SealedBox, X25519 derived from each node's Ed25519 identity) to every recipient
node, and the workers/functions allowed to read it.
"""

from __future__ import annotations

import re
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.secret
import nacl.signing
from google.protobuf.message import DecodeError

from mesh.errors import InvalidArgumentError, PermissionDeniedError, RecordError
from mesh.identity import Identity
from mesh.records import MAX_RECORD_BYTES, record_key, sign_record
from proto import mesh_pb2, proxy_pb2

KIND = "secret"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_VALUE_BYTES = 2048
RECORD_TTL_S = 7 * 24 * 3600.0


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidArgumentError("a secret name is 1-64 characters of A-Z a-z 0-9 _ . -")
    return name


def dht_key(name: str) -> bytes:
    return record_key(KIND, b"", name.encode())


def allowed_for(allowed: list[str] | Any, worker_id: str, function: str,
                deployer: bytes | None = None) -> bool:
    """An entry names a worker id, a function or WORKER/FUNCTION; ``NAME@NODE_ID_PREFIX``
    also requires the code to come from that node (deployer/registrar; names alone are
    whatever the deployer claims)."""
    names = {worker_id, function} - {""}
    if worker_id and function:
        names.add(f"{worker_id}/{function}")      # no identity ("", "") matches nothing
    for entry in allowed:
        name, at, prefix = str(entry).partition("@")
        if name not in names:
            continue
        if not at or (deployer is not None and prefix and
                      deployer.hex().startswith(prefix.lower())):
            return True
    return False


def binding(owner_key: bytes, name: str) -> bytes:
    """What the sealed plaintext starts with: the owner's key and the secret's name. The
    allow-list is signed, but by whoever signs the record, and the ciphertext and sealed keys
    can be copied into anyone's envelope; only the holder of the data key (the owner) can
    put its key inside the ciphertext, so a reader that finds another signer's key there
    knows the envelope was copied."""
    encoded = name.encode()
    return b"tw-secret-1\0" + owner_key + bytes([len(encoded)]) + encoded


def node_public_x25519(identity_key: bytes) -> nacl.public.PublicKey:
    return nacl.signing.VerifyKey(identity_key).to_curve25519_public_key()


def encrypt_value(owner_key: bytes, name: str, value: bytes, data_key: bytes) -> bytes:
    return bytes(nacl.secret.SecretBox(data_key).encrypt(binding(owner_key, name) + value))


def decode_envelope(record: mesh_pb2.SignedRecord) -> proxy_pb2.SecretEnvelope:
    env = proxy_pb2.SecretEnvelope()
    try:
        env.ParseFromString(record.payload)
    except DecodeError as exc:
        raise RecordError("secret record payload is malformed") from exc
    if env.name != record.name.decode(errors="replace"):
        raise RecordError("secret record name mismatch")
    return env


def seal_record(identity: Identity, name: str, seq: int, data_key: bytes, ciphertext: bytes,
                allowed: list[str], recipients: dict[bytes, bytes], auto: bool, *,
                revoked: bool = False) -> mesh_pb2.SignedRecord:
    """The signed record of one version: ``data_key`` sealed to each recipient (node id ->
    identity key); a revocation carries no ciphertext and no sealed keys."""
    env = proxy_pb2.SecretEnvelope(name=name, allowed=allowed, revoked=revoked,
                                   version=seq, all_compute_nodes=auto)
    if not revoked:
        env.ciphertext = ciphertext
        for node_id, key in sorted(recipients.items()):
            sealed = nacl.public.SealedBox(node_public_x25519(key)).encrypt(data_key)
            env.recipients.add(node_id=node_id, sealed=bytes(sealed))
    record = sign_record(identity, KIND, env.SerializeToString(),
                         name=name.encode(), seq=seq, ttl_s=RECORD_TTL_S)
    if record.ByteSize() > MAX_RECORD_BYTES:
        raise InvalidArgumentError(
            f"the sealed secret takes {record.ByteSize()} bytes (> {MAX_RECORD_BYTES}): "
            f"seal it to fewer nodes (--node) or shorten it")
    return record


def open_data_key(box: nacl.public.SealedBox[nacl.public.PrivateKey], node_id: bytes,
                  env: proxy_pb2.SecretEnvelope) -> bytes | None:
    """The data key sealed to ``node_id`` (whose private key ``box`` holds), or None."""
    for entry in env.recipients:
        if entry.node_id == node_id:
            try:
                return bytes(box.decrypt(entry.sealed))
            except nacl.exceptions.CryptoError:
                return None
    return None


def open_value(record: mesh_pb2.SignedRecord, env: proxy_pb2.SecretEnvelope,
               data_key: bytes) -> str:
    """The value, once the plaintext shows the record's signer sealed it (``binding``)."""
    name = env.name
    try:
        value = nacl.secret.SecretBox(data_key).decrypt(env.ciphertext)
    except nacl.exceptions.CryptoError:
        raise PermissionDeniedError(f"secret {name!r} does not decrypt") from None
    bound = binding(record.owner_key, name)
    if not value.startswith(bound):
        raise PermissionDeniedError(
            f"secret {name!r}: the record's signer did not seal this value (an envelope "
            "copied from another owner's record, or one set before owners were bound); "
            "refused")
    return value[len(bound):].decode("utf-8", "replace")

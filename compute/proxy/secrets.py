"""Secrets sealed to the nodes that may serve a worker, stored as signed DHT records.

A secret is a SignedRecord of kind "secret" (name = the secret's name), signed by the owner
node. Its payload (SecretEnvelope) holds the value encrypted once under a random data key
(SecretBox) and that data key sealed (SealedBox, X25519 derived from each node's Ed25519
identity) to every recipient node, plus the list of workers/functions allowed to read it. The
recipients are the compute nodes of the pool (default; the owner re-seals when one joins) or
the nodes named at `secret set --node`. A node hands the value only to an allowed worker's
function; everyone else gets PermissionDenied. Plaintext is never written anywhere: the node
keeps the signed (encrypted) record and decrypts on each read. See docs/proxy.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.secret
import nacl.signing
import nacl.utils
from google.protobuf.message import DecodeError

from mesh.context import MeshContext
from mesh.errors import (
    InvalidArgumentError,
    MeshError,
    NotFoundError,
    PermissionDeniedError,
    RecordError,
)
from mesh.identity import node_id_for
from mesh.records import MAX_RECORD_BYTES, now_ms, record_key, sign_record, verify_record
from proto import mesh_pb2, proxy_pb2

log = logging.getLogger("tw-mesh.proxy")

KIND = "secret"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_VALUE_BYTES = 2048
RECORD_TTL_S = 7 * 24 * 3600.0
REPUBLISH_S = 600.0


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


def decode_envelope(record: mesh_pb2.SignedRecord) -> proxy_pb2.SecretEnvelope:
    env = proxy_pb2.SecretEnvelope()
    try:
        env.ParseFromString(record.payload)
    except DecodeError as exc:
        raise RecordError("secret record payload is malformed") from exc
    if env.name != record.name.decode(errors="replace"):
        raise RecordError("secret record name mismatch")
    return env


class SecretStore:
    """This node's view of the mesh's secrets: sets/revokes its own, reads anyone's it is a
    recipient of, for allowed workers only."""

    def __init__(self, ctx: MeshContext, *, cache_s: float = 2.0,
                 trusted_owners: list[str] | None = None) -> None:
        self.ctx = ctx
        self.cache_s = cache_s
        # hex node-id prefixes of owners whose secrets this node accepts (empty: any member)
        self.trusted_owners = [t.lower() for t in trusted_owners or []]
        self._box = nacl.public.SealedBox(ctx.identity.signing_key.to_curve25519_private_key())
        self._dir = Path(ctx.data_dir) / "proxy" / "secrets"
        self._own: dict[str, mesh_pb2.SignedRecord] = {}
        self._cache: dict[str, tuple[float, mesh_pb2.SignedRecord | None]] = {}
        self._lock = asyncio.Lock()
        self.stats = {"reads": 0, "denied": 0, "sets": 0, "reseals": 0}

    # -- persistence (signed, encrypted records only) ------------------------------------------
    def load(self) -> None:
        if not self._dir.is_dir():
            return
        for path in sorted(self._dir.glob("*.rec")):
            try:
                record = mesh_pb2.SignedRecord()
                record.ParseFromString(path.read_bytes())
                verify_record(record)
                if record.owner_key != self.ctx.identity.public_key:
                    raise RecordError("not ours")
                self._own[record.name.decode()] = record
            except (RecordError, DecodeError, UnicodeDecodeError, OSError) as exc:
                log.warning("ignoring secret record %s: %s", path.name, exc)

    def _save(self, record: mesh_pb2.SignedRecord) -> None:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._dir / f"{record.name.hex()}.rec"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(record.SerializeToString())
        os.replace(tmp, path)

    # -- owner side ----------------------------------------------------------------------------
    def _compute_nodes(self) -> dict[bytes, bytes]:
        """node id -> identity key of every live compute node, this one included."""
        nodes = {self.ctx.identity.node_id: self.ctx.identity.public_key}
        for peer in self.ctx.membership.live_peers():
            if "compute" in peer.roles and len(peer.record.identity_key) == 32:
                nodes[peer.node_id] = bytes(peer.record.identity_key)
        return nodes

    def _named_nodes(self, prefixes: list[str]) -> dict[bytes, bytes]:
        known = {self.ctx.identity.node_id: self.ctx.identity.public_key}
        for peer in self.ctx.membership.live_peers():
            if len(peer.record.identity_key) == 32:
                known[peer.node_id] = bytes(peer.record.identity_key)
        chosen = {self.ctx.identity.node_id: self.ctx.identity.public_key}  # owner re-seals
        for prefix in prefixes:
            hits = [nid for nid in known if nid.hex().startswith(prefix.lower())]
            if len(hits) != 1:
                raise InvalidArgumentError(
                    f"--node {prefix!r} matches {len(hits)} live nodes (need exactly one)")
            chosen[hits[0]] = known[hits[0]]
        return chosen

    def _build(self, name: str, data_key: bytes, ciphertext: bytes, allowed: list[str],
               recipients: dict[bytes, bytes], auto: bool, *,
               revoked: bool = False) -> mesh_pb2.SignedRecord:
        seq = max(now_ms(), (self._own[name].seq + 1) if name in self._own else 0)
        env = proxy_pb2.SecretEnvelope(name=name, allowed=allowed, revoked=revoked,
                                       version=seq, all_compute_nodes=auto)
        if not revoked:
            env.ciphertext = ciphertext
            for node_id, key in sorted(recipients.items()):
                sealed = nacl.public.SealedBox(node_public_x25519(key)).encrypt(data_key)
                env.recipients.add(node_id=node_id, sealed=bytes(sealed))
        record = sign_record(self.ctx.identity, KIND, env.SerializeToString(),
                             name=name.encode(), seq=seq, ttl_s=RECORD_TTL_S)
        if record.ByteSize() > MAX_RECORD_BYTES:
            raise InvalidArgumentError(
                f"the sealed secret takes {record.ByteSize()} bytes (> {MAX_RECORD_BYTES}): "
                f"seal it to fewer nodes (--node) or shorten it")
        return record

    async def _publish(self, record: mesh_pb2.SignedRecord) -> int:
        name = record.name.decode()
        self._own[name] = record
        self._save(record)
        self._cache.pop(name, None)
        try:
            return await self.ctx.membership.publish(record)
        except MeshError as exc:
            log.warning("publishing secret %s: %s", name, exc)
            return 0

    async def set(self, name: str, value: bytes, allowed: list[str],
                  nodes: list[str]) -> tuple[mesh_pb2.SignedRecord, int]:
        check_name(name)
        if not value:
            raise InvalidArgumentError("empty secret value")
        if len(value) > MAX_VALUE_BYTES:
            raise InvalidArgumentError(f"secret values are limited to {MAX_VALUE_BYTES} bytes")
        allowed = sorted({a.strip() for a in allowed if a.strip()})
        if not allowed:
            raise InvalidArgumentError("name at least one worker or function with --for")
        async with self._lock:
            recipients = self._named_nodes(nodes) if nodes else self._compute_nodes()
            data_key = nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE)
            ciphertext = bytes(nacl.secret.SecretBox(data_key).encrypt(
                binding(self.ctx.identity.public_key, name) + value))
            record = self._build(name, data_key, ciphertext, allowed, recipients, not nodes)
            acks = await self._publish(record)
            self.stats["sets"] += 1
        log.info("secret %s set (version %d, %d recipient node(s), %d store ack(s))",
                 name, record.seq, len(recipients), acks)
        return record, acks

    async def revoke(self, name: str) -> tuple[mesh_pb2.SignedRecord, int]:
        check_name(name)
        async with self._lock:
            if name not in self._own:
                raise NotFoundError(f"this node owns no secret named {name!r}")
            record = self._build(name, b"", b"", [], {}, False, revoked=True)
            acks = await self._publish(record)
        log.info("secret %s revoked", name)
        return record, acks

    def list(self) -> list[proxy_pb2.SecretInfo]:
        out = []
        for name, record in sorted(self._own.items()):
            env = decode_envelope(record)
            out.append(proxy_pb2.SecretInfo(
                name=name, allowed=list(env.allowed), version=record.seq,
                recipients=len(env.recipients), revoked=env.revoked,
                owner=node_id_for(record.owner_key).hex()))
        return out

    async def reseal_for_new_nodes(self) -> int:
        """Add newly seen compute nodes to every own 'all compute nodes' secret."""
        changed = 0
        async with self._lock:
            nodes = self._compute_nodes()
            for name, record in list(self._own.items()):
                env = decode_envelope(record)
                if env.revoked or not env.all_compute_nodes:
                    continue
                have = {r.node_id for r in env.recipients}
                if set(nodes) <= have:
                    continue
                data_key = self._open_key(env)
                if data_key is None:
                    continue
                recipients = {**{r.node_id: b"" for r in env.recipients}, **nodes}
                recipients = {k: v for k, v in recipients.items() if v}
                new = self._build(name, data_key, env.ciphertext, list(env.allowed),
                                  recipients, True)
                await self._publish(new)
                changed += 1
        self.stats["reseals"] += changed
        return changed

    async def republish(self) -> None:
        for record in list(self._own.values()):
            if record.expires_ms - now_ms() < RECORD_TTL_S * 500:   # half its life left
                env = decode_envelope(record)
                if env.revoked:
                    continue
                data_key = self._open_key(env)
                if data_key is not None:
                    async with self._lock:
                        nodes = {r.node_id for r in env.recipients}
                        known = self._compute_nodes() | self._named_nodes([])
                        keys = {n: known[n] for n in nodes if n in known}
                        await self._publish(self._build(
                            env.name, data_key, env.ciphertext, list(env.allowed), keys,
                            env.all_compute_nodes))
            else:
                try:
                    await self.ctx.membership.publish(record)
                except MeshError as exc:
                    log.debug("republishing secret: %s", exc)

    # -- reader side ---------------------------------------------------------------------------
    def _open_key(self, env: proxy_pb2.SecretEnvelope) -> bytes | None:
        me = self.ctx.identity.node_id
        for entry in env.recipients:
            if entry.node_id == me:
                try:
                    return bytes(self._box.decrypt(entry.sealed))
                except nacl.exceptions.CryptoError:
                    return None
        return None

    def invalidate(self, name: str | None = None) -> None:
        if name is None:
            self._cache.clear()
        else:
            self._cache.pop(name, None)

    async def _current(self, name: str) -> mesh_pb2.SignedRecord | None:
        hit = self._cache.get(name)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        try:
            records = await self.ctx.membership.fetch(dht_key(name))
        except MeshError as exc:
            log.debug("fetching secret %s: %s", name, exc)
            records = []
        if name in self._own:
            records.append(self._own[name])
        best: mesh_pb2.SignedRecord | None = None
        for record in records:
            if record.kind != KIND or record.name != name.encode():
                continue
            if self.trusted_owners and record.owner_key != self.ctx.identity.public_key and \
                    not node_id_for(record.owner_key).hex().startswith(
                        tuple(self.trusted_owners)):
                continue
            try:
                verify_record(record)
            except RecordError:
                continue
            if best is None or record.seq > best.seq:
                best = record
        self._cache[name] = (now, best)
        return best

    async def get(self, name: str, worker_id: str, function: str,
                  deployer: bytes | None = None) -> str:
        """The secret's value for a call of ``function`` in ``worker_id``, or
        PermissionDeniedError (the same message whether it exists or not)."""
        self.stats["reads"] += 1
        denied = PermissionDeniedError(f"no secret {name!r} is available to this function")
        if not NAME_RE.match(name):
            self.stats["denied"] += 1
            raise denied
        record = await self._current(name)
        env = decode_envelope(record) if record is not None else None
        if env is None or env.revoked or not allowed_for(list(env.allowed), worker_id,
                                                           function, deployer):
            self.stats["denied"] += 1
            raise denied
        data_key = self._open_key(env)
        if data_key is None:
            self.stats["denied"] += 1
            raise PermissionDeniedError(
                f"secret {name!r} is not sealed to this node; the owner must set it again "
                "with this node among the recipients")
        try:
            value = nacl.secret.SecretBox(data_key).decrypt(env.ciphertext)
        except nacl.exceptions.CryptoError:
            raise PermissionDeniedError(f"secret {name!r} does not decrypt") from None
        bound = binding(record.owner_key, name) if record is not None else b""
        if not value.startswith(bound):
            self.stats["denied"] += 1
            raise PermissionDeniedError(
                f"secret {name!r}: the record's signer did not seal this value (an envelope "
                "copied from another owner's record, or one set before owners were bound); "
                "refused")
        return value[len(bound):].decode("utf-8", "replace")

    def status(self) -> dict[str, Any]:
        return {**self.stats, "owned": len(self._own)}

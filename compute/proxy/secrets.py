"""The node's secret store: the secrets it owns (set, revoke, re-seal, republish, kept on disk
as signed encrypted records), on top of the reader side every compute node runs (reader.py:
which record of a name to believe, reads for allowed workers only); envelope.py holds the
record format, sealing and opening. Plaintext is never written anywhere: the node keeps the
signed (encrypted) record and decrypts on each read. See docs/proxy.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import nacl.secret
import nacl.utils
from google.protobuf.message import DecodeError

from mesh.context import MeshContext
from mesh.errors import (
    InvalidArgumentError,
    MeshError,
    NotFoundError,
    RecordError,
)
from mesh.identity import node_id_for
from mesh.records import now_ms, verify_record
from proto import mesh_pb2, proxy_pb2

from .envelope import (
    KIND,
    MAX_VALUE_BYTES,
    RECORD_TTL_S,
    check_name,
    decode_envelope,
    dht_key,
    encrypt_value,
    seal_record,
)
from .reader import SecretReader

__all__ = ["KIND", "MAX_VALUE_BYTES", "RECORD_TTL_S", "REPUBLISH_S", "SecretStore", "dht_key"]

log = logging.getLogger("tw-mesh.proxy")

REPUBLISH_S = 600.0


class SecretStore(SecretReader):
    """This node's view of the mesh's secrets: sets/revokes its own, reads anyone's it is a
    recipient of, for allowed workers only (the reader side)."""

    def __init__(self, ctx: MeshContext, *, cache_s: float = 2.0,
                 trusted_owners: list[str] | None = None) -> None:
        super().__init__(ctx, cache_s=cache_s, trusted_owners=trusted_owners)
        self._dir = Path(ctx.data_dir) / "proxy" / "secrets"
        self._lock = asyncio.Lock()
        self.stats.update({"sets": 0, "reseals": 0})

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
        return seal_record(self.ctx.identity, name, seq, data_key, ciphertext, allowed,
                           recipients, auto, revoked=revoked)

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
            ciphertext = encrypt_value(self.ctx.identity.public_key, name, value, data_key)
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

    def status(self) -> dict[str, Any]:
        return {**self.stats, "owned": len(self._own)}

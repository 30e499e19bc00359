"""The reader side of secrets: which record of a name a node believes, and handing its value
to an allowed function only.

Apart from the store (secrets.py, the owner side) because every compute node reads while only
owners write: a read fetches the records at the name's DHT key (cached ``cache_s``), picks one,
checks the call against its signed allow-list, opens the data key sealed to this node and
decrypts. Plaintext is never kept: every read decrypts.
"""

from __future__ import annotations

import logging
import time

import nacl.public

from compute.sandbox.limits import check_owner
from mesh.context import MeshContext
from mesh.errors import InvalidArgumentError, MeshError, PermissionDeniedError, RecordError
from mesh.identity import node_id_for
from mesh.records import verify_record
from proto import mesh_pb2, proxy_pb2

from .envelope import (
    KIND,
    NAME_RE,
    allowed_for,
    decode_envelope,
    dht_key,
    open_data_key,
    open_value,
)

log = logging.getLogger("tw-mesh.proxy")
Opened = tuple[mesh_pb2.SignedRecord, proxy_pb2.SecretEnvelope]


class SecretReader:
    def __init__(self, ctx: MeshContext, *, cache_s: float = 2.0,
                 trusted_owners: list[str] | None = None) -> None:
        self.ctx = ctx
        self.cache_s = cache_s
        # hex node-id prefixes of owners whose secrets this node accepts (empty: any member)
        self.trusted_owners = [t.lower() for t in trusted_owners or []]
        self._box = nacl.public.SealedBox(ctx.identity.signing_key.to_curve25519_private_key())
        self._own: dict[str, mesh_pb2.SignedRecord] = {}     # this node's (owner side)
        self._cache: dict[str, tuple[float, dict[bytes, Opened]]] = {}
        self.stats = {"reads": 0, "denied": 0}

    def _open_key(self, env: proxy_pb2.SecretEnvelope) -> bytes | None:
        return open_data_key(self._box, self.ctx.identity.node_id, env)

    def invalidate(self, name: str | None = None) -> None:
        if name is None:
            self._cache.clear()
        else:
            self._cache.pop(name, None)

    async def _by_owner(self, name: str) -> dict[bytes, Opened]:
        """Node id -> (newest record, envelope) of every key that published ``name`` (from
        ``--secret-owner`` owners only, when given; this node always)."""
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
        owners: dict[bytes, Opened] = {}
        for record in records:
            if record.kind != KIND or record.name != name.encode():
                continue
            owner = node_id_for(record.owner_key)
            if self.trusted_owners and record.owner_key != self.ctx.identity.public_key and \
                    not owner.hex().startswith(tuple(self.trusted_owners)):
                continue
            if owner in owners and owners[owner][0].seq >= record.seq:
                continue
            try:
                verify_record(record)
                owners[owner] = (record, decode_envelope(record))
            except RecordError:
                continue
        self._cache[name] = (now, owners)
        return owners

    async def _current(self, name: str, deployer: bytes | None,
                       owner: str | None = None) -> Opened | None:
        """The record a call believes: the named ``owner``'s only, when the function named
        one; else its owner's (the deployer of the code, else this node: a TaskWorker's),
        whatever sequence other keys published the name at; failing that, the only other
        key's. Any key may publish a genuine secret under any name (the DHT key depends on
        the name only), so when several others did, none is the call's and the read is
        refused rather than handed a value an outsider chose; and when the owner's record is
        missing, only a named owner keeps the one other key's from being taken."""
        owners = await self._by_owner(name)
        if owner is not None:
            named = [opened for nid, opened in owners.items()
                     if nid.hex().startswith(owner) or opened[0].owner_key.hex() == owner]
            return named[0] if len(named) == 1 else None
        mine = owners.get(deployer or self.ctx.identity.node_id)
        if mine is not None or len(owners) <= 1:
            return mine or next(iter(owners.values()), None)
        raise PermissionDeniedError(
            f"secret {name!r} is published by {len(owners)} keys and none is this function's "
            "owner; a node accepts the one it should trust with --secret-owner NODE_ID")

    async def get(self, name: str, worker_id: str, function: str,
                  deployer: bytes | None = None, owner: str | None = None) -> str:
        """The secret's value for a call of ``function`` in ``worker_id``, or
        PermissionDeniedError (the same message whether it exists or not); with ``owner``
        (see compute.sandbox.limits.check_owner), only the record that key signed."""
        return (await self.read(name, worker_id, function, deployer, owner))[0]

    async def read(self, name: str, worker_id: str, function: str,
                   deployer: bytes | None = None, owner: str | None = None
                   ) -> tuple[str, frozenset[bytes]]:
        """``get``'s value and the nodes it is sealed to (no other node is to see it)."""
        try:
            owner = check_owner(owner)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        self.stats["reads"] += 1
        denied = PermissionDeniedError(f"no secret {name!r} is available to this function")
        if not NAME_RE.match(name):
            self.stats["denied"] += 1
            raise denied
        try:
            current = await self._current(name, deployer, owner)
        except PermissionDeniedError:
            self.stats["denied"] += 1
            raise
        if current is None:
            self.stats["denied"] += 1
            raise denied
        record, env = current
        if env.revoked or not allowed_for(list(env.allowed), worker_id, function, deployer):
            self.stats["denied"] += 1
            raise denied
        data_key = self._open_key(env)
        if data_key is None:
            self.stats["denied"] += 1
            raise PermissionDeniedError(
                f"secret {name!r} is not sealed to this node; the owner must set it again "
                "with this node among the recipients")
        try:
            return open_value(record, env, data_key), frozenset(r.node_id for r in env.recipients)
        except PermissionDeniedError:
            self.stats["denied"] += 1
            raise


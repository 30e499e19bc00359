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

from mesh.context import MeshContext
from mesh.errors import MeshError, PermissionDeniedError, RecordError
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


class SecretReader:
    def __init__(self, ctx: MeshContext, *, cache_s: float = 2.0,
                 trusted_owners: list[str] | None = None) -> None:
        self.ctx = ctx
        self.cache_s = cache_s
        # hex node-id prefixes of owners whose secrets this node accepts (empty: any member)
        self.trusted_owners = [t.lower() for t in trusted_owners or []]
        self._box = nacl.public.SealedBox(ctx.identity.signing_key.to_curve25519_private_key())
        self._own: dict[str, mesh_pb2.SignedRecord] = {}     # this node's (owner side)
        self._cache: dict[str, tuple[float, mesh_pb2.SignedRecord | None]] = {}
        self.stats = {"reads": 0, "denied": 0}

    def _open_key(self, env: proxy_pb2.SecretEnvelope) -> bytes | None:
        return open_data_key(self._box, self.ctx.identity.node_id, env)

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
        assert record is not None and env is not None
        try:
            return open_value(record, env, data_key)
        except PermissionDeniedError:
            self.stats["denied"] += 1
            raise


"""A node's view of function-name owners (rules in ``names.py``): claim on first deploy,
refuse another key's redeploy, filter provider records for routing, keep claims alive.

* **Claiming.** ``claim(names)`` before a deploy publishes anything: a name owned by another
  key raises PERMISSION_DENIED; a free name is claimed, then read back, and a deploy that lost
  a race (an earlier stamped claim is visible) is refused too.
* **Last known owner.** A lookup that shows no claim at all (records lost, a DHT lookup that
  failed) keeps the owner this node last saw, until the owner's chain shows up again. (Known
  owners are not kept against an earlier stamped claim: a node that missed a race winner, or
  an established owner, during a lookup must still converge on it.)
* **Lost claims.** The owner re-signs its claim on every provider refresh; every node that
  serves a deployed name re-stores the owner's signed chain verbatim (it cannot forge it), and
  kademlia republishes stored keys: a claim outlives its owner by up to the deploy TTL.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

from mesh.context import MeshContext
from mesh.errors import (
    InvalidArgumentError,
    MeshError,
    PermissionDeniedError,
    UnavailableError,
)
from mesh.records import now_ms
from proto import compute_pb2, mesh_pb2

from .names import (
    Claim,
    Ownership,
    claim_key,
    decode_claims,
    filter_providers,
    resolve,
    sign_claim,
)
from .registry import Provider, check_function_name, decode_providers, function_key

log = logging.getLogger(__name__)
MAX_KNOWN = 4096


def trusted_deployer(providers: list[Provider], code_cid: str, deployer: bytes) -> bytes:
    """``deployer`` when the (owner-filtered) providers show it signed the deploy of
    ``code_cid``, else b"": a peer's call may name anyone as the deployer, and the secrets
    policy's ``NAME@NODE`` entries must not take that on trust."""
    if deployer and any(p.deployed and p.record.code_cid == code_cid and p.owner_id == deployer
                        for p in providers):
        return deployer
    return b""


class NameOwners:
    def __init__(self, ctx: MeshContext, *, ttl_s: float) -> None:
        self.ctx = ctx
        self.ttl_s = ttl_s
        self.me = ctx.identity.public_key
        self._known: collections.OrderedDict[str, Ownership] = collections.OrderedDict()
        self._mine: dict[str, compute_pb2.NameClaim] = {}     # claims this node re-signs

    # --- reading ---------------------------------------------------------------------------
    async def owner(self, name: str) -> Ownership | None:
        """The owner of ``name`` as the DHT shows it now (or the last one known, see module
        doc, when no claim can be seen)."""
        try:
            records = await self.ctx.membership.fetch(claim_key(name))
        except MeshError as exc:
            log.info("claim lookup for %s failed: %s", name, exc)
            return self._known.get(name)
        return self._remember(name, decode_claims(name, records))

    def _remember(self, name: str, claims: list[Claim]) -> Ownership | None:
        found = resolve(claims)
        known = self._known.get(name)
        if found is None and known is not None and not any(
                c.owner_key == known.root.owner_key and c.rank == known.root.rank
                for c in claims):
            return known                     # claims lost or withheld: keep the known owner
        if found is None:
            self._known.pop(name, None)
            return None
        self._known[name] = found
        self._known.move_to_end(name)
        while len(self._known) > MAX_KNOWN:
            self._known.popitem(last=False)
        return found

    async def allowed(self, name: str) -> Callable[[list[Provider]], list[Provider]]:
        """Router hook: a filter keeping the provider records that may serve ``name``."""
        owner = await self.owner(name)
        return lambda providers: filter_providers(name, providers, owner)

    # --- claiming --------------------------------------------------------------------------
    def _refused(self, name: str, owner: Ownership, *, race: bool = False) -> PermissionDeniedError:
        why = "an earlier claim won the race for it" if race else "only its owner can redeploy it"
        return PermissionDeniedError(
            f"function name {name!r} is owned by node {owner.owner_id.hex()[:16]}: {why}")

    async def claim(self, name: str) -> Ownership | None:
        """Make sure this node may deploy ``name`` (claiming it when free); raise otherwise."""
        owner = await self.owner(name)
        if owner is not None and owner.owner_key != self.me:
            raise self._refused(name, owner)
        if owner is not None:
            mine = self._my_record(owner)
            if mine is not None:
                self._mine[name] = mine
            return owner
        others = {p.owner_id for p in decode_providers(
            name, await self.ctx.membership.fetch(function_key(name))) if not p.deployed}
        others.discard(self.ctx.identity.node_id)
        if others:       # TaskWorkers of other nodes serve it: a deploy must not take it over
            raise PermissionDeniedError(
                f"function name {name!r} is served by TaskWorkers of {len(others)} other "
                "node(s): deploy it under another name")
        claim = compute_pb2.NameClaim(function=name, claimed_ms=now_ms())
        acks = await self._publish(claim)
        owner = await self.owner(name)
        if owner is not None and owner.owner_key != self.me:
            raise self._refused(name, owner, race=True)
        if acks == 0:
            raise UnavailableError(f"no DHT node stored the claim of {name!r}")
        self._mine[name] = claim
        return owner

    async def deployed(self, name: str, record: compute_pb2.ProviderRecord) -> int:
        """Record the owner's new deploy in its claim (the routed deploy of ``name``)."""
        claim = self._mine.get(name)
        if claim is None:       # a transferee's first deploy: its own record in the chain
            owner = await self.owner(name)
            if owner is None or owner.owner_key != self.me:
                raise PermissionDeniedError(f"this node does not own {name!r}")
            claim = self._chain_record(owner)
        claim.deploy.CopyFrom(record)
        self._mine[name] = claim
        return await self._publish(claim)

    def _my_record(self, owner: Ownership) -> compute_pb2.NameClaim | None:
        """This node's record in the owner's chain (a copy), or None."""
        for record in owner.chain:
            if record.owner_key == self.me:
                claim = compute_pb2.NameClaim()
                claim.CopyFrom(record.claim)
                return claim
        return None

    def _chain_record(self, owner: Ownership) -> compute_pb2.NameClaim:
        """The record this node (the owner) signs to act on the name: its own one in the
        chain, else a new transferee's record continuing the chain."""
        return self._my_record(owner) or compute_pb2.NameClaim(
            function=owner.root.claim.function, claimed_ms=owner.root.claim.claimed_ms,
            inherited_from=owner.chain[-1].owner_key)

    async def _publish(self, claim: compute_pb2.NameClaim) -> int:
        signed = sign_claim(self.ctx.identity, claim, ttl_s=self.ttl_s)
        return await self.ctx.membership.publish(signed)

    async def release(self, name: str, *, transfer_to: bytes = b"") -> Ownership | None:
        """Give ``name`` up, or hand it to ``transfer_to`` (an Ed25519 key)."""
        owner = await self.owner(name)
        if owner is None or owner.owner_key != self.me:
            raise PermissionDeniedError(f"this node does not own {name!r}")
        if transfer_to in {c.owner_key for c in owner.chain}:
            raise InvalidArgumentError("that node already held this name: it cannot be handed "
                                       "back along the chain (release it instead)")
        claim = self._chain_record(owner)
        claim.transfer_to, claim.released = transfer_to, not transfer_to
        if await self._publish(claim) == 0:
            raise UnavailableError(f"no DHT node stored the release of {name!r}")
        if transfer_to:
            self._mine[name] = claim    # the transferee's ownership hangs on this record
        else:
            self._mine.pop(name, None)
        self._known.pop(name, None)
        return await self.owner(name)

    async def handle(self, request: compute_pb2.NameRequest) -> compute_pb2.NameReply:
        """The local API's Name call: show, release or transfer a name."""
        name = request.function
        check_function_name(name)
        if request.action in ("", "show"):
            owner = await self.owner(name)
        elif request.action == "release":
            owner = await self.release(name)
        elif request.action == "transfer":
            peer = await self.ctx.membership.fetch_peer(request.to_node_id) \
                if len(request.to_node_id) == 20 else None
            if peer is None:
                raise InvalidArgumentError("transfer needs the node id of a live peer")
            owner = await self.release(name, transfer_to=peer.identity_key)
        else:
            raise InvalidArgumentError(f"unknown action {request.action!r}")
        if owner is None:
            return compute_pb2.NameReply(function=name)
        return compute_pb2.NameReply(function=name, owner_key=owner.owner_key,
                                     owner_id=owner.owner_id.hex(),
                                     claimed_ms=owner.root.claim.claimed_ms,
                                     mine=owner.owner_key == self.me)

    # --- keeping claims alive --------------------------------------------------------------
    async def refresh(self, served: list[str]) -> None:
        """Re-sign this node's claims; re-store the owner's chain of every served name (this
        node's own records in it are re-signed: e.g. after a restart that forgot them)."""
        for name, claim in list(self._mine.items()):
            known = self._known.get(name)
            if known and all(c.owner_key != self.me for c in known.chain):
                del self._mine[name]         # lost a race, or the owner moved on: stop
                continue
            await self._restore(claim)
        for name in served:
            if name in self._mine:
                continue
            owner = self._known.get(name) or await self.owner(name)
            for record in owner.chain if owner else ():
                if record.owner_key == self.me and not record.claim.released:
                    self._mine[name] = compute_pb2.NameClaim()
                    self._mine[name].CopyFrom(record.claim)
                await self._restore(self._mine[name] if record.owner_key == self.me
                                    and name in self._mine else record.signed)

    async def _restore(self, record: mesh_pb2.SignedRecord | compute_pb2.NameClaim) -> None:
        """Re-sign one of this node's claims, or re-store another key's signed claim as is."""
        try:
            if isinstance(record, compute_pb2.NameClaim):
                await self._publish(record)
            else:
                await self.ctx.membership.publish(record)
        except MeshError as exc:          # expired: the owner is gone for longer than its TTL
            log.debug("re-storing a claim failed: %s", exc)

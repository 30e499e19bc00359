"""Function-name ownership: a deployed name belongs to the key that first claimed it.

Cloudflare Workers scopes a script name to an account; the mesh equivalent of the account is
the Ed25519 key of the node a deploy goes through. The first deploy of a name publishes a
signed ``fn-claim`` record (payload ``NameClaim``) at ``claim_key(name)``; one record per
owner lives there (the DHT keeps the newest per owner). These rules are pure functions, the
same on every peer, so peers that see the same claims agree on the owner:

* **Owner.** Root claims (no ``inherited_from``) are ranked by ``(claimed_ms, owner key)``:
  the earliest stamped claim wins, ties go to the lower key. The winner's transfer chain is
  followed (``transfer_to`` → the transferee's record with ``inherited_from``); a chain that
  ends in ``released`` voids that root and the next one is tried.
* **Store** (every DHT node, ``mesh.records`` store policy): a root claim is refused while a
  rival root that resolves to an owner is held, unless the newcomer ranks earlier *and* is
  fresh (claimed less than ``RACE_WINDOW_S`` ago). So two first deploys racing converge on
  the earliest stamped claim, while an established name cannot be taken with a backdated one.
* **Routing** (``filter_providers``): only provider records signed by the owner, plus the
  deploy carried in the owner's signed claim, serve a claimed name. An unclaimed name is
  served by TaskWorker registrations only: deploy records without a claim are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from mesh.identity import Identity, node_id_for
from mesh.records import record_key, register_store_policy, sign_record
from proto import compute_pb2, mesh_pb2

from .registry import Provider

KIND = "fn-claim"
RACE_WINDOW_S = 30.0      # how long a fresh claim can still lose to an earlier-stamped rival
MAX_HOPS = 16             # transfers followed before a chain is considered broken


def claim_key(name: str) -> bytes:
    """DHT key shared by every claim of ``name``."""
    return record_key(KIND, b"", name.encode())


def sign_claim(identity: Identity, claim: compute_pb2.NameClaim, *,
               ttl_s: float) -> mesh_pb2.SignedRecord:
    return sign_record(identity, KIND, claim.SerializeToString(),
                       name=claim.function.encode(), ttl_s=ttl_s)


@dataclass(frozen=True)
class Claim:
    """A decoded claim record (its signature was checked by the DHT layer)."""

    owner_key: bytes
    claim: compute_pb2.NameClaim
    signed: mesh_pb2.SignedRecord

    @property
    def rank(self) -> tuple[int, bytes]:
        return (self.claim.claimed_ms, self.owner_key)

    @property
    def root(self) -> bool:
        return not self.claim.inherited_from


@dataclass(frozen=True)
class Ownership:
    owner_key: bytes
    root: Claim                        # the winning root claim
    chain: tuple[Claim, ...]           # root first, then each transferee's record
    deploy: compute_pb2.ProviderRecord | None   # the owner's current deploy, if any

    @property
    def owner_id(self) -> bytes:
        return node_id_for(self.owner_key)


def decode_claim(signed: mesh_pb2.SignedRecord) -> Claim | None:
    """The claim in ``signed``, or None when it is not a well-formed claim of its name."""
    if signed.kind != KIND:
        return None
    claim = compute_pb2.NameClaim()
    try:
        claim.ParseFromString(signed.payload)
    except DecodeError:
        return None
    if (claim.function.encode() != signed.name or not claim.claimed_ms
            or claim.claimed_ms > signed.timestamp_ms
            or len(claim.transfer_to) not in (0, 32) or len(claim.inherited_from) not in (0, 32)):
        return None
    if claim.HasField("deploy") and (claim.deploy.function != claim.function
                                     or not claim.deploy.code_cid):
        return None
    return Claim(signed.owner_key, claim, signed)


def decode_claims(name: str, records: Iterable[mesh_pb2.SignedRecord]) -> list[Claim]:
    newest: dict[bytes, Claim] = {}
    for signed in records:
        claim = decode_claim(signed)
        if claim is None or claim.claim.function != name:
            continue
        held = newest.get(claim.owner_key)
        if held is None or signed.seq > held.signed.seq:
            newest[claim.owner_key] = claim
    return list(newest.values())


def _follow(root: Claim, by_owner: dict[bytes, Claim]) -> Ownership | None:
    chain = [root]
    current = root
    for _ in range(MAX_HOPS):
        if current.claim.released:
            return None
        target = current.claim.transfer_to
        if not target or target in {c.owner_key for c in chain}:
            owner = target or current.owner_key      # (handed back along the chain: stop)
            break
        record = by_owner.get(target)
        if record is None or record.claim.inherited_from != current.owner_key:
            owner = target                           # the transferee has not published yet
            break
        chain.append(record)
        current = record
    else:
        return None
    deploy = next((c.claim.deploy for c in reversed(chain) if c.claim.HasField("deploy")), None)
    return Ownership(owner, root, tuple(chain), deploy)


def resolve(claims: Iterable[Claim]) -> Ownership | None:
    """Who owns the name these claims are about (None: nobody)."""
    claims = list(claims)
    by_owner = {c.owner_key: c for c in claims}
    for root in sorted((c for c in claims if c.root), key=lambda c: c.rank):
        found = _follow(root, by_owner)
        if found is not None:
            return found
    return None


def store_policy(new: mesh_pb2.SignedRecord, held: list[mesh_pb2.SignedRecord],
                 at_ms: int) -> str | None:
    """Refusal reason for storing claim ``new`` next to the claims ``held`` here, or None."""
    claim = decode_claim(new)
    if claim is None:
        return "malformed function-name claim"
    if not claim.root or claim.claim.released:
        return None                   # a transferee's record or a release competes with no one
    current = resolve(decode_claims(claim.claim.function, held))
    if current is None or claim.owner_key in (current.owner_key, current.root.owner_key):
        return None                   # free, or the owner (or the root it hangs on) re-signs
    if claim.rank < current.root.rank and claim.claim.claimed_ms >= at_ms - RACE_WINDOW_S * 1e3:
        return None                   # a race between first claims: the earliest stamp wins
    return (f"function name {claim.claim.function!r} is owned by "
            f"{current.owner_id.hex()[:16]}")


def filter_providers(name: str, providers: list[Provider], owner: Ownership | None,
                     ) -> list[Provider]:
    """The provider records that may serve ``name`` given its owner (see module doc)."""
    if owner is None:
        return [p for p in providers if not p.deployed]
    owner_id = owner.owner_id
    kept = [p for p in providers if p.owner_id == owner_id]
    if owner.deploy is not None:
        deploy = compute_pb2.ProviderRecord()
        deploy.CopyFrom(owner.deploy)
        deploy.node_id = owner_id            # the deployer is the owner, whoever re-stored it
        kept.append(Provider(deploy, owner_id, owner.chain[-1].signed.seq))
    return kept


register_store_policy(KIND, store_policy)

__all__ = ["KIND", "RACE_WINDOW_S", "Claim", "Ownership", "claim_key", "decode_claim",
           "decode_claims", "filter_providers", "resolve", "sign_claim", "store_policy"]

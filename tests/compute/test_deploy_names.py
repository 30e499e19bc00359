"""compute.names / compute.owners: who owns a function name, on store and on read (units; the
adversarial runs on real nodes are in test_deploy_ownership.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from compute import names
from compute.names import (
    decode_claims,
    filter_providers,
    resolve,
    sign_claim,
    store_policy,
)
from compute.owners import NameOwners
from compute.registry import decode_providers, sign_provider
from mesh.dht.storage import RecordStorage
from mesh.errors import RecordError
from mesh.identity import Identity
from mesh.records import now_ms
from proto import compute_pb2, mesh_pb2

A, B, C, R = (Identity.generate() for _ in range(4))


def claim(who: Identity, at: int, fn: str = "f", ttl: float = 60, **kw: Any
          ) -> mesh_pb2.SignedRecord:
    return sign_claim(who, compute_pb2.NameClaim(function=fn, claimed_ms=at, **kw), ttl_s=ttl)


def owner_of(*records: mesh_pb2.SignedRecord) -> bytes | None:
    found = resolve(decode_claims("f", records))
    return found.owner_key if found else None


def test_earliest_claim_wins_ties_go_to_the_lower_key_and_releases_step_aside() -> None:
    t = now_ms() - 1000
    assert owner_of(claim(A, t), claim(B, t + 1)) == A.public_key
    assert owner_of(claim(B, t + 1), claim(A, t)) == A.public_key       # order does not matter
    low, high = sorted((A, B), key=lambda i: i.public_key)
    assert owner_of(claim(high, t), claim(low, t)) == low.public_key
    assert owner_of(claim(A, t, released=True), claim(B, t + 1)) == B.public_key
    assert owner_of(claim(A, t, released=True)) is None
    assert owner_of() is None


def test_malformed_claims_count_for_nothing() -> None:
    t = now_ms() - 1000
    wrong_name = claim(R, t - 500, fn="g")
    wrong_name.name = b"f"                               # (signature no longer matches either)
    future = claim(R, now_ms() + 10_000_000)             # claimed after it was signed
    bad_key = claim(R, t - 500, transfer_to=b"short")
    assert owner_of(wrong_name, future, bad_key, claim(A, t)) == A.public_key


def test_transfers_follow_the_chain_and_a_released_chain_frees_the_name() -> None:
    t = now_ms() - 1000
    root = claim(A, t, transfer_to=B.public_key)
    assert owner_of(root) == B.public_key                # B has not published anything yet
    onward = claim(B, t, inherited_from=A.public_key, transfer_to=C.public_key)
    assert owner_of(root, onward) == C.public_key
    back = claim(B, t, inherited_from=A.public_key, transfer_to=A.public_key)
    assert owner_of(root, back) == A.public_key          # handed back: no endless loop
    # A transferee's record alone (no root pointing at it) owns nothing.
    assert owner_of(claim(R, t - 1, inherited_from=A.public_key)) is None
    released = claim(B, t, inherited_from=A.public_key, released=True)
    assert owner_of(root, released, claim(C, t + 5)) == C.public_key


def test_store_refuses_a_rival_of_an_established_owner_even_when_backdated() -> None:
    now = now_ms()
    established = [claim(A, now - 3_600_000)]
    assert store_policy(claim(B, now), established, now) is not None               # later
    assert store_policy(claim(R, now - 7_200_000), established, now) is not None   # backdated
    assert store_policy(claim(R, 1), established, now) is not None
    assert store_policy(claim(A, now - 3_600_000), [], now) is None                # first
    assert store_policy(claim(R, now, released=True), established, now) is None    # no rival
    assert store_policy(claim(R, now, inherited_from=A.public_key), established, now) is None


def test_store_lets_the_earlier_of_two_racing_first_claims_in() -> None:
    now = now_ms()
    racing = [claim(B, now - 2_000)]                     # fresh: inside the race window
    assert store_policy(claim(A, now - 3_000), racing, now) is None
    assert store_policy(claim(A, now - 1_000), racing, now) is not None             # later
    stale = now - int(names.RACE_WINDOW_S * 1000) - 5_000
    assert store_policy(claim(A, stale), [claim(B, stale + 1)], now) is not None
    # Long after the race, the winner still re-signs its claim where the loser's is held too,
    # and a root that handed the name on is re-signed too; the loser's refresh is refused.
    held = [claim(A, stale), claim(B, stale + 1)]
    assert store_policy(claim(A, stale), held, now) is None
    assert store_policy(claim(B, stale + 1), held, now) is not None
    handed = [claim(A, stale, transfer_to=C.public_key), claim(B, stale + 1)]
    assert store_policy(claim(A, stale, transfer_to=C.public_key), handed, now) is None


def test_dht_storage_applies_the_policy() -> None:
    store = RecordStorage()
    key = names.claim_key("f")
    now = now_ms()
    assert store.put(key, claim(A, now - 3_600_000))
    with pytest.raises(RecordError, match="owned by"):
        store.put(key, claim(R, 5))
    assert store.put(key, claim(A, now - 3_600_000))     # the owner's refresh (newer seq)
    assert [r.owner_key for r in store.records(key)] == [A.public_key]


def provider(who: Identity, fn: str = "f", **kw: Any) -> mesh_pb2.SignedRecord:
    return sign_provider(who, compute_pb2.ProviderRecord(
        function=fn, node_id=who.node_id, address="127.0.0.1:1", **kw), ttl_s=60)


def test_routing_keeps_only_what_the_owner_signed() -> None:
    t = now_ms() - 1000
    good = provider(A, code_cid="bGOOD", deploy_seq=100)
    forged = provider(R, code_cid="bEVIL", deploy_seq=10**15)
    replica = provider(C, code_cid="bEVIL", deploy_seq=10**15)   # looks like A's, is not
    other_local = provider(B, deploy_seq=10**15)                 # a TaskWorker of B
    providers = decode_providers("f", [good, forged, replica, other_local])
    # No claim: deploys are ignored (fail closed), TaskWorker registrations serve as before.
    assert [p.owner_id for p in filter_providers("f", providers, None)] == [B.node_id]
    owner = resolve(decode_claims("f", [claim(A, t)]))
    kept = filter_providers("f", providers, owner)
    assert [p.record.code_cid for p in kept] == ["bGOOD"]
    # The deploy inside the owner's claim serves too, credited to the owner whoever stored it.
    deploy = compute_pb2.ProviderRecord(function="f", node_id=R.node_id, code_cid="bNEW",
                                        deploy_seq=200)
    owner = resolve(decode_claims("f", [claim(A, t, deploy=deploy)]))
    kept = filter_providers("f", providers, owner)
    assert {p.record.code_cid for p in kept} == {"bGOOD", "bNEW"}
    assert all(p.record.node_id == A.node_id for p in kept)


class FakeMembership:
    def __init__(self) -> None:
        self.records: list[mesh_pb2.SignedRecord] = []
        self.published: list[mesh_pb2.SignedRecord] = []

    async def fetch(self, key: bytes) -> list[mesh_pb2.SignedRecord]:
        return list(self.records)

    async def publish(self, record: mesh_pb2.SignedRecord) -> int:
        self.published.append(record)
        return 1


async def test_the_last_known_owner_bridges_a_lost_claim_and_an_earlier_claim_wins() -> None:
    membership = FakeMembership()
    owners = NameOwners(SimpleNamespace(membership=membership, identity=C),  # type: ignore[arg-type]
                        ttl_s=60)
    t = now_ms() - 10_000
    membership.records = [claim(A, t)]
    assert (await owners.owner("f")).owner_key == A.public_key  # type: ignore[union-attr]
    membership.records = []                                  # lost (or withheld)
    assert (await owners.owner("f")).owner_key == A.public_key  # type: ignore[union-attr]
    # A claim stamped earlier that this node had missed (a race winner, or the established
    # owner it did not see) wins as soon as it is seen: every node converges on it.
    membership.records = [claim(A, t), claim(B, t - 1)]
    assert (await owners.owner("f")).owner_key == B.public_key  # type: ignore[union-attr]
    # The owner's own release is honoured (and not bridged).
    membership.records = [claim(A, t), claim(B, t - 1, released=True)]
    assert (await owners.owner("f")).owner_key == A.public_key  # type: ignore[union-attr]
    membership.records = [claim(A, t, released=True)]
    assert await owners.owner("f") is None


async def test_serving_nodes_keep_the_owners_chain_alive_and_owners_re_sign_theirs() -> None:
    membership = FakeMembership()
    t = now_ms() - 10_000
    root = claim(A, t, transfer_to=B.public_key)
    membership.records = [root]
    # A node that serves the name re-stores the owner's signed record verbatim.
    server = NameOwners(SimpleNamespace(membership=membership, identity=C),  # type: ignore[arg-type]
                        ttl_s=60)
    await server.refresh(["f"])
    assert membership.published == [root]
    # The owner (restarted: it forgot its claims) re-signs its own record: same claim, newer
    # signature, so the name outlives the first record's TTL.
    membership.published.clear()
    owner = NameOwners(SimpleNamespace(membership=membership, identity=A),  # type: ignore[arg-type]
                       ttl_s=60)
    await asyncio.sleep(0.01)                  # (a re-signature gets a later ms timestamp)
    await owner.refresh(["f"])
    (fresh,) = membership.published
    assert fresh.owner_key == A.public_key and fresh.seq > root.seq
    assert decode_claims("f", [fresh])[0].claim == decode_claims("f", [root])[0].claim


def test_a_calls_deployer_is_trusted_only_when_the_owner_deployed_that_code() -> None:
    from compute.owners import trusted_deployer

    t = now_ms() - 1000
    deploy = compute_pb2.ProviderRecord(function="f", code_cid="bOWN", deploy_seq=5)
    owner = resolve(decode_claims("f", [claim(A, t, deploy=deploy)]))
    forged = decode_providers("f", [provider(R, code_cid="bEVIL", deploy_seq=9)])
    providers = filter_providers("f", forged, owner)
    assert trusted_deployer(providers, "bOWN", A.node_id) == A.node_id
    assert trusted_deployer(providers, "bEVIL", A.node_id) == b""     # not A's code
    assert trusted_deployer(providers, "bEVIL", R.node_id) == b""     # R owns nothing here
    assert trusted_deployer(providers, "bOWN", C.node_id) == b""      # C did not deploy it
    assert trusted_deployer(providers, "bOWN", b"") == b""


async def test_a_deploy_does_not_take_over_a_name_other_nodes_taskworkers_serve() -> None:
    from mesh.errors import PermissionDeniedError

    membership = FakeMembership()
    owners = NameOwners(SimpleNamespace(membership=membership, identity=A),  # type: ignore[arg-type]
                        ttl_s=60)
    membership.records = [provider(B)]                   # B's TaskWorker registered "f"
    with pytest.raises(PermissionDeniedError, match="TaskWorkers of 1 other node"):
        await owners.claim("f")
    assert membership.published == []
    membership.records = [provider(A)]                   # only A's own: A may claim it
    await owners.claim("f")
    (published,) = membership.published
    assert published.owner_key == A.public_key and published.kind == names.KIND


async def test_a_transferee_continues_the_chain_and_cannot_hand_the_name_back() -> None:
    from mesh.errors import InvalidArgumentError

    membership = FakeMembership()
    t = now_ms() - 10_000
    membership.records = [claim(A, t, transfer_to=B.public_key)]
    owners = NameOwners(SimpleNamespace(membership=membership, identity=B),  # type: ignore[arg-type]
                        ttl_s=60)
    await owners.deployed("f", compute_pb2.ProviderRecord(function="f", code_cid="bB",
                                                          deploy_seq=9))
    (record,) = membership.published
    membership.records.append(record)
    owner = resolve(decode_claims("f", membership.records))
    assert owner is not None and owner.owner_key == B.public_key
    assert owner.deploy is not None and owner.deploy.code_cid == "bB"
    with pytest.raises(InvalidArgumentError, match="handed back"):
        await owners.release("f", transfer_to=A.public_key)

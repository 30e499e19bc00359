"""What a file's own writer can make a replica compute (storage/versions/vset.py, grants.py).

Any mesh member owns the files it makes, so it can sign any history for them and push it to
any storage node. Counted in operations, not seconds: before, each record of a push recomputed
the file's whole valid set (a chain of n records: O(n^2) authorizations; 3,000 took a replica's
event loop 6-10 s), every Digest compared every pair of leaves (3,000 leaves: 4.5 M comparisons,
4-12 s per Digest), and every authorization scanned every grant.
"""

from __future__ import annotations

from typing import Any

import pytest

from mesh.identity import Identity
from storage.versions import vset as vset_module
from storage.versions.grants import FileWriters
from storage.versions.records import new_binding, sign_grant
from storage.versions.vset import MAX_HEADS, VersionSet
from tests.support.version_floods import chain, leaves


def _count(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    calls = [0]
    real = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_a_long_chain_costs_a_push_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    binding, records = chain(Identity.generate(), 1500)
    authorized = _count(monkeypatch, FileWriters, "authorize")
    vs = VersionSet(binding.file_id)
    res = vs.add_many([], reversed(records))
    assert res.accepted == 1500 and not res.refused
    assert authorized[0] <= 3 * 1500           # was ~n^2/2 (1.1 M)
    assert vs.heads()[0].record == records[-1]


def test_many_leaves_cost_a_digest_bounded_work_once(monkeypatch: pytest.MonkeyPatch) -> None:
    binding, grants, records = leaves(Identity.generate(), 1000)
    vs = VersionSet(binding.file_id)
    assert vs.add_many(grants, records).accepted == 1 + 2000
    compared = _count(monkeypatch, vset_module, "dominates")
    heads = vs.heads()
    assert len(heads) == MAX_HEADS              # the heaviest leaves, all incomparable
    assert compared[0] <= MAX_HEADS ** 2        # was 1000^2 (and per Digest)
    for _ in range(10):
        assert vs.heads() == heads
    assert compared[0] <= MAX_HEADS ** 2        # kept until the set changes


def test_heads_are_exact_among_the_kept_leaves() -> None:
    """A dominated leaf is lighter than the leaf dominating it, so capping never makes a
    dominated version a head; an honest file (few leaves) is unaffected."""
    owner = Identity.generate()
    binding, records = chain(owner, 5)
    vs = VersionSet(binding.file_id)
    vs.add_many([], records)
    assert [h.record for h in vs.heads()] == [records[-1]]
    _, grants, more = leaves(owner, 3)
    other = VersionSet(more[0].file.file_id)
    other.add_many(grants, more)
    assert len(other.heads()) == 3


def test_grant_state_is_found_without_scanning_every_grant() -> None:
    owner = Identity.generate()
    binding = new_binding(owner.public_key)
    fw = FileWriters(binding.file_id)
    key = Identity.generate().public_key
    fw.add_grant(sign_grant(owner, binding, key, seq=5))
    fw.add_grant(sign_grant(owner, binding, key, revoke=True, seq=5))   # a tie: revoke wins
    fw.add_grant(sign_grant(owner, binding, key, seq=4))                # older: loses
    state = fw.grant_state(key)
    assert state is not None and state.revoke and state.seq == 5
    fw.add_grant(sign_grant(owner, binding, key, seq=6))
    state = fw.grant_state(key)
    assert state is not None and not state.revoke and state.seq == 6
    assert fw.grant_state(Identity.generate().public_key) is None

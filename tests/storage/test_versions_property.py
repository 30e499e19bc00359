"""Property: random revise/sync/crash interleavings on three on-disk replicas converge.

Each replica has its own writer (owner, and two granted writers), as a user's key lives on one
node. Operations: a writer revises at its replica (on all heads, or on one head only, which makes
conflicts); a one-way or two-way sync between two replicas (a sync may be cut short after a
prefix of the records, like a dropped connection); a crash (the replica reopens from disk); an
attacker pushes a record with a bad signature. After a final full sync all replicas hold the same
valid records, grants and heads; every version ever created is there (nothing lost); no forged
record is anywhere.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.identity import Identity
from storage.cid import cid_for
from storage.versions.records import new_binding, record_id, sign_grant
from storage.versions.store import VersionStore

WRITERS = [Identity.from_seed(b"p-owner"), Identity.from_seed(b"p-alice"),
           Identity.from_seed(b"p-bob")]
MALLORY = Identity.from_seed(b"p-mallory")

op = st.one_of(
    st.tuples(st.just("revise"), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2), st.booleans(),
              st.integers(0, 20)),
    st.tuples(st.just("crash"), st.integers(0, 2)),
    st.tuples(st.just("forge"), st.integers(0, 2)),
)


def push(src: VersionStore, dst: VersionStore, file_id: bytes, limit: int | None = None) -> None:
    vs = src.get(file_id)
    records = [v.record for v in vs.records()]       # parents before children
    if limit is not None:
        records = records[:limit]
    dst.ingest(file_id, vs.grants(), records)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(op, min_size=1, max_size=30))
def test_replicas_converge(tmp_path: Path, ops: list[tuple[object, ...]]) -> None:
    # one fresh folder per example under tmp_path (removing folders is slow on some disks)
    if True:
        tmp = tempfile.mkdtemp(dir=tmp_path)
        dirs = [Path(tmp) / f"r{i}" for i in range(3)]
        stores = [VersionStore(d, durable=False) for d in dirs]
        owner = WRITERS[0]
        binding = new_binding(owner.public_key)
        fid = binding.file_id
        genesis = stores[0].revise(owner, binding, cid_for(b"genesis"))
        for w in WRITERS[1:]:
            stores[0].add_grant(sign_grant(owner, binding, w.public_key))
        for s in stores[1:]:
            push(stores[0], s, fid)
        created = {record_id(genesis)}
        forged: set[bytes] = set()
        n = 0
        for o in ops:
            if o[0] == "revise":
                i, all_heads = int(o[1]), bool(o[2])  # type: ignore[call-overload]
                heads = [h.id for h in stores[i].get(fid).heads()]
                parents = heads if all_heads else heads[-1:]
                n += 1
                rec = stores[i].revise(WRITERS[i], binding, cid_for(b"%d" % n), parents)
                created.add(record_id(rec))
            elif o[0] == "sync":
                a, b, both, cut = (int(o[1]), int(o[2]), bool(o[3]),  # type: ignore[call-overload]
                                   int(o[4]))  # type: ignore[call-overload]
                push(stores[a], stores[b], fid, cut if cut < 20 else None)
                if both:
                    push(stores[b], stores[a], fid)
            elif o[0] == "crash":
                i = int(o[1])  # type: ignore[call-overload]
                stores[i].close()
                stores[i] = VersionStore(dirs[i], durable=False)
            else:
                i = int(o[1])  # type: ignore[call-overload]
                vs = stores[i].get(fid)
                good = stores[i].revise(WRITERS[i], binding, cid_for(b"tmp"), None)
                created.add(record_id(good))
                bad = type(good)()
                bad.CopyFrom(good)
                bad.cid = cid_for(b"forged")
                bad.time_ms += 1
                forged.add(record_id(bad))
                res = stores[(i + 1) % 3].ingest(fid, [], [bad])
                assert res.accepted == 0 and len(res.refused) == 1
                assert vs is stores[i].get(fid)
        # final anti-entropy round: everyone pushes to everyone, twice
        for _ in range(2):
            for a in range(3):
                for b in range(3):
                    if a != b:
                        push(stores[a], stores[b], fid)
        prints = {s.get(fid).fingerprint() for s in stores}
        assert len(prints) == 1
        heads = {tuple(h.id for h in s.get(fid).heads()) for s in stores}
        assert len(heads) == 1
        valid = stores[0].get(fid).valid_ids()
        assert created <= valid                        # nothing lost
        for s in stores:
            assert not (forged & s.get(fid).record_ids())
            assert not s.get(fid).equivocations()      # honest writers, even across crashes
        # a merge revise resolves any conflict everywhere
        stores[1].revise(WRITERS[1], binding, cid_for(b"merge"))
        for b in (0, 2):
            push(stores[1], stores[b], fid)
        assert {len(s.get(fid).heads()) for s in stores} == {1}
        for s in stores:
            s.close()

"""A large batch's signatures are checked on worker threads (storage/versions/precheck.py),
and the set's answers are exactly those of checking inline: same accepted, duplicate and
refused records (ids, errors, order), same valid records and heads."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from mesh.identity import Identity
from proto import versions_pb2
from storage.cid import cid_for
from storage.versions import batch as batch_mod
from storage.versions import precheck
from storage.versions import records as records_mod
from storage.versions import vset as vset_mod
from storage.versions.records import (
    encode,
    now_ms,
    record_id,
    sign_grant,
    sign_version,
    writer_id,
)
from storage.versions.store import VersionStore
from storage.versions.vset import AddResult, VersionSet
from tests.support.version_floods import chain


def _mixed() -> tuple[bytes, list[bytes], list[bytes]]:
    """A batch with every kind of refusal among valid records, shuffled."""
    owner, writer, stranger = Identity.generate(), Identity.generate(), Identity.generate()
    binding, recs = chain(owner, 40)
    grant = sign_grant(owner, binding, writer.public_key, seq=1)
    forged_grant = sign_grant(stranger, binding, writer.public_key, seq=2)
    o, w = writer_id(owner.public_key), writer_id(writer.public_key)
    cid = cid_for(b"x")
    by_writer = sign_version(writer, binding, cid, {o: 10, w: 1}, [record_id(recs[9])])
    forged = versions_pb2.VersionRecord()
    forged.CopyFrom(recs[20])
    forged.time_ms += 1                                  # signature no longer verifies
    future = sign_version(owner, binding, cid, {o: 41}, [record_id(recs[-1])],
                          time_ms=now_ms() + 10 * 60_000)
    unauthorized = sign_version(stranger, binding, cid, {o: 5, writer_id(stranger.public_key):
                                                         1}, [record_id(recs[4])])
    orphan = sign_version(owner, binding, cid, {o: 99}, [bytes(32)])
    records = [encode(r) for r in recs[::-1]] + [encode(r) for r in (
        by_writer, forged, future, unauthorized, orphan, recs[3])] + [b"\xff junk"]
    return binding.file_id, [encode(grant), b"junk", encode(forged_grant)], records


def _summary(vs: VersionSet, res: AddResult) -> tuple[Any, ...]:
    return (res.accepted, res.duplicate,
            [(vid, type(exc).__name__, str(exc)) for vid, exc in res.refused],
            vs.valid_ids(), [h.id for h in vs.heads()], vs.grant_ids())


async def test_checked_off_the_loop_the_answers_are_the_inline_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fid, grants, records = _mixed()
    at = now_ms()
    inline = VersionSet(fid)
    want = _summary(inline, inline.add_bytes(grants, records, at_ms=at))
    assert want[0] == 42 and want[1] == 1 and len(want[2]) == 7     # sanity: all kinds there
    for chunk in (1, 3, 256):
        monkeypatch.setattr(precheck, "INLINE", 0)
        monkeypatch.setattr(precheck, "CHUNK", chunk)
        batch = await precheck.prepare(grants, records, at)
        assert len(batch.checked) == len(batch.grants) + len(batch.records) - 1  # one twice
        vs = VersionSet(fid)
        assert _summary(vs, vs.add_prepared(batch)) == want


async def test_a_large_batch_is_verified_off_the_loop_a_small_one_inline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted: no signature check of a large batch runs on the event loop's thread, and the
    set does not check them again; a Revise-sized batch is checked inline (no thread hop)."""
    loop_thread = threading.get_ident()
    on_loop, off_loop = [0], [0]
    real = records_mod.verify_signature

    def counted(*args: Any) -> bool:
        (on_loop if threading.get_ident() == loop_thread else off_loop)[0] += 1
        return bool(real(*args))

    monkeypatch.setattr(records_mod, "verify_signature", counted)
    binding, recs = chain(Identity.generate(), 600)
    raw = [encode(r) for r in recs]
    vs = VersionSet(binding.file_id)
    assert vs.add_prepared(await precheck.prepare([], raw)).accepted == 600
    assert (on_loop[0], off_loop[0]) == (0, 600)

    small = VersionSet(binding.file_id)
    batch = await precheck.prepare([], raw[:1])
    assert not batch.checked                              # left to the set, inline
    assert small.add_prepared(batch).accepted == 1
    assert (on_loop[0], off_loop[0]) == (1, 600)
    assert vset_mod.verify_version is records_mod.verify_version


async def test_a_stepwise_ingest_stores_what_an_inline_one_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """store.ingest_stepwise (a peer's Push) gives the loop turns between steps and ends with
    the set and the disk of an inline ingest."""
    fid, grants, records = _mixed()
    at = now_ms()
    inline = VersionStore(tmp_path / "inline", durable=False)
    want = _summary(inline.get(fid), inline.ingest_prepared(
        fid, precheck.prepare_now(grants, records, at)))
    stepped = VersionStore(tmp_path / "stepped", durable=False)
    batch = await precheck.prepare(grants, records, at)
    turns = [0]
    done = asyncio.Event()

    async def other() -> None:               # another coroutine on the same loop
        while not done.is_set():
            turns[0] += 1
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(other())
        monkeypatch.setattr(batch_mod, "STEP", 3)
        res = await stepped.ingest_stepwise(fid, batch)
        done.set()
    assert _summary(stepped.get(fid), res) == want
    assert turns[0] >= len(records) // 3 - 1
    for store in (inline, stepped):
        store.close()
    reopened = [VersionStore(tmp_path / n, durable=False) for n in ("inline", "stepped")]
    assert reopened[0].get(fid).fingerprint() == reopened[1].get(fid).fingerprint()
    for store in reopened:
        store.close()


async def test_a_file_s_first_load_is_verified_off_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a restart, the first peer call naming a file loads its set from disk: its
    records' signatures are checked on worker threads (counted), and the set is get()'s."""
    fid, grants, records = _mixed()
    store = VersionStore(tmp_path, durable=False)
    store.ingest_bytes(fid, grants, records)
    store.close()
    loop_thread = threading.get_ident()
    on_loop = [0]
    real = records_mod.verify_signature

    def counted(*args: Any) -> bool:
        on_loop[0] += threading.get_ident() == loop_thread
        return bool(real(*args))

    monkeypatch.setattr(records_mod, "verify_signature", counted)
    loaded, fresh = VersionStore(tmp_path, durable=False), VersionStore(tmp_path, durable=False)
    await loaded.load(fid)
    assert on_loop[0] == 0
    assert loaded.get(fid).fingerprint() == fresh.get(fid).fingerprint()
    assert on_loop[0] > 0                     # get()'s own load checks them inline
    assert [h.id for h in loaded.get(fid).heads()] == [h.id for h in fresh.get(fid).heads()]
    loaded.close()
    fresh.close()

"""A mesh member holding an older manifest of a file cannot have a holder drop the fragment
copy the newest manifest records there (storage/delete_check.py), on real node processes.

The two manifests come from a real one-stripe Push around a frozen holder: the Push signs an
early manifest naming the planned holders, gives the frozen one up and signs a corrected one
naming the spare that took its fragment. The frozen holder, a manifest replica too, stores the
early manifest when it resumes (its given-up StoreBatch runs to the end). An attacker, a fresh
key with a sealed channel like any member's, reads that manifest from it and sends it to the
spare in a DeleteFragment: the old manifest names the fragment and records it elsewhere.

The frozen node must be one the pusher already holds a channel session with, i.e. one that
answered a store of the warm-up Push: a first call to a peer starts with the handshake, which
a frozen peer cannot answer, so the tail gives the StoreBatch up before it was ever sent and no
late store can land (about one run in twenty froze a node the warm-up had not reached). Being
recorded in the warm-up's manifest also means the pusher had its answer in time, so it does
not suspect it (storage/placement.py ranks a suspect last: the Push would skip it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mesh.channel import ChannelPool
from mesh.errors import PermissionDeniedError
from mesh.identity import Identity
from proto import taskworker_pb2
from storage.cid import cid_for
from storage.manifest import Manifest, manifest_key, verify_manifest
from storage.peer import StorageClient
from storage.placement import placement_key
from tests.support.nodes import NodeCluster
from tests.system.test_storage import Stub, _get_stream, _ids


def _ranked(ids: list[str], key: bytes) -> list[int]:
    k = int.from_bytes(key, "big")
    return sorted(range(len(ids)), key=lambda i: int(ids[i], 16) ^ k)


def _pick(ids: list[str], among: set[int]) -> tuple[bytes, int]:
    """A one-stripe file and a node of ``among`` other than the pusher (0) that is both a
    fragment holder (of the 6 closest to the placement key) and a manifest replica (3 closest)."""
    assert among - {0}
    while True:
        data = os.urandom(1_000_000)
        cid = cid_for(data)
        both = (set(_ranked(ids, placement_key("cid", cid))[:6])
                & set(_ranked(ids, manifest_key(cid))[:3]) & among) - {0}
        if both:
            return data, min(both)


async def _manifests(client: StorageClient, cid: str, file_id: str) -> list[Manifest]:
    return [m for m in (verify_manifest(s, cid) for s in await client.fetch_manifests(cid))
            if m.file_id == file_id]


async def _recorded_holders(client: Callable[[int], StorageClient], ids: list[str],
                            r: taskworker_pb2.PushResponse) -> set[int]:
    """The nodes a Push's final manifest records as fragment holders: each answered its store
    in time."""
    found = [m for i in range(len(ids)) for m in await _manifests(client(i), r.cid, r.file_id)]
    newest = max(found, key=lambda m: m.body.created_ms)
    holders = (newest.holder_of(0, i) for i in range(len(newest.body.stripes[0].fragments)))
    return {ids.index(h.hex()) for h in holders if h is not None}


async def test_an_early_manifest_cannot_delete_the_spare_s_recorded_fragment(
        tmp_path: Path) -> None:
    extra = ["--sweep-interval", "600", "--late-copy-delay", "2"]
    async with NodeCluster(tmp_path, 7, extra=extra) as cluster:
        ids = await _ids(cluster)
        stub = cluster.stub(0, Stub)
        pool = ChannelPool(Identity.generate())      # the attacker: any key may open a channel

        def client(i: int) -> StorageClient:
            return StorageClient.remote(cluster.nodes[i].member(pool, bytes.fromhex(ids[i])))

        try:
            warm = await stub.Push(taskworker_pb2.PushRequest(file_data=os.urandom(300_000)),
                                   timeout=60)
            # freeze only a node the pusher has a session with (module docstring)
            data, frozen = _pick(ids, await _recorded_holders(client, ids, warm))
            proc = cluster.nodes[frozen].proc
            assert proc is not None
            os.killpg(proc.pid, signal.SIGSTOP)
            try:
                r = await stub.Push(taskworker_pb2.PushRequest(file_data=data), timeout=20)
            finally:
                os.killpg(proc.pid, signal.SIGCONT)
            # the given-up StoreBatch lands: the frozen node now keeps the early manifest
            deadline = time.monotonic() + 60
            while not (early_found := await _manifests(client(frozen), r.cid, r.file_id)):
                assert time.monotonic() < deadline, "the late manifest store never landed"
                await asyncio.sleep(0.2)
            early = early_found[0]
            found = [await _manifests(client(i), r.cid, r.file_id) for i in range(7)
                     if i != frozen]
            newest = max((m for ms in found for m in ms), key=lambda m: m.body.created_ms)
            assert early.body.created_ms < newest.body.created_ms
            me = bytes.fromhex(ids[frozen])
            slot = next(i for i in range(6) if early.holder_of(0, i) == me)
            spare_id = newest.holder_of(0, slot)
            assert spare_id is not None and spare_id != me
            spare = ids.index(spare_id.hex())
            digest = bytes(newest.body.stripes[0].fragments[slot].hash)
            assert early.body.stripes[0].fragments[slot].hash == digest

            with pytest.raises(PermissionDeniedError, match="at least as new"):
                await client(spare).delete_fragment(digest, r.file_id, early.signed)
            assert await client(spare).has_fragments([digest], deep=True) == [True]
            st = await stub.Stat(taskworker_pb2.StatRequest(file_id=r.cid))
            assert st.health == "healthy" and len({f.holder for f in st.fragments}) == 6
            assert (await _get_stream(stub, r.cid))[1] == data
        finally:
            await pool.close()

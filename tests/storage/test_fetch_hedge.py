"""Manifest reads are hedged: the closest replica is asked alone first; the others only when
it is slow, down or does not hold the manifest (storage/fetch.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from proto import storage_pb2
from storage.files import FileStore
from storage.manifest import manifest_key
from storage.peer import StorageClient
from tests.storage.test_files import FakeNetwork


class _Watched:
    """A StorageClient whose fetch_manifests is recorded, and delayed or emptied on demand."""

    def __init__(self, inner: StorageClient, net: WatchedNetwork, node_id: bytes) -> None:
        self._inner, self._net, self._id = inner, net, node_id

    async def fetch_manifests(self, cid: str) -> list[storage_pb2.SignedManifest]:
        self._net.asked.append(self._id)
        await asyncio.sleep(self._net.delay.get(self._id, 0.0))
        if self._id in self._net.empty:
            return []
        return await self._inner.fetch_manifests(cid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class WatchedNetwork(FakeNetwork):
    def __init__(self, root: Path, n: int) -> None:
        super().__init__(root, n)
        self.asked: list[bytes] = []
        self.delay: dict[bytes, float] = {}
        self.empty: set[bytes] = set()

    async def client(self, node_id: bytes) -> StorageClient:
        inner = await super().client(node_id)
        return _Watched(inner, self, node_id)  # type: ignore[return-value]


async def _setup(tmp_path: Path) -> tuple[WatchedNetwork, str, list[bytes]]:
    net = WatchedNetwork(tmp_path, 6)
    pushed = await FileStore(net).push_bytes(os.urandom(3000), nacl.signing.SigningKey.generate(),
                                             FileStore(net).defaults.__class__(public=True))
    replicas = await net.closest(manifest_key(pushed.cid), FileStore(net).defaults.m + 1)
    reader = next(x for x in net.handlers if x not in replicas)
    net.self_id = reader                   # read from a node that holds no manifest
    net.asked.clear()
    return net, pushed.cid, replicas


async def test_a_prompt_closest_replica_is_the_only_one_asked(tmp_path: Path) -> None:
    net, cid, replicas = await _setup(tmp_path)
    found = await FileStore(net).fetch_manifests(cid, lambda m: True)
    assert [m.cid for m in found] == [cid]
    assert net.asked == [replicas[0]]


@pytest.mark.parametrize("trouble", ["stuck", "empty", "down"])
async def test_the_others_are_asked_when_the_closest_fails_to_answer(tmp_path: Path,
                                                                     trouble: str) -> None:
    net, cid, replicas = await _setup(tmp_path)
    first = replicas[0]
    if trouble == "stuck":
        net.delay[first] = 60.0            # never answers within the test
    elif trouble == "empty":
        net.empty.add(first)               # a lagging replica without the manifest
    else:
        net.down.add(first)                # membership dropped it: the next is the closest
    async with asyncio.timeout(10):        # far below the stuck replica's 60 s
        found = await FileStore(net).fetch_manifests(cid, lambda m: True)
    assert [m.cid for m in found] == [cid]
    if trouble == "down":                  # (the reader may now be among the closest: it
        remote = [x for x in net.asked if x != net.self_id]   # looks in its own store first)
        assert remote == [replicas[1]]
    else:
        assert net.asked[0] == first and set(net.asked[1:]) == set(replicas[1:])


async def test_a_grant_builds_on_the_newest_manifest_even_if_the_closest_replica_lags(
        tmp_path: Path) -> None:
    net = WatchedNetwork(tmp_path, 6)
    alice, bob, carol = (nacl.signing.SigningKey.generate() for _ in range(3))
    pushed = await FileStore(net).push_bytes(b"secret " * 300, alice,
                                             FileStore(net).defaults.__class__())
    replicas = await net.closest(manifest_key(pushed.cid), FileStore(net).defaults.m + 1)
    net.self_id = next(x for x in net.handlers if x not in replicas)   # no local copy
    net.down.add(replicas[0])              # the closest replica misses bob's grant ...
    assert await FileStore(net).grant(pushed.file_id, alice, bytes(bob.verify_key)) >= 1
    net.down.clear()                       # ... and comes back holding the older manifest
    # a node that kept nothing grants carol: it must not start from the lagging replica's copy
    assert await FileStore(net).grant(pushed.file_id, alice, bytes(carol.verify_key)) >= 1
    for reader in (bob, carol):
        opened = await FileStore(net).open(pushed.file_id, reader)
        assert await opened.read_all() == b"secret " * 300

"""Fragment names: BLAKE3-256 for new fragments; fragments named by SHA-256 (written before)
stay readable; bytes offered under a name they do not hash to are refused unwritten."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from blake3 import blake3

from storage.fraghash import fragment_digest, matches
from storage.fragstore import FragmentMismatch, FragmentStore, fragment_hash


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FragmentStore]:
    s = FragmentStore(tmp_path)
    yield s
    s.close()


def test_new_fragments_are_named_by_blake3() -> None:
    data = os.urandom(70_000)
    assert fragment_digest(data) == blake3(data).digest() != hashlib.sha256(data).digest()
    assert fragment_hash(data) == blake3(data).hexdigest()


def test_matches_either_function_and_nothing_else() -> None:
    data = os.urandom(4096)
    assert matches(data, blake3(data).digest())
    assert matches(data, hashlib.sha256(data).digest())
    assert matches(memoryview(data), blake3(data).digest())
    assert not matches(data, hashlib.blake2b(data, digest_size=32).digest())
    assert not matches(data[:-1], blake3(data).digest())
    assert not matches(data, blake3(data).digest()[:16])          # a truncated name


def test_store_keeps_and_verifies_sha256_named_fragments(store: FragmentStore) -> None:
    data = os.urandom(10_000)
    legacy = hashlib.sha256(data).hexdigest()
    assert store.put(data, "f", 0, expect=legacy) == legacy
    assert store.get(legacy) == data                                 # re-hashed on read: ok
    assert store.rebuild_index() == 1 and store.has(legacy)
    (store.root / legacy[:2] / legacy).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert store.get(legacy) is None and store.corrupt_count == 1   # rot still caught


@pytest.mark.parametrize("name", ["blake3", "sha256"])
def test_bytes_under_a_wrong_name_are_refused_before_any_write(store: FragmentStore,
                                                               name: str) -> None:
    data, other = os.urandom(5000), os.urandom(5000)
    claimed = (blake3(other).hexdigest() if name == "blake3"
               else hashlib.sha256(other).hexdigest())
    with pytest.raises(FragmentMismatch):
        store.put(data, "f", 0, expect=claimed)
    assert not store.has(claimed) and store.stats() == (0, 0)
    assert not (store.root / claimed[:2] / claimed).exists()

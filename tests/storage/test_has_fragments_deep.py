"""A deep HasFragments (the holder re-hashes each fragment it is asked about) costs the holder
at most one read of each fragment it holds, however the request is made.

Any mesh member may ask (a deep Stat does, storage/stat.py). Before: the holder re-read and
re-hashed every hash in the request, and a request may list 100,000 of them, so one ~3 MiB
request naming one 48 MiB fragment 100,000 times had it read and hash ~4.8 TB; and every
such call held one of the few worker threads every fragment write and read of the node also
needs, so a handful at once stalled the node's storage.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from storage.fragment_handlers import MAX_BATCH
from storage.fragstore import FragmentStore
from tests.storage.test_store_batch import _handlers, _remote


def _counting(store: FragmentStore) -> tuple[list[str], list[int]]:
    """Count ``store.get`` calls per hash, and the most running at once."""
    calls: list[str] = []
    peak = [0, 0]                                 # running now, most at once
    lock = threading.Lock()
    get = store.get

    def counted(h: str) -> bytes | None:
        with lock:
            calls.append(h)
            peak[0] += 1
            peak[1] = max(peak[1], peak[0])
        try:
            return get(h)
        finally:
            with lock:
                peak[0] -= 1

    store.get = counted                           # type: ignore[method-assign]
    return calls, peak


async def test_a_deep_check_reads_each_fragment_once(tmp_path: Path) -> None:
    h = _handlers(tmp_path)
    data = os.urandom(200_000)
    digest = bytes.fromhex(h.fragments.put(data, "f" + "1" * 32, 0))
    missing = bytes(32)
    calls, _ = _counting(h.fragments)
    asked = [digest] * (MAX_BATCH - 1) + [missing]
    assert await _remote(h).has_fragments(asked, deep=True) == [True] * (MAX_BATCH - 1) + [False]
    assert sorted(calls) == sorted([digest.hex(), missing.hex()])
    assert await _remote(h).has_fragments([missing, digest, digest]) == [False, True, True]


async def test_deep_checks_run_one_at_a_time(tmp_path: Path) -> None:
    h = _handlers(tmp_path)
    digests = [bytes.fromhex(h.fragments.put(os.urandom(100_000), "f" + "2" * 32, i))
               for i in range(8)]
    calls, peak = _counting(h.fragments)
    client = _remote(h)
    answers = await asyncio.gather(*(client.has_fragments(digests, deep=True)
                                     for _ in range(6)))
    assert answers == [[True] * 8] * 6 and len(calls) == 48
    assert peak[1] == 1

"""Issue 10 (4): concurrent clients mixing Push, Get, Revise and CallFunction across 6 nodes.

The load itself is benchmarks/load_bench.py (`python -m benchmarks.load_bench` records the full
run in benchmarks/RESULTS.md). `make test` runs 20 clients for 4 s; the slow suite runs 100
clients for 60 s. Zero unexpected errors, nothing acknowledged lost, every node alive, memory
bounded: no node's peak RSS above 1 GiB (a leak under this load would pass it in seconds: each
client moves ~10 MiB per 10 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.load_bench import LoadResult, run_load

RSS_CAP_KIB = 1024 * 1024


def check(res: LoadResult) -> None:
    print(res.summary())
    print(res.table())
    assert not res.errors, res.errors
    assert res.lost == 0
    assert res.pushed > 0 and res.revised > 0
    assert set(res.latencies) == {"push", "get", "revise", "call"}
    assert max(res.peak_rss_kib) < RSS_CAP_KIB, res.peak_rss_kib


async def test_twenty_clients_four_seconds(tmp_path: Path) -> None:
    check(await run_load(tmp_path, nodes=6, clients=20, duration=4))


@pytest.mark.slow
async def test_hundred_clients_sixty_seconds(tmp_path: Path) -> None:
    check(await run_load(tmp_path, nodes=6, clients=100, duration=60))

"""Long mixed runs (marked slow): the pool keeps serving correct results while attacks,
limits and crashes happen concurrently."""

from __future__ import annotations

import asyncio
import random

import pytest

from compute.sandbox import Limits, SandboxError, SandboxPool

ADD = "def add(a, b):\n    return a + b\n"
ATTACKS = [
    ("def f():\n    return ' ' * (2 ** 40)\n", Limits()),
    ("def f():\n    while True:\n        pass\n", Limits(wall_time_s=0.2)),
    ("def f():\n    import os\n", Limits()),
    ("def f():\n    return open('/etc/passwd').read()\n", Limits()),
    ("def f():\n    return 'x' * (3 * 2 ** 20)\n", Limits()),
    ("def f():\n    raise RuntimeError('boom')\n", Limits()),
    ("def f():\n    def r(n):\n        return r(n + 1)\n    return r(0)\n", Limits()),
]


@pytest.mark.slow
async def test_mixed_load_keeps_serving() -> None:
    pool = SandboxPool(size=8)
    await pool.start()
    rng = random.Random(7)
    sem = asyncio.Semaphore(16)
    try:
        async def good(i: int) -> None:
            async with sem:
                assert await pool.run(ADD, "add", [i, i], {}) == 2 * i

        async def bad(i: int) -> None:
            source, limits = ATTACKS[i % len(ATTACKS)]
            async with sem:
                with pytest.raises(SandboxError):
                    await pool.run(source, "f", [], {}, limits=limits)

        jobs = [good(i) for i in range(2000)] + [bad(i) for i in range(140)]
        rng.shuffle(jobs)
        await asyncio.gather(*jobs)
        stats = pool.stats()
        assert stats["calls"] == 2140 and stats["failures"] == 140
        assert stats["zygote_restarts"] == 0
    finally:
        await pool.stop()

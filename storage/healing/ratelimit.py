"""A token bucket over bytes, so repair traffic never starves user traffic."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """``rate`` bytes/s with a burst of ``burst`` bytes; rate <= 0 means unlimited.

    ``take(n)`` waits until n bytes are allowed. A request larger than the burst is let
    through once the bucket is full and leaves it in debt, so big fragments still pass at the
    long-run rate.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate, 1.0))
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()
        self.waited_s = 0.0

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, n: int) -> None:
        if self.rate <= 0 or n <= 0:
            return
        async with self._lock:             # FIFO: one waiter at a time
            self._refill()
            need = min(float(n), self.burst)
            if self._tokens < need:
                delay = (need - self._tokens) / self.rate
                self.waited_s += delay
                await asyncio.sleep(delay)
                self._refill()
            self._tokens -= n

"""The provider records of each function name a router knows: looked up in the DHT, cached.

A call needs the providers of its function before anything else, and a DHT lookup is a network
round or more (an RPC timeout when peers just died), so the list is cached for ``cache_ttl``
seconds and, up to ``stale_ttl``, a stale non-empty list still answers at once while one
background lookup per name refreshes it (single flight: concurrent calls share it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mesh.context import MeshContext

from .registry import Provider, decode_providers, function_key

log = logging.getLogger(__name__)

MAX_CACHED = 4096
# Name ownership (compute/owners.py): looked up beside the providers, it returns the filter that
# keeps only the records the name's owner allows.
OwnedFilter = Callable[[str], Awaitable[Callable[[list[Provider]], list[Provider]]]]


@dataclass
class _Cached:
    at: float
    providers: list[Provider] = field(default_factory=list)


class ProviderCache:
    def __init__(self, ctx: MeshContext, *, cache_ttl: float, stale_ttl: float) -> None:
        self.ctx = ctx
        self.cache_ttl = cache_ttl
        self.stale_ttl = stale_ttl
        self.owned: OwnedFilter | None = None
        self.lookups: dict[str, asyncio.Task[list[Provider]]] = {}
        self._cache: dict[str, _Cached] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def cached(self, function: str) -> list[Provider] | None:
        """The cached providers when fresh (or stale but usable: a refresh starts)."""
        cached = self._cache.get(function)
        if cached is None:
            return None
        age = time.monotonic() - cached.at
        if age < self.cache_ttl:
            return cached.providers
        if age < self.stale_ttl and cached.providers:
            self._lookup_task(function)
            return cached.providers
        return None

    async def providers(self, function: str, *, fresh: bool = False) -> list[Provider]:
        """Provider records of ``function`` (module docstring); ``fresh`` looks up now."""
        if not fresh:
            cached = self.cached(function)
            if cached is not None:
                return cached
        return await asyncio.shield(self._lookup_task(function))

    def invalidate(self, function: str) -> None:
        self._cache.pop(function, None)

    def node_ids(self) -> set[bytes]:
        """Every node some cached list (fresh or not) names: the router keeps their stats."""
        return {p.node_id for cached in self._cache.values() for p in cached.providers}

    def _lookup_task(self, function: str) -> asyncio.Task[list[Provider]]:
        task = self.lookups.get(function)
        if task is None:
            task = asyncio.create_task(self._lookup(function))
            self.lookups[function] = task
            task.add_done_callback(lambda t: self._lookup_done(function, t))
        return task

    def _lookup_done(self, function: str, task: asyncio.Task[list[Provider]]) -> None:
        self.lookups.pop(function, None)
        if not task.cancelled() and task.exception() is not None:
            log.info("provider lookup for %s failed: %r", function, task.exception())

    async def _lookup(self, function: str) -> list[Provider]:
        if self.owned is None:
            records = await self.ctx.membership.fetch(function_key(function))
            providers = decode_providers(function, records)
        else:
            records, allowed = await asyncio.gather(
                self.ctx.membership.fetch(function_key(function)), self.owned(function))
            providers = allowed(decode_providers(function, records))
        self._cache[function] = _Cached(time.monotonic(), providers)
        if len(self._cache) > MAX_CACHED:
            oldest = min(self._cache, key=lambda k: self._cache[k].at)
            self._cache.pop(oldest, None)
        return providers

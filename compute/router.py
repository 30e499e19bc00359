"""Routing a call: find the providers of a function, pick one, forward, retry elsewhere.

* Providers come from the DHT (signed records, see registry.py), cached for ``cache_ttl``
  seconds (providers.py), and are cross-checked against ``membership.live_peers()`` on every call, so a dead
  peer's record stops being used as soon as membership notices (or the channel reports it).
* Targets: the live places that serve the function's current generation (targets.py).
* Choice: power of two choices over a decaying latency estimate (balance.py). The local node
  has no network hop, so it is naturally preferred when it is not busier. The estimates of
  providers no cached list names any more are dropped once idle (``balance.prune``, checked
  every ``PRUNE_EVERY_S``), so a long-running node does not keep one per provider ever seen.
* A call that fails for a reason another provider may not share (peer unreachable, channel
  error, attempt timeout, provider overloaded, provider lost the function, worker crash) is
  retried on another provider until the caller's deadline. User errors, bad arguments and
  limits are final (they would fail anywhere). A retried call may have run partly on the
  failed provider: functions should be idempotent (at-least-once, like any RPC retry).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from mesh.context import MeshContext
from mesh.errors import (
    ChannelError,
    DeadlineExceededError,
    MeshError,
    PeerCallError,
    UnavailableError,
    status_value,
)
from proto import compute_pb2, mesh_pb2

from .balance import MAX_STATS, LatencyStats, pick, prune
from .peer import ComputePeer
from .providers import ProviderCache
from .registry import Provider
from .targets import Target, live_targets, record_targets

__all__ = ["Outcome", "Router", "Target"]

log = logging.getLogger(__name__)

RETRYABLE = {status_value(c) for c in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)}
NOT_FOUND = status_value(grpc.StatusCode.NOT_FOUND)
ATTEMPT_SLACK_S = 1.0          # network + queueing beyond the function's own wall limit
PRUNE_EVERY_S = 10.0


@dataclass
class Outcome:
    reply: compute_pb2.CallReply
    attempts: int
    node_id: bytes


class Router:
    def __init__(self, ctx: MeshContext, *,
                 run_local: Callable[[compute_pb2.CallRequest], Awaitable[compute_pb2.CallReply]],
                 serves_locally: Callable[[], bool], cache_ttl: float = 2.0,
                 stale_ttl: float = 30.0, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.me = ctx.identity.node_id          # (a property that hashes the key each time)
        self.run_local = run_local
        self.serves_locally = serves_locally
        self.cache = ProviderCache(ctx, cache_ttl=cache_ttl, stale_ttl=stale_ttl)
        self.rng = rng or random.Random()
        self.clock = clock                      # of the latency stats (tests inject one)
        self.stats: dict[bytes, LatencyStats] = {}
        self._next_prune = 0.0
        self.calls = self.retries = self.failed = 0

    # --- providers (providers.py) -----------------------------------------------------------
    async def providers(self, function: str, *, fresh: bool = False) -> list[Provider]:
        return await self.cache.providers(function, fresh=fresh)

    def invalidate(self, function: str) -> None:
        self.cache.invalidate(function)

    def targets(self, providers: list[Provider]) -> list[Target]:
        return live_targets(self.ctx, self.me, providers, serves_locally=self.serves_locally)

    def fallback_targets(self, providers: list[Provider]) -> list[Target]:
        return record_targets(self.me, providers)

    # --- calls -------------------------------------------------------------------------------
    async def call(self, function: str, request: compute_pb2.CallRequest, timeout: float
                   ) -> Outcome:
        """Run ``request`` on some provider within ``timeout`` seconds (the request is the
        router's for the call: each attempt sets its timeout and code fields in it)."""
        self.calls += 1
        self._prune_stats()
        deadline = time.monotonic() + timeout
        tried: set[bytes] = set()
        attempts = 0
        refreshed = False
        last: Outcome | None = None
        last_error = ""
        providers: list[Provider] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0.005:
                break
            cached = None if tried else self.cache.cached(function)
            if cached is not None:
                providers = cached
            else:
                try:
                    async with asyncio.timeout(remaining):
                        providers = await self.providers(function, fresh=bool(tried))
                except TimeoutError:
                    break
            targets = [t for t in self.targets(providers) if t.node_id not in tried]
            if not targets and refreshed:
                targets = [t for t in self.fallback_targets(providers) if t.node_id not in tried]
            if not targets:
                if not refreshed and not tried:
                    refreshed = True
                    self.invalidate(function)
                    continue
                if not providers and not tried:
                    self.failed += 1
                    return self._error(grpc.StatusCode.NOT_FOUND,
                                       f"no provider offers function {function!r}", attempts)
                break
            target = pick(targets, self.stats, self.rng, self.clock())
            tried.add(target.node_id)
            attempts += 1
            if attempts > 1:
                self.retries += 1
            # Leave time for another provider unless this is the last one we know of; and no
            # attempt needs much more than the function's wall-clock limit (a provider that
            # takes longer is stuck: SIGSTOPped, swapping, partitioned).
            budget = remaining if len(targets) == 1 else max(min(remaining, 1.0), remaining / 2)
            if target.wall_time_s > 0 and len(targets) > 1:
                budget = min(budget, target.wall_time_s * 1.2 + ATTEMPT_SLACK_S)
            outcome, error = await self._attempt(target, request, budget, attempts)
            if outcome is not None:
                code = outcome.reply.error.code if outcome.reply.failed else 0
                retry = outcome.reply.failed and (
                    code in RETRYABLE or (code == NOT_FOUND and not target.code_cid
                                          and not outcome.reply.error.user))
                if not retry:
                    if outcome.reply.failed:
                        self.failed += 1
                    return outcome
                last = outcome
                self.stats[target.node_id].penalize(self.clock())
                last_error = outcome.reply.error.message
            else:
                last_error = error
            log.info("call %s on %s failed (%s); trying another provider", function,
                     target.address, last_error)
        self.failed += 1
        if last is not None:
            last.attempts = attempts
            return last
        if attempts == 0 and providers:
            return self._error(grpc.StatusCode.UNAVAILABLE,
                               f"{len(providers)} provider record(s) of {function!r}, none on a "
                               "live peer", 0)
        if attempts == 0 or time.monotonic() >= deadline - 0.005:
            return self._error(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"no provider of {function!r} answered within the "
                               f"{timeout:.1f}s deadline ({attempts} attempt(s): {last_error})",
                               attempts)
        return self._error(grpc.StatusCode.UNAVAILABLE,
                           f"all {attempts} provider(s) of {function!r} failed: {last_error}",
                           attempts)

    async def _attempt(self, target: Target, request: compute_pb2.CallRequest, budget: float,
                       attempts: int) -> tuple[Outcome | None, str]:
        # The request is filled in for this attempt, not copied (its arguments can be MBs):
        # every field an attempt sets is set (or cleared) here, and attempts run one by one.
        req = request
        req.timeout = max(0.01, budget - min(0.5, budget * 0.15))  # reply beats our timer
        req.code_cid, req.entry = target.code_cid, target.entry
        if target.code_cid:
            req.worker_id, req.deploy_seq = target.worker_id, target.deploy_seq
            req.deployer = target.deployer
        else:
            req.worker_id, req.deploy_seq, req.deployer = "", 0, b""
        stats = self.stats.setdefault(target.node_id, LatencyStats())
        stats.inflight += 1
        started = self.clock()
        try:
            async with asyncio.timeout(budget):
                if target.node_id == self.me:
                    reply = await self.run_local(req)
                else:
                    peer = target.peer or mesh_pb2.PeerRecord(node_id=target.node_id,
                                                              address=target.address)
                    reply = await ComputePeer(self.ctx.peer(peer)).call(req, timeout=budget)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise                        # our caller gave up: stop
            # The channel was closed under the call (membership saw the peer die).
            stats.penalize(self.clock())
            return None, "call cancelled: the channel to the peer closed"
        except (TimeoutError, DeadlineExceededError):
            stats.penalize(self.clock())
            return None, f"no answer within {budget:.2f}s"
        except (UnavailableError, ChannelError) as exc:
            stats.penalize(self.clock())
            return None, str(exc)
        except PeerCallError as exc:
            stats.penalize(self.clock())
            return None, f"{exc.code.name}: {exc}"
        except MeshError as exc:
            stats.penalize(self.clock())
            return None, str(exc)
        finally:
            stats.inflight -= 1
        now = self.clock()
        stats.observe(now - started, now)
        return Outcome(reply, attempts, target.node_id), ""

    def _prune_stats(self) -> None:
        now = self.clock()
        if now >= self._next_prune or len(self.stats) > MAX_STATS:
            self._next_prune = now + PRUNE_EVERY_S
            prune(self.stats, self.cache.node_ids(), now, limit=MAX_STATS)

    def _error(self, code: grpc.StatusCode, message: str, attempts: int) -> Outcome:
        reply = compute_pb2.CallReply(failed=True, error=compute_pb2.CallError(
            code=status_value(code), message=message))
        return Outcome(reply, attempts, b"")

    def status(self) -> dict[str, int]:
        return {"routed": self.calls, "retries": self.retries, "failed": self.failed,
                "cached_functions": len(self.cache)}

"""compute.router: the per-provider latency stats stay bounded on a long-running node.

Providers come and go; before the fix the router kept a LatencyStats for every provider it
had ever called. The clock is injected: no sleeps, entries are counted.
"""

from __future__ import annotations

import random

import pytest

from compute import router as router_module
from compute.balance import STATS_IDLE_S, LatencyStats, prune
from compute.router import PRUNE_EVERY_S, Router
from mesh.identity import Identity
from proto import compute_pb2
from tests.compute.test_router import Mesh, ok


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def churn_router(mesh: Mesh, clock: Clock) -> Router:
    # cache_ttl=0: every call looks the function up again, as after a provider record expires
    return Router(mesh, run_local=ok(0), serves_locally=lambda: False,  # type: ignore[arg-type]
                  cache_ttl=0.0, stale_ttl=0.0, rng=random.Random(5), clock=clock)


def join(mesh: Mesh, function: str) -> Identity:
    ident = Identity.generate()
    mesh.peers.append(ident)
    mesh.live.add(ident.node_id)
    mesh.behaviour[ident.node_id] = ok(1)
    mesh.provide(ident, function)
    return ident


async def call(r: Router, function: str) -> compute_pb2.CallReply:
    return (await r.call(function, compute_pb2.CallRequest(function=function), 5.0)).reply


async def test_stats_of_providers_gone_and_idle_are_dropped() -> None:
    assert PRUNE_EVERY_S <= 15.0               # each step below passes a pruning
    mesh, clock = Mesh(0), Clock()
    r = churn_router(mesh, clock)
    steady = join(mesh, "steady")              # stays, called all along
    quiet = join(mesh, "quiet")                # stays in the DHT, called once
    assert not (await call(r, "quiet")).failed
    transient = [join(mesh, f"t{i}") for i in range(30)]
    for i in range(30):
        clock.now += 1.0
        assert not (await call(r, f"t{i}")).failed
    assert len(r.stats) == 31
    # the transient providers leave: their records expire, membership drops them
    mesh.records = [rec for rec in mesh.records
                    if rec.owner_key in (steady.public_key, quiet.public_key)]
    mesh.live -= {t.node_id for t in transient}
    for i in range(30):                        # each name's cached list is now empty
        assert (await call(r, f"t{i}")).failed
    clock.now += STATS_IDLE_S / 2              # idle, but not long enough
    assert not (await call(r, "steady")).failed
    assert len(r.stats) == 32
    clock.now += 15.0                          # transients called over 60 s ago go
    assert not (await call(r, "steady")).failed
    assert set(r.stats) == {steady.node_id, quiet.node_id, *(t.node_id for t in transient[14:])}
    clock.now += STATS_IDLE_S
    assert not (await call(r, "steady")).failed
    assert set(r.stats) == {steady.node_id, quiet.node_id}   # quiet: still in a cached list


async def test_stats_never_exceed_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router_module, "MAX_STATS", 5)
    mesh, clock = Mesh(0), Clock()
    r = churn_router(mesh, clock)
    for i in range(40):                        # all still provide: only the bound applies
        join(mesh, f"f{i}")
        clock.now += 0.1
        assert not (await call(r, f"f{i}")).failed
        assert len(r.stats) <= 5 + 1           # pruned before the call, which adds one
    assert r.calls == 40


def test_prune_keeps_calls_in_flight_and_the_most_recent() -> None:
    stats = {bytes([i]) * 20: LatencyStats(latency_s=0.01, at=float(i)) for i in range(10)}
    stats[bytes([0]) * 20].inflight = 1        # oldest, but a call is running on it
    assert prune(stats, set(), 10.0, idle_s=60.0, limit=4) == 6
    assert set(stats) == {bytes([i]) * 20 for i in (0, 7, 8, 9)}
    assert prune(stats, {bytes([9]) * 20}, 100.0, idle_s=60.0, limit=4) == 2
    assert set(stats) == {bytes([i]) * 20 for i in (0, 9)}

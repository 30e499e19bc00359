"""compute.router: choice, liveness filtering and retries, with fake peers (no network)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from compute.balance import FAILURE_PENALTY_S, LatencyStats, pick
from compute.registry import sign_provider
from compute.router import Router, Target
from mesh.errors import UnavailableError, status_value
from mesh.identity import Identity
from proto import compute_pb2, mesh_pb2


class FakeChannel:
    def __init__(self, behaviour: Any) -> None:
        self.behaviour = behaviour

    async def unary(self, method: str, body: bytes, *, timeout: float | None = None) -> bytes:
        req = compute_pb2.CallRequest()
        req.ParseFromString(body)
        reply: compute_pb2.CallReply = await self.behaviour(req)
        return reply.SerializeToString()


class Mesh:
    """A fake MeshContext: one local node plus peers with scripted behaviour."""

    def __init__(self, n: int) -> None:
        self.me = Identity.generate()
        self.peers = [Identity.generate() for _ in range(n)]
        self.live = {p.node_id for p in self.peers}
        self.behaviour: dict[bytes, Any] = {}
        self.records: list[mesh_pb2.SignedRecord] = []
        self.fetches = 0
        self.gate: asyncio.Event | None = None     # when set: lookups wait for it
        self.membership = SimpleNamespace(fetch=self._fetch, live_peers=self._live_peers)
        self.identity = self.me
        self.address = "127.0.0.1:1"

    async def _fetch(self, key: bytes) -> list[mesh_pb2.SignedRecord]:
        self.fetches += 1
        if self.gate is not None:
            await self.gate.wait()
        return list(self.records)

    def _live_peers(self) -> list[Any]:
        return [SimpleNamespace(node_id=p.node_id, address=f"peer{i}", roles=("compute",),
                                record=mesh_pb2.PeerRecord(node_id=p.node_id,
                                                           address=f"peer{i}", load=0))
                for i, p in enumerate(self.peers) if p.node_id in self.live]

    def peer(self, record: mesh_pb2.PeerRecord) -> FakeChannel:
        return FakeChannel(self.behaviour[record.node_id])

    def provide(self, ident: Identity, fn: str = "f", **kw: Any) -> None:
        rec = compute_pb2.ProviderRecord(function=fn, worker_id=f"w-{ident.node_id.hex()[:4]}",
                                         node_id=ident.node_id, address="x", deploy_seq=1, **kw)
        self.records.append(sign_provider(ident, rec, ttl_s=60))


def ok(value: float, worker: str = "w") -> Any:
    async def run(req: compute_pb2.CallRequest) -> compute_pb2.CallReply:
        reply = compute_pb2.CallReply(worker_id=worker)
        reply.result.number_value = value
        return reply
    return run


def fail_transport() -> Any:
    async def run(req: compute_pb2.CallRequest) -> compute_pb2.CallReply:
        raise UnavailableError("connection refused")
    return run


def hang() -> Any:
    async def run(req: compute_pb2.CallRequest) -> compute_pb2.CallReply:
        await asyncio.sleep(3600)
        raise AssertionError
    return run


def reply_error(code: grpc.StatusCode, user: bool = False) -> Any:
    async def run(req: compute_pb2.CallRequest) -> compute_pb2.CallReply:
        return compute_pb2.CallReply(failed=True, error=compute_pb2.CallError(
            code=status_value(code), type="ValueError" if user else "", message="bad",
            user=user))
    return run


def router(mesh: Mesh, local: Any = None) -> Router:
    return Router(mesh, run_local=local or ok(0), serves_locally=lambda: local is not None,  # type: ignore[arg-type]
                  rng=random.Random(7))


def test_power_of_two_choices_prefers_less_loaded_and_faster() -> None:
    rng = random.Random(1)
    targets = [Target(bytes([i]) * 20, f"a{i}", load=i * 10) for i in range(4)]
    counts = Counter(pick(targets, {}, rng, 0.0).address for _ in range(2000))
    assert counts["a0"] > counts["a1"] > counts["a2"] and counts["a3"] == 0
    fast, slow = Target(b"f" * 20, "fast", 0), Target(b"s" * 20, "slow", 0)
    stats = {b"f" * 20: LatencyStats(latency_s=0.001), b"s" * 20: LatencyStats(latency_s=0.05)}
    assert all(pick([fast, slow], stats, rng, 0.0) is fast for _ in range(50))


def test_a_provider_never_heard_from_is_tried_next_and_stale_estimates_decay() -> None:
    rng = random.Random(3)
    known, new = Target(b"k" * 20, "known", 0), Target(b"n" * 20, "new", 0)
    stats = {b"k" * 20: LatencyStats(latency_s=0.0001, at=100.0)}
    assert all(pick([known, new], stats, rng, 100.0) is new for _ in range(20))
    stats[b"n" * 20] = LatencyStats(inflight=3)       # unheard of, but busy with our calls
    assert all(pick([known, new], stats, rng, 100.0) is known for _ in range(20))
    # A provider that lost (slower, or penalized) is probed again once its estimate decays.
    slow = LatencyStats(latency_s=0.05, at=0.0)
    assert slow.estimate(5.0) == pytest.approx(0.025)
    stats = {b"k" * 20: LatencyStats(latency_s=0.001, at=60.0), b"n" * 20: slow}
    assert pick([known, new], stats, rng, 60.0) is new
    assert pick([known, new], stats, rng, 1.0) is known
    failing = LatencyStats(latency_s=0.0005, at=0.0)
    failing.penalize(0.0)
    assert failing.estimate(0.0) == FAILURE_PENALTY_S and failing.failures == 1


async def test_sequential_calls_reach_every_provider() -> None:
    """Regression: with a fixed latency prior, a first provider that answered faster than the
    prior took every later sequential call, and the other was never tried."""
    mesh = Mesh(3)
    for p in mesh.peers:
        mesh.provide(p)
    mesh.behaviour = {p.node_id: ok(i) for i, p in enumerate(mesh.peers)}
    r = router(mesh)
    seen = set()
    for _ in range(10):
        out = await r.call("f", compute_pb2.CallRequest(function="f"), 5.0)
        assert not out.reply.failed
        seen.add(out.node_id)
    assert seen == {p.node_id for p in mesh.peers}


async def test_a_provider_failing_fast_does_not_attract_calls() -> None:
    mesh = Mesh(2)
    for p in mesh.peers:
        mesh.provide(p)
    a, b = mesh.peers
    mesh.behaviour = {a.node_id: reply_error(grpc.StatusCode.UNAVAILABLE, False),
                      b.node_id: ok(1)}
    r = router(mesh)
    now = time.monotonic()                        # a was the faster one so far
    r.stats[a.node_id] = LatencyStats(latency_s=0.00001, at=now)
    r.stats[b.node_id] = LatencyStats(latency_s=0.0001, at=now)
    outs = [await r.call("f", compute_pb2.CallRequest(function="f"), 5.0) for _ in range(20)]
    assert all(not o.reply.failed and o.node_id == b.node_id for o in outs)
    assert [o.attempts for o in outs] == [2] + [1] * 19     # a was tried once


async def test_dead_providers_are_not_used_and_retry_moves_on() -> None:
    mesh = Mesh(3)
    for p in mesh.peers:
        mesh.provide(p)
    a, b, c = mesh.peers
    mesh.live.discard(c.node_id)                  # c's record remains in the DHT
    mesh.behaviour = {a.node_id: fail_transport(), b.node_id: ok(42, "wb"),
                      c.node_id: ok(0)}
    r = router(mesh)
    for _ in range(20):
        out = await r.call("f", compute_pb2.CallRequest(function="f"), 5.0)
        assert not out.reply.failed and out.reply.result.number_value == 42
        assert out.node_id == b.node_id and out.attempts in (1, 2)


async def test_a_hung_provider_times_out_and_another_answers_within_the_deadline() -> None:
    mesh = Mesh(2)
    for p in mesh.peers:
        mesh.provide(p)
    a, b = mesh.peers
    mesh.behaviour = {a.node_id: hang(), b.node_id: ok(1)}
    r = router(mesh)
    now = time.monotonic()                        # make the hung one look attractive
    r.stats[a.node_id] = LatencyStats(latency_s=0.0001, at=now)
    r.stats[b.node_id] = LatencyStats(latency_s=1.0, at=now)
    out = await r.call("f", compute_pb2.CallRequest(function="f"), 2.0)
    assert not out.reply.failed and out.attempts == 2 and out.node_id == b.node_id


async def test_user_errors_and_limits_are_final_overload_is_retried() -> None:
    mesh = Mesh(2)
    for p in mesh.peers:
        mesh.provide(p)
    a, b = mesh.peers
    for code, user in ((grpc.StatusCode.UNKNOWN, True),
                       (grpc.StatusCode.INVALID_ARGUMENT, False),
                       (grpc.StatusCode.DEADLINE_EXCEEDED, False),
                       (grpc.StatusCode.RESOURCE_EXHAUSTED, False)):
        mesh.behaviour = {a.node_id: reply_error(code, user), b.node_id: reply_error(code, user)}
        out = await router(mesh).call("f", compute_pb2.CallRequest(function="f"), 5.0)
        assert out.reply.failed and out.attempts == 1 and out.reply.error.code == code.value[0]
    mesh.behaviour = {a.node_id: reply_error(grpc.StatusCode.UNAVAILABLE),
                      b.node_id: reply_error(grpc.StatusCode.UNAVAILABLE)}
    out = await router(mesh).call("f", compute_pb2.CallRequest(function="f"), 5.0)
    assert out.reply.failed and out.attempts == 2


async def test_unknown_function_is_not_found_and_lookups_are_cached() -> None:
    mesh = Mesh(1)
    r = router(mesh)
    out = await r.call("nope", compute_pb2.CallRequest(function="nope"), 1.0)
    assert out.reply.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    mesh.provide(mesh.peers[0])
    mesh.behaviour = {mesh.peers[0].node_id: ok(5)}
    before = mesh.fetches
    results = await asyncio.gather(*(r.call("f", compute_pb2.CallRequest(function="f"), 1.0)
                                     for _ in range(50)))
    assert all(not o.reply.failed for o in results)
    assert mesh.fetches - before <= 2


async def test_deployed_code_can_run_on_any_live_compute_peer_and_locally() -> None:
    mesh = Mesh(2)
    deployer = Identity.generate()                # gone: not among the live peers
    mesh.provide(deployer, code_cid="bCID", entry="f")
    seen: list[str] = []

    async def local(req: compute_pb2.CallRequest) -> compute_pb2.CallReply:
        seen.append(req.code_cid)
        return compute_pb2.CallReply(worker_id="local")

    mesh.behaviour = {p.node_id: ok(1) for p in mesh.peers}
    r = router(mesh, local)
    targets = r.targets(await r.providers("f"))
    assert {t.node_id for t in targets} == {mesh.me.node_id, *(p.node_id for p in mesh.peers)}
    assert all(t.code_cid == "bCID" and t.entry == "f" for t in targets)
    out = await r.call("f", compute_pb2.CallRequest(function="f"), 1.0)
    assert not out.reply.failed


async def test_stale_providers_answer_while_a_slow_lookup_refreshes_them() -> None:
    mesh = Mesh(1)
    mesh.provide(mesh.peers[0])
    mesh.behaviour = {mesh.peers[0].node_id: ok(9)}
    r = Router(mesh, run_local=ok(0), serves_locally=lambda: False,  # type: ignore[arg-type]
               cache_ttl=0.0, rng=random.Random(1))
    assert not (await r.call("f", compute_pb2.CallRequest(function="f"), 5.0)).reply.failed
    mesh.gate = asyncio.Event()                    # the DHT now hangs
    for _ in range(5):                             # answered from the stale entry meanwhile
        out = await r.call("f", compute_pb2.CallRequest(function="f"), 5.0)
        assert out.reply.result.number_value == 9
    assert len(r.cache.lookups) == 1                    # one background refresh, not five
    mesh.gate.set()
    await asyncio.sleep(0)
    await asyncio.gather(*r.cache.lookups.values())

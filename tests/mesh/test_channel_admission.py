"""What handshakes can cost a server (admission.py, sessions.py), on a real ChannelServer and
TcpListener on 127.0.0.1: a raw socket bound to 127.0.0.2 plays the attacker (another source
address on the loopback), a real ChannelPool on 127.0.0.1 the honest peer. Signature checks
are counted on the real handshake code, not timed."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from mesh import identity
from mesh.channel import Caller, ChannelPool, ChannelServer, handshake
from mesh.channel.admission import AdmissionPolicy, HandshakeBudget, grpc_peer_host, source_of
from mesh.channel.handshake import ClientHandshake, SessionKeys
from mesh.channel.session import Session
from mesh.channel.sessions import SessionCache
from mesh.channel.tcp_server import TcpListener
from mesh.channel.tcp_wire import ABORT, HANDSHAKE, HEADER, decode_abort
from mesh.errors import ResourceExhaustedError
from mesh.identity import Identity
from proto import peer_pb2

ATTACKER = "127.0.0.2"
NO_REFILL = 1e-9        # tokens per second: the burst is all a test's flood gets
Raw = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Server:
    def __init__(self, admission: AdmissionPolicy) -> None:
        self.identity = Identity.generate()
        self.channel = ChannelServer(self.identity, admission=admission)
        self.listener = TcpListener(self.channel)
        self.channel.handle("test.Echo", self._echo)
        self.port = 0

    async def _echo(self, caller: Caller, body: bytes) -> bytes:
        return body

    async def __aenter__(self) -> Server:
        self.port = await self.listener.start("127.0.0.1")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.listener.stop()


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The keys whose handshake signature was checked (the server's costly step; an honest
    client in the test process checks the server's too)."""
    keys: list[bytes] = []
    real = identity.verify_signature

    def spy(key: bytes, message: bytes, signature: bytes) -> bool:
        keys.append(key)
        return real(key, message, signature)
    monkeypatch.setattr(handshake, "verify_signature", spy)
    return keys


async def _attacker(server: Server) -> Raw:
    return await asyncio.open_connection("127.0.0.1", server.port, local_addr=(ATTACKER, 0))


async def _exchange(raw: Raw, requests: list[bytes]) -> list[tuple[int, bytes]]:
    """Send the requests back to back on one connection; the answers, in order."""
    reader, writer = raw
    writer.write(b"".join(HEADER.pack(len(r), HANDSHAKE) + r for r in requests))
    answers = []
    async with asyncio.timeout(60):
        for _ in requests:
            size, kind = HEADER.unpack(await reader.readexactly(HEADER.size))
            answers.append((kind, await reader.readexactly(size)))
    return answers


def _code(answer: tuple[int, bytes]) -> grpc.StatusCode:
    assert answer[0] == ABORT
    return {c.value[0]: c for c in grpc.StatusCode}[decode_abort(answer[1])[0]]


def _requests(server: Server, n: int) -> list[bytes]:
    me = Identity.generate()
    return [ClientHandshake(me, server.identity.node_id).request.SerializeToString()
            for _ in range(n)]


async def test_a_handshake_flood_beyond_the_burst_is_refused_before_any_signature_check(
        verified: list[bytes], pool: ChannelPool) -> None:
    """100 valid requests back to back from one address against a burst of 16: 16 are
    answered, 84 refused RESOURCE_EXHAUSTED with no signature checked; the connection stays
    open, and an honest peer on another address still handshakes and calls (before: all 100
    cost a full handshake and opened a session)."""
    async with Server(AdmissionPolicy(handshake_burst=16, handshake_rate=NO_REFILL)) as server:
        raw = await _attacker(server)
        answers = await _exchange(raw, _requests(server, 100))
        kinds = [kind for kind, _ in answers]
        assert kinds.count(HANDSHAKE) == 16 and kinds[:16] == [HANDSHAKE] * 16
        assert {_code(a) for a in answers[16:]} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert len(verified) == 16 and server.channel.handshakes == 16
        assert server.channel.gate.budget.refused == 84
        assert len(server.channel._sessions) == 16
        peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
        assert await peer.unary("test.Echo", b"honest") == b"honest"
        assert verified[16] == pool.identity.public_key             # then the client's check
        raw[1].close()


async def test_a_throttled_client_gets_a_retryable_error_and_does_not_retry(
        pool: ChannelPool) -> None:
    """Past its address's budget a real client's call fails with ResourceExhaustedError after
    exactly one refused handshake (no retry loop), and the peer is not reported unreachable."""
    unreachable: list[bytes] = []
    async with Server(AdmissionPolicy(handshake_burst=1, handshake_rate=NO_REFILL)) as server:
        peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
        assert await peer.unary("test.Echo", b"first") == b"first"
        other = ChannelPool(Identity.generate(), on_unreachable=unreachable.append)
        try:
            late = other.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
            with pytest.raises(ResourceExhaustedError, match="too many handshakes"):
                await late.unary("test.Echo", b"late")
        finally:
            await other.close()
        assert server.channel.gate.budget.refused == 1 and unreachable == []
        assert await peer.unary("test.Echo", b"again") == b"again"    # its session stands


async def test_a_replayed_request_costs_no_second_handshake_or_session(
        verified: list[bytes]) -> None:
    """The same request sent again (unchanged, or with its signature swapped) is refused
    UNAUTHENTICATED without a signature check and opens no session (before: each copy cost a
    full handshake and took a session slot for 120 s)."""
    async with Server(AdmissionPolicy()) as server:
        request = _requests(server, 1)[0]
        raw = await _attacker(server)
        answers = await _exchange(raw, [request, request, request])
        assert [kind for kind, _ in answers] == [HANDSHAKE, ABORT, ABORT]
        assert _code(answers[1]) == _code(answers[2]) == grpc.StatusCode.UNAUTHENTICATED
        assert "replayed" in decode_abort(answers[1][1])[1]
        forged = peer_pb2.HandshakeRequest.FromString(request)
        forged.signature = bytes(64)
        assert _code((await _exchange(raw, [forged.SerializeToString()]))[0]) \
            == grpc.StatusCode.UNAUTHENTICATED
        assert len(verified) == 1 and server.channel.handshakes == 1
        assert len(server.channel._sessions) == 1 and server.channel.gate.replays.refused == 3
        raw[1].close()


async def test_a_session_flood_from_one_address_does_not_evict_a_peer_on_another(
        pool: ChannelPool) -> None:
    """A cache of 8 sessions; an honest peer holds one, then one address opens 50: the
    flooding address only evicts its own sessions, and the honest peer calls on without
    re-keying (before: the oldest session overall went first, the honest one)."""
    async with Server(AdmissionPolicy(max_sessions=8)) as server:
        peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
        assert await peer.unary("test.Echo", b"before") == b"before"
        raw = await _attacker(server)
        answers = await _exchange(raw, _requests(server, 50))
        assert [kind for kind, _ in answers] == [HANDSHAKE] * 50
        assert server.channel._sessions.sessions_of(ATTACKER) == 7
        assert server.channel._sessions.sessions_of("127.0.0.1") == 1
        assert server.channel._sessions.evicted == 43
        assert await peer.unary("test.Echo", b"after") == b"after"
        assert server.channel.handshakes == 51                  # no re-key
        raw[1].close()


async def test_the_grpc_transport_charges_the_address_grpc_reports(
        verified: list[bytes]) -> None:
    """The same budget on the gRPC transport (context.peer() parsed to the address): past a
    burst of 2, a third client's handshake is refused RESOURCE_EXHAUSTED with no signature
    check; the first two clients' sessions keep working."""
    me = Identity.generate()
    channel = ChannelServer(me, admission=AdmissionPolicy(handshake_burst=2,
                                                                handshake_rate=NO_REFILL))
    channel.handle("test.Echo", lambda caller, body: _echoed(body))
    server = grpc.aio.server()
    channel.add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    pools = [ChannelPool(Identity.generate()) for _ in range(3)]
    try:
        peers = [p.peer(me.node_id, f"127.0.0.1:{port}") for p in pools]
        assert [await p.unary("test.Echo", b"hi") for p in peers[:2]] == [b"hi", b"hi"]
        with pytest.raises(ResourceExhaustedError, match="too many handshakes from 127.0.0.1"):
            await peers[2].unary("test.Echo", b"hi")
        assert channel.gate.budget.refused == 1 and channel.handshakes == 2
        assert pools[2].identity.public_key not in verified
        assert await peers[0].unary("test.Echo", b"again") == b"again"
    finally:
        for p in pools:
            await p.close()
        await server.stop(None)


async def _echoed(body: bytes) -> bytes:
    return body


def test_the_budget_refills_at_its_rate_and_forgets_the_least_recent_source() -> None:
    budget = HandshakeBudget(AdmissionPolicy(handshake_burst=2, handshake_rate=10.0,
                                             max_sources=2))
    assert [budget.take("a", now=0.0) for _ in range(3)] == [True, True, False]
    assert budget.take("a", now=0.05) is False          # half a token
    assert budget.take("a", now=0.1) is True            # one token after 0.1 s
    assert budget.take("a", now=100.0) and budget.take("a", now=100.0)
    assert not budget.take("a", now=100.0)              # refilled to the burst, not beyond
    budget.take("b", now=100.0)
    budget.take("c", now=100.0)                         # "a" is the least recent: forgotten
    assert len(budget) == 2 and budget.take("a", now=100.0)


def test_sources() -> None:
    assert source_of("10.1.2.3") == "10.1.2.3"
    assert source_of("::ffff:10.1.2.3") == "10.1.2.3"
    assert source_of("2001:db8::1") == source_of("2001:db8::ffff:2") == "2001:db8::/64"
    assert grpc_peer_host("ipv4:127.0.0.1:5000") == "127.0.0.1"
    assert grpc_peer_host("ipv6:[::1]:5000") == "::1"
    assert grpc_peer_host("ipv6:%5B::1%5D:5000") == "::1"


def test_a_full_cache_always_evicts_from_a_largest_source() -> None:
    """Random adds, uses and drops against a model: every eviction takes the least recently
    used session of a source holding the most, and the counts stay exact."""
    rng = random.Random(7)
    cache = SessionCache(max_sessions=20)
    model: dict[str, list[bytes]] = {}          # per source, least recently used first
    for _ in range(5000):
        roll = rng.random()
        if roll < 0.6:
            source = rng.choice("abcdefg"[:rng.randint(1, 7)])
            sid = rng.randbytes(16)
            full = sum(map(len, model.values())) == 20
            cache.add(Session(SessionKeys(sid, bytes(16), bytes(16), bytes(32), bytes(20)),
                              is_client=False), source)
            model.setdefault(source, []).append(sid)
            if full:
                most = max(map(len, model.values()))
                gone = [(s, v[0]) for s, v in model.items() if v[0] not in cache]
                assert len(gone) == 1 and len(model[gone[0][0]]) == most
                assert gone[0][1] != sid and sid in cache
                model[gone[0][0]].remove(gone[0][1])
        elif roll < 0.8 and model:
            source = rng.choice(sorted(model))
            if model[source]:
                sid = rng.choice(model[source])
                cache.touch(sid)
                model[source].remove(sid)
                model[source].append(sid)
        elif model:
            source = rng.choice(sorted(model))
            if model[source]:
                sid = model[source].pop(rng.randrange(len(model[source])))
                cache.pop(sid)
        model = {s: v for s, v in model.items() if v}
        assert len(cache) == sum(map(len, model.values()))
        assert all(cache.sessions_of(s) == len(v) for s, v in model.items())

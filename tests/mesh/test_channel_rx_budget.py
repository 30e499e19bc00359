"""The TCP listener's receive budget (tcp_budget.py) on a real ChannelServer and TcpListener on
127.0.0.1: hostile peers complete real handshakes with throwaway keys, then announce large
payloads on many connections and trickle them; a real ChannelPool is the honest peer.

Memory is counted independently of the budget's own counters: the payload buffers the
listener's connections hold (partial and queued), sampled while the attack runs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from mesh.channel import Caller, ChannelPool, ChannelServer, tcp_rx
from mesh.channel.frames import encode_envelope
from mesh.channel.handshake import ClientHandshake, SessionKeys
from mesh.channel.session import Session
from mesh.channel.tcp_budget import RxPolicy
from mesh.channel.tcp_server import TcpListener
from mesh.channel.tcp_wire import CALL, HANDSHAKE, HEADER, read_message, write_message
from mesh.identity import Identity
from proto import peer_pb2

MiB = 2**20
Raw = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Server:
    def __init__(self, policy: RxPolicy, idle_timeout: float = 300.0) -> None:
        self.identity = Identity.generate()
        self.channel = ChannelServer(self.identity)
        self.listener = TcpListener(self.channel, receive=policy, idle_timeout=idle_timeout)
        self.channel.handle("test.Len", self._len)
        self.channel.handle("test.Big", self._big)
        self.channel.handle("test.Block", self._block)
        self.release = asyncio.Event()
        self.port = 0
        self.most = 0           # the most payload bytes held at a sample

    async def _len(self, caller: Caller, body: bytes) -> bytes:
        return len(body).to_bytes(8, "big")

    async def _big(self, caller: Caller, body: bytes) -> bytes:
        return bytes(32 * MiB)

    async def _block(self, caller: Caller, body: bytes) -> bytes:
        await self.release.wait()
        return b""

    def in_memory(self) -> int:
        """Payload bytes the connections hold: partial buffers and received, unread ones."""
        total = 0
        for conn in self.listener._connections:
            total += conn._queued + (len(conn._big) if conn._big is not None else 0)
        self.most = max(self.most, total)
        return total

    def announced(self) -> int:
        """Connections whose payload header the server has handled: given a buffer, or waiting."""
        return sum(1 for conn in self.listener._connections
                   if conn._big is not None or conn._waiting)

    async def __aenter__(self) -> Server:
        self.port = await self.listener.start("127.0.0.1")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.listener.stop()


async def _until(condition: Callable[[], bool], within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110  (counters, no event to wait on)
            await asyncio.sleep(0.01)


async def _keys(server: Server) -> tuple[SessionKeys, Raw]:
    """A real handshake with a throwaway key: the session's keys and its authenticated socket."""
    raw = await asyncio.open_connection("127.0.0.1", server.port)
    hello = ClientHandshake(Identity.generate(), server.identity.node_id)
    write_message(raw[1], HANDSHAKE, hello.request.SerializeToString())
    kind, body = await read_message(raw[0])
    assert kind == HANDSHAKE
    return hello.finish(peer_pb2.HandshakeResponse.FromString(body)), raw


async def _session(server: Server) -> tuple[bytes, Raw]:
    keys, raw = await _keys(server)
    return keys.session_id, raw


async def _announce(server: Server, session_id: bytes, size: int, count: int) -> list[Raw]:
    """``count`` new connections of the session, each sending the header of a ``size``-byte
    frame and its first 1,000 bytes (the session id first, so the server knows whose it is)."""
    raws = []
    for _ in range(count):
        raw = await asyncio.open_connection("127.0.0.1", server.port)
        raw[1].write(HEADER.pack(size, CALL) + session_id + os.urandom(984))
        await raw[1].drain()
        raws.append(raw)
    return raws


async def _trickle(raws: list[Raw], stop: asyncio.Event) -> None:
    """One byte per connection every 50 ms: ~20 B/s each, enough to beat an idle timer."""
    while not stop.is_set():
        for _, writer in raws:
            if not writer.is_closing():
                writer.write(b"\x00")
        await asyncio.sleep(0.05)


async def _closed(raw: Raw) -> None:
    try:
        async with asyncio.timeout(30):
            assert await raw[0].read() == b""
    except ConnectionError:         # reset, or our trickle's write into the reset socket
        pass
    raw[1].close()


async def test_trickled_announcements_stay_within_the_budget_and_are_dropped(
        pool: ChannelPool) -> None:
    """Four throwaway keys announce 1 MiB frames on 16 connections and trickle them: the server
    holds at most its 4 MiB budget (before: one buffer per connection, 16 MiB, and so up to
    1,024 x 64 MiB), each key at most its 2 MiB share; the trickling payloads are dropped for
    their rate and their connections closed, and an honest peer's calls complete meanwhile."""
    policy = RxPolicy(total=4 * MiB, per_peer=2 * MiB, max_wait_s=60.0, stall_s=0.5,
                      min_rate=10_000.0)
    async with Server(policy) as server:
        budget = server.listener.budget
        sessions: list[Raw] = []
        raws: list[Raw] = []
        for _ in range(4):
            session_id, authenticated = await _session(server)
            sessions.append(authenticated)
            raws += await _announce(server, session_id, 1 * MiB, 4)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_trickle(raws, stop))
            await _until(lambda: server.announced() == 16)
            assert server.in_memory() <= 4 * MiB              # without the budget: 16 MiB
            assert budget.held == 4 * MiB and budget.status()["waiting"] == 12
            peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
            assert await peer.unary("test.Len", b"x" * 100) == (100).to_bytes(8, "big")
            honest = [asyncio.ensure_future(peer.unary("test.Len", b"y" * (300_000 + i)))
                      for i in range(4)]
            while not all(call.done() for call in honest):
                assert server.in_memory() <= 4 * MiB
                await asyncio.sleep(0.01)
            assert [await call for call in honest] == [
                (300_000 + i).to_bytes(8, "big") for i in range(4)]
            await asyncio.gather(*(_closed(raw) for raw in raws))     # each got its turn
            stop.set()
        assert budget.stalled == 16 and budget.wait_closed == 0
        assert server.most <= 4 * MiB and budget.max_held <= 4 * MiB
        await _until(lambda: budget.held == 0)
        for _, writer in sessions:
            writer.close()
        assert await peer.unary("test.Len", b"z" * MiB) == MiB.to_bytes(8, "big")


async def test_one_key_holds_at_most_its_share_and_peers_do_not_wait(
        pool: ChannelPool) -> None:
    """One throwaway key announcing on 8 connections gets its 2 MiB share; its other messages
    wait unread, and are closed after ``max_wait_s``; an honest peer's bulk calls meanwhile
    never wait (the total has room)."""
    policy = RxPolicy(total=16 * MiB, per_peer=2 * MiB, max_wait_s=1.0, stall_s=300.0,
                      min_rate=0.0)
    async with Server(policy) as server:
        budget = server.listener.budget
        session_id, authenticated = await _session(server)
        raws = await _announce(server, session_id, 1 * MiB, 8)
        await _until(lambda: server.announced() == 8)
        assert server.in_memory() <= 2 * MiB                  # without the budget: 8 MiB
        assert budget.held == 2 * MiB and budget.waits == 6
        peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
        for size in (100_000, MiB, 3 * MiB):          # over the share: alone, it still fits
            assert await peer.unary("test.Len", b"h" * size) == size.to_bytes(8, "big")
        assert budget.waits == 6
        await _until(lambda: budget.wait_closed == 6)
        await _until(lambda: len(server.listener._connections) == 4)   # 2 + session + peer
        assert budget.held == 2 * MiB and budget.stalled == 0
        for _, writer in [authenticated, *raws]:
            writer.close()
        await _until(lambda: budget.held == 0)


async def test_a_silent_partial_payload_is_dropped(pool: ChannelPool) -> None:
    """A payload that receives nothing more for ``stall_s`` is dropped even at no minimum rate."""
    policy = RxPolicy(stall_s=0.3, min_rate=0.0)     # the default total and share
    async with Server(policy) as server:
        session_id, authenticated = await _session(server)
        raws = await _announce(server, session_id, 64 * MiB, 2)
        await _until(lambda: server.announced() == 2)
        await asyncio.gather(*(_closed(raw) for raw in raws))
        assert server.listener.budget.stalled == 2
        await _until(lambda: server.listener.budget.held == 0)
        authenticated[1].close()


async def test_an_honest_burst_over_the_budget_waits_and_completes(pool: ChannelPool) -> None:
    """Twelve concurrent 1 MiB calls from one peer against a 3 MiB budget: none fails, some
    waited, and no more than the budget was ever held."""
    policy = RxPolicy(total=3 * MiB, per_peer=3 * MiB)
    async with Server(policy) as server:
        peer = pool.peer(server.identity.node_id, f"127.0.0.1:{server.port}", server.port)
        sizes = [MiB + i for i in range(12)]
        calls = [asyncio.ensure_future(peer.unary("test.Len", b"b" * n, timeout=60))
                 for n in sizes]
        while not all(call.done() for call in calls):
            server.in_memory()
            await asyncio.sleep(0.005)
        assert [await call for call in calls] == [n.to_bytes(8, "big") for n in sizes]
        budget = server.listener.budget
        assert server.most <= 3 * MiB                         # without the budget: ~12 MiB
        assert budget.waits > 0 and budget.max_held <= 3 * MiB
        assert budget.stalled == budget.wait_closed == 0
        await _until(lambda: budget.held == 0)


async def test_small_messages_behind_a_busy_handler_stop_at_the_small_queue_limit() -> None:
    """Small messages are not charged to the budget, so a connection whose handler is busy
    (here a call that blocks) stops reading after 256 KiB of them (QUEUE_SMALL_BYTES), not
    4 MiB (QUEUE_BYTES): 1,024 such connections then hold 256 MiB, not 4 GiB."""
    async with Server(RxPolicy()) as server:
        keys, raw = await _keys(server)
        call = Session(keys, is_client=True).seal(1, 0, True, encode_envelope("test.Block", b""))
        write_message(raw[1], CALL, call.encode())
        small = HEADER.pack(16_000, CALL) + keys.session_id + os.urandom(16_000 - 16)
        raw[1].write(small * 500)                             # 8 MB, never read by the server
        (conn,) = server.listener._connections
        await _until(lambda: not conn.transport.is_reading())
        assert conn._queued <= 256 * 1024 + tcp_rx.STAGING     # without the limit: 4 MiB
        server.release.set()
        raw[1].close()


async def test_a_client_that_does_not_read_its_answer_is_closed_at_the_idle_timeout() -> None:
    """A 32 MiB answer the client never reads: the server's wait for it to drain ends at the
    idle timeout and the connection (with what it received) goes (before: it waited forever)."""
    async with Server(RxPolicy(), idle_timeout=0.5) as server:
        keys, raw = await _keys(server)
        call = Session(keys, is_client=True).seal(1, 0, True, encode_envelope("test.Big", b""))
        write_message(raw[1], CALL, call.encode())
        await _until(lambda: not server.listener._connections)
        raw[1].close()

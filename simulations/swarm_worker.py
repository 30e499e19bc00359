"""Worker processes that host a shard of the swarm's nodes, and the coordinator's handle.

The coordinator sends (request id, command, args) over a multiprocessing pipe; the worker runs
each command as a task on its own event loop, next to its nodes, and answers (request id,
result).  Timings and RPC counts are taken inside the worker, next to the node measured.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import resource
import time
from multiprocessing.connection import Connection
from typing import Any

from simulations.swarm_nodes import HOST, SwarmNode, node_class


class CountingFilter(logging.Filter):
    """Counts (and hides) log records containing `needle`: rpcudp's "received unknown message"
    (a late answer; counted at the nodes instead, see SwarmNode._count) and mesh.dht's
    "refused ...: identity not proven" (a contact whose address is now someone else's, e.g. a
    crashed node's port reused by a new node)."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.needle in record.getMessage():
            self.count += 1
            return False
        return True


def raise_fd_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(f"need ~{needed} file descriptors, RLIMIT_NOFILE hard limit is {soft}")
    return soft


class _Worker:
    def __init__(self, conn: Connection, config: dict[str, Any]) -> None:
        self.conn = conn
        self.config = config
        self.cls = node_class(config["backend"])
        self.nodes: dict[int, SwarmNode] = {}
        self.late = CountingFilter("unknown message")
        self.refused = CountingFilter("identity not proven")
        logging.getLogger("rpcudp.protocol").addFilter(self.late)
        logging.getLogger("mesh.dht.membership").addFilter(self.refused)
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = asyncio.Event()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._readable)
        await self.closing.wait()
        loop.remove_reader(self.conn.fileno())
        for node in self.nodes.values():
            await node.stop()

    def _readable(self) -> None:
        while True:
            try:
                if not self.conn.poll():
                    return
                rid, cmd, args = self.conn.recv()
            except (EOFError, OSError):  # the coordinator is gone: shut down
                cmd, rid, args = "exit", 0, ()
            if cmd == "exit":
                self.closing.set()
                return
            task = asyncio.get_running_loop().create_task(self._run(rid, cmd, args))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, rid: int, cmd: str, args: tuple[Any, ...]) -> None:
        try:
            result: Any = await getattr(self, f"do_{cmd}")(*args)
        except Exception as exc:  # reported to the coordinator, which raises it
            result = RuntimeError(f"{cmd}: {exc!r}")
        self.conn.send((rid, result))

    async def do_start(self, index: int) -> tuple[bytes, int, str]:
        c = self.config
        node = self.cls(index, c["seed"], c["rpc_timeout"], c["sweep_interval"])
        await node.start()
        self.nodes[index] = node
        return node.node_id, node.port, node.label

    async def do_bootstrap(self, index: int, port: int) -> tuple[float, int, int]:
        """Join time (-1 if it timed out), RPCs sent while joining, peers known right after."""
        node = self.nodes[index]
        before, t0 = node.requests, time.perf_counter()
        try:
            await asyncio.wait_for(node.bootstrap([(HOST, port)]), self.config["op_timeout"])
        except TimeoutError:
            return -1.0, node.requests - before, node.live_count()
        return time.perf_counter() - t0, node.requests - before, node.live_count()

    async def do_closest(self, index: int, key: bytes, k: int) -> tuple[float, int, list[bytes]]:
        """Latency (-1 if it timed out), RPCs sent, node IDs returned."""
        node = self.nodes[index]
        before, t0 = node.requests, time.perf_counter()
        try:
            got = await asyncio.wait_for(node.closest(key, k), self.config["op_timeout"])
        except TimeoutError:
            return -1.0, node.requests - before, []
        return time.perf_counter() - t0, node.requests - before, got

    async def do_stop(self, index: int) -> None:
        await self.nodes.pop(index).stop()

    async def do_stats(self) -> tuple[int, int, float, float]:
        """Late answers, refused contacts, CPU seconds, mean live peers known per node."""
        sizes = [n.live_count() for n in self.nodes.values()]
        known = sum(sizes) / len(sizes) if sizes else 0.0
        return SwarmNode.late_answers, self.refused.count, time.process_time(), known


def _worker_main(conn: Connection, config: dict[str, Any]) -> None:
    raise_fd_limit(config["fds"])
    asyncio.run(_Worker(conn, config).serve())


class WorkerHandle:
    """The coordinator's side of one worker process."""

    def __init__(self, config: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, config), daemon=True)
        self.proc.start()
        child.close()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.next_rid = 0
        self._reading = False

    def _readable(self) -> None:
        while self.conn.poll():
            rid, result = self.conn.recv()
            fut = self.pending.pop(rid)
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def call(self, cmd: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        if not self._reading:
            loop.add_reader(self.conn.fileno(), self._readable)
            self._reading = True
        self.next_rid += 1
        fut: asyncio.Future[Any] = loop.create_future()
        self.pending[self.next_rid] = fut
        self.conn.send((self.next_rid, cmd, args))
        return await fut

    async def close(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self._reading = False
        self.conn.send((0, "exit", ()))
        for _ in range(600):
            if not self.proc.is_alive():
                break
            await asyncio.sleep(0.05)
        self.proc.join(1)
        if self.proc.is_alive():
            self.proc.kill()
        self.conn.close()

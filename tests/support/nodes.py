"""Real `tw-mesh join` subprocesses on 127.0.0.1 with free ports, for system tests.

    async with NodeCluster(tmp_path, 6) as cluster:
        stub = cluster.stub(0, taskworker_pb2_grpc.FileServiceStub)

Each node's ports are read from its log ("peer address ...", "local API on ..."); the first
node starts the mesh and the others bootstrap through it. Stubs and sync channels send the node's
API token (read from DATA_DIR/api.token, as TaskWorker does); `run_cli` finds it as a user's CLI
does, in the runtime file the node writes (tests/conftest.py points $TW_MESH_RUNTIME_DIR at a
private directory of the test session).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from mesh.channel import ChannelPool, allocator
from mesh.channel.client import PeerChannel
from proto import taskworker_pb2, taskworker_pb2_grpc
from taskworker.api_auth import aio_channel, sync_channel
from taskworker.api_token import TOKEN_FILE

ROOT = Path(__file__).resolve().parents[2]
_PEER = re.compile(r"started; peer address ([\d.]+):(\d+)")
_API = re.compile(r"local API on ([\d.]+):(\d+)")
_ID = re.compile(r"node ([0-9a-f]{16}) started")
_CHANNEL = re.compile(r"started; peer address [\d.]+:\d+, channel (?:TCP port (\d+)|over gRPC only)")
T = TypeVar("T")


class NodeProc:
    def __init__(self, data_dir: Path, extra: list[str], env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.with_suffix(".log")
        self.peer = ""
        self.api = ""
        self.node_id_prefix = ""
        self.channel_port = 0       # its TCP channel port (0: gRPC only), what its record says

    def start(self, bootstrap: list[str], listen: str = "127.0.0.1:0") -> None:
        args = [sys.executable, "-m", "taskworker.cli", "join", "--listen", listen,
                "--api", "127.0.0.1:0", "--data-dir", str(self.data_dir),
                *[f"--bootstrap={b}" for b in bootstrap], *self.extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        self.log = open(self.log_path, "ab")   # noqa: SIM115 - kept open for the process
        self._log_offset = self.log.tell()     # a restarted node appends: parse only new lines
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)

    def _new_log_text(self) -> str:
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode(errors="replace")

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._new_log_text()
            peer, api, ident = _PEER.findall(text), _API.findall(text), _ID.findall(text)
            channel = _CHANNEL.findall(text)
            if peer and api and ident and channel:
                self.peer = f"{peer[-1][0]}:{peer[-1][1]}"
                self.api = f"{api[-1][0]}:{api[-1][1]}"
                self.node_id_prefix = ident[-1]
                self.channel_port = int(channel[-1] or 0)
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{text[-3000:]}")
            await asyncio.sleep(0.05)
        raise TimeoutError(f"node not ready in {timeout}s:\n{self._new_log_text()[-3000:]}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no goodbye."""
        if self.alive:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if hasattr(self, "log"):
            self.log.close()

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        return self.proc.returncode

    @property
    def token(self) -> str:
        """The node's local-API bearer token (DATA_DIR/api.token)."""
        return (self.data_dir / TOKEN_FILE).read_text().strip()

    def channel(self) -> grpc.aio.Channel:
        """A grpc.aio channel to the local API, sending the node's token."""
        allocator.tune()  # a client as the CLI is (taskworker/cli_common.api_channel)
        return aio_channel(self.api, self.token, options=[
            ("grpc.max_receive_message_length", 256 * 2**20),
            ("grpc.max_send_message_length", 256 * 2**20)])

    def member(self, pool: ChannelPool, node_id: bytes) -> PeerChannel:
        """A mesh member's channel to this node (``pool``'s key), over the transport its record
        advertises, as members reach it."""
        return pool.peer(node_id, self.peer, self.channel_port)

    def sync_channel(self, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
        """A synchronous channel to the local API, sending the node's token."""
        return sync_channel(self.api, self.token, options=options)


class NodeCluster:
    """N nodes forming one mesh; closes every process and channel on exit."""

    def __init__(self, tmp: Path, n: int, extra: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.extra = extra or ["--sweep-interval", "0.5"]
        self.env = env
        self.nodes: list[NodeProc] = []
        self._n = n
        self._channels: list[grpc.aio.Channel] = []

    async def __aenter__(self) -> NodeCluster:
        try:
            await self.add(self._n)
            await self.wait_converged()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        for ch in self._channels:
            await ch.close()
        self.close()

    def close(self) -> None:
        for node in self.nodes:
            node.kill()

    async def add(self, count: int, extra: list[str] | None = None) -> list[NodeProc]:
        new = []
        for _ in range(count):
            node = NodeProc(self.tmp / f"node{len(self.nodes)}", extra or self.extra, self.env)
            boot = [n.peer for n in self.nodes if n.alive and n.peer][:3]
            node.start(boot)
            self.nodes.append(node)
            new.append(node)
            if not boot:               # the first node must be up before others bootstrap
                await node.wait_ready()
        for node in new:
            await node.wait_ready()
        return new

    async def restart(self, index: int) -> NodeProc:
        old = self.nodes[index]
        node = NodeProc(old.data_dir, old.extra, self.env)
        node.start([n.peer for n in self.live() if n is not old][:3])
        self.nodes[index] = node
        await node.wait_ready()
        return node

    def live(self) -> list[NodeProc]:
        return [n for n in self.nodes if n.alive]

    def stub(self, index: int, factory: Callable[[grpc.aio.Channel], T]) -> T:
        channel = self.nodes[index].channel()
        self._channels.append(channel)
        return factory(channel)

    async def peers_of(self, index: int) -> taskworker_pb2.PeersResponse:
        stub = self.stub(index, taskworker_pb2_grpc.NodeServiceStub)
        resp: taskworker_pb2.PeersResponse = await stub.Peers(taskworker_pb2.PeersRequest(),
                                                              timeout=10)
        return resp

    async def wait_converged(self, timeout: float = 60.0) -> None:
        """Every live node sees every other live node."""
        deadline = time.monotonic() + timeout
        want = len(self.live()) - 1
        while True:
            counts = [len((await self.peers_of(i)).peers)
                      for i, n in enumerate(self.nodes) if n.alive]
            if all(c == want for c in counts):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"membership did not converge: {counts}, want {want} each")
            await asyncio.sleep(0.25)


def run_cli(*args: str, api: str | None = None, input_data: bytes | None = None,
            timeout: float = 120.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run `tw-mesh ARGS` as a user would."""
    cmd = [sys.executable, "-m", "taskworker.cli", *args]
    if api is not None:
        cmd += ["--api", api]
    full_env: dict[str, Any] = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, input=input_data, capture_output=True,
                          timeout=timeout, env=full_env, check=False)


class ClusterInThread:
    """A NodeCluster driven by an event loop in a background thread, for sync tests (hypothesis)."""

    def __init__(self, tmp: Path, n: int, extra: list[str] | None = None) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.cluster = NodeCluster(tmp, n, extra)

    def __enter__(self) -> NodeCluster:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.cluster.__aenter__(), self.loop).result(180)
        return self.cluster

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.cluster.__aexit__(None, None, None),
                                             self.loop).result(60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

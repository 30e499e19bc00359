"""The nodes a swarm runs: the project's `mesh.dht.Membership`, or stock kademlia as fallback.

Both are wrapped in `SwarmNode`, which counts the RPC requests a node sends (datagrams that
rpcudp marks as requests, b"\\x00" + id + payload) so lookups and joins can be charged exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import subprocess
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def mesh_available() -> bool:
    """True when the project's DHT membership (mesh/dht) can be imported."""
    try:
        return importlib.util.find_spec("mesh.dht") is not None and _import_mesh()
    except Exception:
        return False


def _import_mesh() -> bool:
    from mesh.dht import Membership  # noqa: F401

    return True


class _CountingTransport:
    """Wraps a datagram transport and counts outgoing RPC requests."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.requests = 0

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if data[:1] == b"\x00":
            self.requests += 1
        self._inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SwarmNode(ABC):
    """One DHT node in the swarm."""

    label: str
    includes_self: bool  # whether closest() may return the node itself
    late_answers = 0  # per process, over all nodes

    def __init__(self, index: int, seed: int) -> None:
        self.index = index
        self.secret = f"tw-mesh-swarm/{seed}/{index}".encode()
        self.node_id = b""
        self.port = 0
        self._counter: _CountingTransport | None = None

    @property
    def requests(self) -> int:
        return self._counter.requests if self._counter is not None else 0

    def _count(self, protocol: Any) -> None:
        """Count this node's outgoing requests, and late answers (responses to calls that had
        already timed out: their id is no longer outstanding) in `SwarmNode.late_answers`."""
        self._counter = _CountingTransport(protocol.transport)
        protocol.transport = self._counter
        receive = protocol.datagram_received
        outstanding = protocol._outstanding

        def datagram_received(data: bytes, addr: Any) -> None:
            if data[:1] == b"\x01" and data[1:21] not in outstanding:
                SwarmNode.late_answers += 1
            receive(data, addr)

        protocol.datagram_received = datagram_received

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def bootstrap(self, addrs: list[tuple[str, int]]) -> None: ...

    @abstractmethod
    async def closest(self, key: bytes, n: int) -> list[bytes]: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    def live_count(self) -> int:
        """Peers this node currently believes live (routing-table size for stock kademlia)."""


class MeshNode(SwarmNode):
    """The project's membership layer (mesh.dht.Membership: kademlia 2.2.3, fixed)."""

    label = "mesh.dht.Membership (project code)"
    includes_self = True

    def __init__(self, index: int, seed: int, rpc_timeout: float, sweep_interval: float) -> None:
        super().__init__(index, seed)
        from mesh.dht import Membership
        from mesh.identity import Identity
        from proto import mesh_pb2

        def record() -> Any:
            return mesh_pb2.PeerRecord(roles=["storage"], version="swarm")

        identity = Identity.from_seed(self.secret)
        self.node_id = identity.node_id
        self.member = Membership(
            identity,
            host=HOST,
            port=0,
            rpc_timeout=rpc_timeout,
            sweep_interval=sweep_interval,
            peer_record_factory=record,
        )

    async def start(self) -> None:
        await self.member.start()
        self.port = self.member.port
        self._count(self.member.server.protocol)

    async def bootstrap(self, addrs: list[tuple[str, int]]) -> None:
        await self.member.bootstrap(addrs)

    async def closest(self, key: bytes, n: int) -> list[bytes]:
        return [bytes(r.node_id) for r in await self.member.closest_peers(key, n)]

    def live_count(self) -> int:
        return len(self.member.live_peers())

    async def stop(self) -> None:
        await self.member.stop()


class KademliaNode(SwarmNode):
    """Stock kademlia 2.2.3 `Server` (fallback while mesh.dht is not importable)."""

    label = "stock kademlia 2.2.3 Server (FALLBACK: mesh.dht not importable)"
    includes_self = False

    def __init__(self, index: int, seed: int, rpc_timeout: float, sweep_interval: float) -> None:
        super().__init__(index, seed)
        from kademlia.network import Server

        self.node_id = hashlib.sha1(self.secret).digest()
        self.server = Server(ksize=20, alpha=3, node_id=self.node_id)
        self.rpc_timeout = rpc_timeout

    async def start(self) -> None:
        await self.server.listen(0, HOST)
        self.server.protocol._wait_timeout = self.rpc_timeout
        self.port = self.server.transport.get_extra_info("sockname")[1]
        self._count(self.server.protocol)

    async def bootstrap(self, addrs: list[tuple[str, int]]) -> None:
        await self.server.bootstrap(addrs)

    async def closest(self, key: bytes, n: int) -> list[bytes]:
        from kademlia.crawling import NodeSpiderCrawl
        from kademlia.node import Node

        target = Node(key)
        nearest = self.server.protocol.router.find_neighbors(target)
        if not nearest:
            return []
        crawl = NodeSpiderCrawl(self.server.protocol, target, nearest, n, self.server.alpha)
        found = await crawl.find()
        return [bytes(x.id) for x in found][:n]

    def live_count(self) -> int:
        return sum(len(b) for b in self.server.protocol.router.buckets)

    async def stop(self) -> None:
        self.server.stop()
        await asyncio.sleep(0)


def mesh_fingerprint() -> str:
    """Which mesh/dht was measured: the last commit touching it, and a hash of its sources
    (it may be an uncommitted working copy)."""
    spec = importlib.util.find_spec("mesh.dht")
    if spec is None or not spec.submodule_search_locations:
        return "mesh.dht not importable"
    root = Path(next(iter(spec.submodule_search_locations)))
    digest = hashlib.sha256()
    for path in sorted(root.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", str(root)],
            capture_output=True,
            text=True,
            cwd=root,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", str(root)],
            capture_output=True,
            text=True,
            cwd=root,
            timeout=10,
            check=False,
        )
        commit = out.stdout.strip() or "uncommitted"
        state = " + uncommitted changes" if dirty.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        commit, state = "unknown", ""
    return f"mesh/dht at {commit}{state}, sources sha256 {digest.hexdigest()[:12]}"


def node_class(backend: str) -> type[MeshNode] | type[KademliaNode]:
    """`mesh` / `kademlia` / `auto` (mesh when importable)."""
    if backend == "mesh" or (backend == "auto" and mesh_available()):
        return MeshNode
    return KademliaNode

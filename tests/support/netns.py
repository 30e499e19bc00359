"""Real multi-host topologies on one machine: each node in its own network namespace.

    topo = Topology(6)                 # namespaces tw-<pid>-<rand>-0..5 and a hub namespace
    try:
        async with NetnsCluster(tmp_path, topo) as cluster:
            topo.partition({3, 4, 5})  # nodes 3..5 on another switch: two halves
            topo.heal()
            topo.loss(2, 20)           # node 2 drops 20% of what it receives
    finally:
        topo.close()
    topo = Topology(6, delay_links=True)
    topo.delay(2, 40, 10)              # node 2's link holds every frame 40 ± 10 ms each way

Layout (nothing touches the host's interfaces or routes): a *hub* namespace holds two bridges
(``br0``, ``br1``); node i's namespace holds ``eth0`` (10.77.0.<i+1>/24) and ``lo``, joined by a
veth pair to ``v<i>`` in the hub. A partition moves ports to ``br1``; healing moves them back.
With ``delay_links=True`` the veth pair is replaced by two TAP devices joined by a user-space
forwarder that delays frames (tests/support/delaylink.py: this kernel has no sch_netem).
The 10.77.0.0/24 traffic only exists between these namespaces.

Nodes run as ``ip netns exec NS python -m taskworker.cli join --listen 10.77.0.<i+1>:0``, their
local API on 127.0.0.1 *inside* the namespace. The test reaches that API through a forwarder
(``python -m tests.support.netns forward HOST_FD TARGET``) run inside the namespace, holding a
listening socket the test process opened on the host's 127.0.0.1 (inherited fd): so
``node.api`` is a host address and ``cluster.stub(i, ...)`` / ``run_cli(..., api=node.api)``
work unchanged. Namespaces of dead test processes (the pid is in the name) are swept first.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

from taskworker.api_runtime import identify, write_runtime_file
from tests.support.delaylink import DelayLinks
from tests.support.nodes import ROOT, NodeCluster, NodeProc

SUBNET = "10.77.0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out


def _nft(ns: str, *args: str, check: bool = True) -> None:
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", *args], capture_output=True,
                         text=True, timeout=30, check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)} in {ns}: {out.stderr.strip()}")


def unavailable_reason() -> str | None:
    """Why namespaces can't be used here (None if they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables")):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode != 0:
            return f"{tool} ({pkg}) not installed (tools/system_deps.sh installs it)"
    name = f"tw-{os.getpid()}-probe{secrets.token_hex(2)}"
    probe = _ip("netns", "add", name, check=False)
    if probe.returncode != 0:
        return f"ip netns not permitted: {probe.stderr.strip()}"
    try:
        if _ip("-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
               check=False).returncode != 0:
            return "veth pairs not permitted"
        try:
            _nft(name, "add", "table", "inet", "twprobe")
        except RuntimeError as exc:
            return f"nftables not usable in a namespace: {exc}"
    finally:
        _ip("netns", "del", name, check=False)
    return None


def sweep_stale() -> None:
    """Delete tw-<pid>-* namespaces left by test processes that no longer exist."""
    listing = _ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) >= 3 and parts[0] == "tw" and parts[1].isdigit():
            pid = int(parts[1])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                _ip("netns", "del", name, check=False)
            except PermissionError:
                pass


class Topology:
    """N namespaces on a two-bridge switch; close() always (it is also registered atexit)."""

    def __init__(self, n: int, delay_links: bool = False) -> None:
        sweep_stale()
        self.prefix = f"tw-{os.getpid()}-{secrets.token_hex(3)}"
        self.hub = f"{self.prefix}-hub"
        self.names = [f"{self.prefix}-{i}" for i in range(n)]
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(n)]
        self._made: list[str] = []
        self._closed = False
        self.links: DelayLinks | None = None
        self._want_links = delay_links
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        _ip("netns", "add", self.hub)
        self._made.append(self.hub)
        _ip("-n", self.hub, "link", "set", "lo", "up")
        for br in ("br0", "br1"):
            _ip("-n", self.hub, "link", "add", br, "type", "bridge")
            _ip("-n", self.hub, "link", "set", br, "up")
        if self._want_links:        # TAP e<i> (-> node i's eth0) and v<i>, joined by a forwarder
            self.links = DelayLinks(self.hub, len(self.names))
        for i, ns in enumerate(self.names):
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            if self.links is not None:
                _ip("-n", self.hub, "link", "set", f"e{i}", "netns", ns)
                _ip("-n", ns, "link", "set", f"e{i}", "name", "eth0")
            else:
                _ip("-n", self.hub, "link", "add", f"v{i}", "type", "veth", "peer", "name",
                    "eth0", "netns", ns)
            _ip("-n", ns, "addr", "add", f"{self.addresses[i]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", self.hub, "link", "set", f"v{i}", "master", "br0")
            _ip("-n", self.hub, "link", "set", f"v{i}", "up")

    def partition(self, side: set[int]) -> None:
        """Nodes in ``side`` can reach each other but none of the rest (and vice versa)."""
        for i in range(len(self.names)):
            _ip("-n", self.hub, "link", "set", f"v{i}", "master", "br1" if i in side else "br0")

    def heal(self) -> None:
        self.partition(set())

    def loss(self, i: int, percent: int) -> None:
        """Drop ``percent``% of the packets node i receives (nftables in its namespace, random
        per packet; 0 clears). Applied to every node, each path loses that share once. (tc
        netem would do too, but kernels without sch_netem are common in CI sandboxes.)"""
        ns = self.names[i]
        _nft(ns, "delete", "table", "inet", "twloss", check=False)
        if percent > 0:
            _nft(ns, "add", "table", "inet", "twloss")
            _nft(ns, "add", "chain", "inet", "twloss", "in",
                 "{ type filter hook input priority 0; }")
            _nft(ns, "add", "rule", "inet", "twloss", "in", "iifname", "eth0", "numgen",
                 "random", "mod", "100", "<", str(percent), "drop")

    def delay(self, i: int, ms: float, jitter_ms: float = 0) -> None:
        """Hold every frame to and from node i ``ms`` ± ``jitter_ms`` (uniform, order kept);
        0 clears. A path a->b is delayed by both links. Needs ``delay_links=True``."""
        if self.links is None:
            raise RuntimeError("Topology(n, delay_links=True) is needed for delays")
        self.links.set(i, ms, jitter_ms)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.links is not None:
            self.links.close()
        for ns in reversed(self._made):
            # processes still inside keep nothing alive: deleting the name drops the veths
            _ip("netns", "del", ns, check=False)
        atexit.unregister(self.close)


class NetnsNode(NodeProc):
    """A NodeProc run inside namespace ``ns``; its API reached through a host-side forwarder."""

    def __init__(self, data_dir: Path, extra: list[str], env: dict[str, str] | None,
                 ns: str, address: str) -> None:
        super().__init__(data_dir, extra, env)
        self.ns = ns
        self.address = address
        self.inner_api = ""
        self.forwarder: subprocess.Popen[bytes] | None = None

    def start(self, bootstrap: list[str], listen: str = "") -> None:
        args = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "taskworker.cli", "join",
                "--listen", listen or f"{self.address}:0", "--api", "127.0.0.1:0",
                "--data-dir", str(self.data_dir), *[f"--bootstrap={b}" for b in bootstrap],
                *self.extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        self.log = open(self.log_path, "ab")   # noqa: SIM115 - kept open for the process
        self._log_offset = self.log.tell()
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        await super().wait_ready(timeout)
        self.inner_api = self.api
        self._start_forwarder()

    def _start_forwarder(self) -> None:
        self._stop_forwarder()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.api = f"127.0.0.1:{sock.getsockname()[1]}"
        self.forwarder = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "tests.support.netns",
             "forward", str(sock.fileno()), self.inner_api],
            cwd=ROOT, pass_fds=(sock.fileno(),), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=self.log)
        sock.close()                         # the forwarder holds it now
        # the node left its token under its inner port; a CLI given the forwarder's port
        # looks for it under that one (as for a node listening there itself), written in the
        # name of the forwarder, which holds that port (`ip netns exec` execs it: same pid)
        write_runtime_file(int(self.api.rsplit(":", 1)[1]), self.token,
                           identify(self.forwarder.pid))

    def _stop_forwarder(self) -> None:
        if self.forwarder is not None and self.forwarder.poll() is None:
            os.killpg(self.forwarder.pid, signal.SIGKILL)
            self.forwarder.wait()
        self.forwarder = None

    def kill(self) -> None:
        super().kill()
        self._stop_forwarder()

    def terminate(self, timeout: float = 15.0) -> int:
        code = super().terminate(timeout)
        self._stop_forwarder()
        return code


class NetnsCluster(NodeCluster):
    """NodeCluster whose node i runs in ``topology.names[i]`` at ``topology.addresses[i]``."""

    def __init__(self, tmp: Path, topology: Topology, extra: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(tmp, len(topology.names), extra, env)
        self.topology = topology

    async def add(self, count: int, extra: list[str] | None = None) -> list[NodeProc]:
        new: list[NodeProc] = []
        for _ in range(count):
            i = len(self.nodes)
            node = NetnsNode(self.tmp / f"node{i}", extra or self.extra, self.env,
                             self.topology.names[i], self.topology.addresses[i])
            boot = [n.peer for n in self.nodes if n.alive and n.peer][:3]
            node.start(boot)
            self.nodes.append(node)
            new.append(node)
            if not boot:
                await node.wait_ready()
        for node in new:
            await node.wait_ready()
        return new

    async def restart(self, index: int) -> NodeProc:
        old = self.nodes[index]
        assert isinstance(old, NetnsNode)
        old.kill()
        node = NetnsNode(old.data_dir, old.extra, self.env, old.ns, old.address)
        node.start([n.peer for n in self.live() if n is not old and n.peer][:3])
        self.nodes[index] = node
        await node.wait_ready()
        return node


async def _forward(fd: int, target: str) -> None:
    host, port = target.rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    sock = socket.socket(fileno=fd)
    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "forward":
        asyncio.run(_forward(int(sys.argv[2]), sys.argv[3]))
    else:
        sys.exit("usage: python -m tests.support.netns forward FD HOST:PORT")

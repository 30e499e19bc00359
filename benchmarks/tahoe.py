"""Tahoe-LAFS 1.20.0 grid on loopback, the side-by-side anchor for storage benchmarks.

Install (once, needs PyPI; Tahoe is *not* a tw-mesh dependency, it gets its own venv under the
git-ignored ``benchmarks/out/``)::

    .venv/bin/python -m benchmarks.tahoe --install      # -> benchmarks/out/tahoe-venv/bin/tahoe

Self-test (starts a grid, times 1 KiB / 64 MiB immutable and 1 MiB MDMF, stops it)::

    .venv/bin/python -m benchmarks.tahoe --selftest [--runs 5] [--big-mib 64] [--curl]

(``--curl`` adds rows timed with the design notes' recipe, ``curl -T`` / ``curl -o``;
``--write-results`` appends a "Tahoe-LAFS anchor self-test" section to benchmarks/RESULTS.md.)

Use from a benchmark (everything must run in one private network namespace, see
``benchmarks/netns.py``; Tahoe nodes open a log port on 0.0.0.0)::

    from benchmarks.netns import reexec_in_private_netns
    from benchmarks.tahoe import TahoeGrid

    reexec_in_private_netns()              # first thing in main(), before any node starts
    with TahoeGrid(Path(tmp)) as grid:     # or: async with TahoeGrid(...) as grid
        cap = grid.upload(os.urandom(1 << 20))
        assert len(grid.download(cap)) == 1 << 20

The grid is the design-notes recipe: one introducer, ``storage_nodes`` (5) storage nodes and one
client (``--shares-needed=4 --shares-happy=5 --shares-total=6``), every listener
``tcp:PORT:interface=127.0.0.1`` on a free port found by binding port 0, each node started with
``tahoe run --allow-stdin-close`` in its own process group. ``start()`` returns once the client
sees at least ``happy`` storage servers connected; ``stop()`` kills the process groups. Methods
are synchronous (blocking HTTP on the client's web API, via httpx); from asyncio code wrap them
in ``asyncio.to_thread`` (a blocking call on the loop would also stall any tw-mesh nodes
running in that loop). ``time_immutable(grid, size)`` and ``time_mutable(grid, size)`` time one
verified round trip each, so a comparison can interleave Tahoe and tw-mesh runs.

Pitfalls: always upload fresh random data (convergent encryption deduplicates identical files,
a repeated upload is then nearly free); files of 55 bytes or less become LIT caps (the data is
in the cap, no server is touched), so latency probes must be larger (1 KiB is fine); start-up
takes ~7-15 s; the idle grid uses ~0.07 CPU-seconds per second. Set ``TW_MESH_TAHOE_VENV`` to
use a Tahoe venv elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import httpx

from benchmarks.netns import in_private_netns, reexec_in_private_netns

TAHOE_VERSION = "1.20.0"
VENV = Path(os.environ.get("TW_MESH_TAHOE_VENV", Path(__file__).parent / "out" / "tahoe-venv"))
RESULTS = Path(__file__).with_name("RESULTS.md")
# Tahoe 1.20.0 supports CPython 3.8-3.12 (tested here with 3.11.7, the same as .venv).
PYTHONS = ("3.11", "3.12", "3.10", "3.9")


def tahoe_bin() -> Path:
    """Path of the ``tahoe`` executable in the dedicated venv; raises if not installed."""
    exe = VENV / "bin" / "tahoe"
    if not exe.exists():
        raise FileNotFoundError(
            f"{exe} missing; install with `.venv/bin/python -m benchmarks.tahoe --install`"
        )
    return exe


def installed() -> bool:
    return (VENV / "bin" / "tahoe").exists()


def _base_python() -> str:
    """An interpreter Tahoe 1.20.0 supports: this one if 3.9-3.12, else one from pyenv."""
    if (3, 9) <= sys.version_info[:2] <= (3, 12):
        return getattr(sys, "_base_executable", sys.executable)
    root = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
    for want in PYTHONS:
        for d in sorted(root.glob(f"{want}.*"), reverse=True):
            if (d / "bin" / "python").exists():
                return str(d / "bin" / "python")
    raise RuntimeError("no CPython 3.9-3.12 found for Tahoe-LAFS 1.20.0")


def install(python: str | None = None) -> Path:
    """Create ``VENV`` and ``pip install tahoe-lafs==1.20.0`` into it (needs network access)."""
    if installed():
        return tahoe_bin()
    if in_private_netns():
        raise RuntimeError("install before entering the private network namespace (no PyPI)")
    py = python or _base_python()
    subprocess.run([py, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, "-q", f"tahoe-lafs=={TAHOE_VERSION}"], check=True)
    out = subprocess.run([str(tahoe_bin()), "--version"], capture_output=True, text=True)
    if TAHOE_VERSION not in out.stdout + out.stderr:
        raise RuntimeError(f"unexpected tahoe --version output: {out.stdout!r} {out.stderr!r}")
    return tahoe_bin()


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _listen(port: int) -> list[str]:
    return [f"--port=tcp:{port}:interface=127.0.0.1", f"--location=tcp:127.0.0.1:{port}"]


class TahoeError(RuntimeError):
    pass


@dataclass
class _Node:
    name: str
    basedir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.basedir / "run.log"

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class TahoeGrid:
    """Introducer + ``storage_nodes`` storage nodes + 1 client, on 127.0.0.1, in ``workdir``.

    ``workdir`` holds one directory per node (``introducer``, ``storage0``..., ``client``) with
    the node's ``run.log``; those directories are wiped at start. Refuses to start outside a
    private network namespace unless ``allow_host_network=True``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        storage_nodes: int = 5,
        needed: int = 4,
        happy: int = 5,
        total: int = 6,
        start_timeout: float = 120.0,
        http_timeout: float = 600.0,
        allow_host_network: bool = False,
    ) -> None:
        if not 1 <= needed <= happy <= total:
            raise ValueError("need 1 <= needed <= happy <= total")
        if happy > storage_nodes:
            raise ValueError("happy > storage_nodes: uploads would never succeed")
        self.workdir = Path(workdir)
        self.storage_nodes = storage_nodes
        self.needed, self.happy, self.total = needed, happy, total
        self.start_timeout = start_timeout
        self.http_timeout = http_timeout
        self.allow_host_network = allow_host_network
        self.introducer = _Node("introducer", self.workdir / "introducer")
        self.storage = [
            _Node(f"storage{i}", self.workdir / f"storage{i}") for i in range(storage_nodes)
        ]
        self.client_node = _Node("client", self.workdir / "client")
        self.web_port = 0
        self._http: httpx.Client | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def nodes(self) -> list[_Node]:
        return [self.introducer, *self.storage, self.client_node]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> TahoeGrid:
        if not (self.allow_host_network or in_private_netns()):
            raise TahoeError(
                "Tahoe nodes listen on 0.0.0.0 (log port): call "
                "benchmarks.netns.reexec_in_private_netns() first, or pass allow_host_network=True"
            )
        tahoe = str(tahoe_bin())
        self.workdir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            shutil.rmtree(node.basedir, ignore_errors=True)
        try:
            self._start(tahoe)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, tahoe: str) -> None:
        ports = free_ports(self.storage_nodes + 2)
        intro_port, self.web_port, node_ports = ports[0], ports[1], ports[2:]
        self._create(
            [[tahoe, "create-introducer", *_listen(intro_port), str(self.introducer.basedir)]]
        )
        self._run(self.introducer)
        furl_file = self.introducer.basedir / "private" / "introducer.furl"
        furl = self._wait(
            lambda: furl_file.exists() and furl_file.read_text().strip(), "introducer.furl"
        )
        assert isinstance(furl, str)
        creates = [
            [
                tahoe,
                "create-node",
                f"--nickname={n.name}",
                f"--introducer={furl}",
                *_listen(p),
                "--webport=none",
                str(n.basedir),
            ]
            for n, p in zip(self.storage, node_ports, strict=True)
        ]
        creates.append(
            [
                tahoe,
                "create-client",
                "--nickname=client",
                f"--introducer={furl}",
                f"--webport=tcp:{self.web_port}:interface=127.0.0.1",
                f"--shares-needed={self.needed}",
                f"--shares-happy={self.happy}",
                f"--shares-total={self.total}",
                str(self.client_node.basedir),
            ]
        )
        self._create(creates)
        for node in [*self.storage, self.client_node]:
            self._run(node)
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(self.http_timeout, connect=10.0),
            trust_env=False,
        )
        self._wait(
            lambda: self.connected_servers() >= self.happy, f"{self.happy} connected servers"
        )

    def _create(self, cmds: list[list[str]]) -> None:
        """Run ``tahoe create-*`` commands in parallel (each is a ~1 s Python start-up)."""
        procs = [
            subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for c in cmds
        ]
        for cmd, p in zip(cmds, procs, strict=True):
            out, _ = p.communicate(timeout=self.start_timeout)
            if p.returncode != 0:
                raise TahoeError(
                    f"{' '.join(cmd[1:3])} failed ({p.returncode}): {out.decode()[-2000:]}"
                )

    def _run(self, node: _Node) -> None:
        log = node.log.open("ab")
        try:
            node.proc = subprocess.Popen(
                [str(tahoe_bin()), "run", "--allow-stdin-close", str(node.basedir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group, killed as a whole in stop()
            )
        finally:
            log.close()

    def _wait(self, cond: Callable[[], object], what: str) -> object:
        deadline = time.monotonic() + self.start_timeout
        while True:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise TahoeError(f"{node.name} exited ({node.proc.returncode}):\n{node.tail()}")
            try:
                got = cond()
            except (httpx.HTTPError, OSError, ValueError):
                got = None
            if got:
                return got
            if time.monotonic() > deadline:
                raise TahoeError(f"timed out waiting for {what}:\n{self.client_node.tail()}")
            time.sleep(0.1)

    def connected_servers(self) -> int:
        """Storage servers the client is connected to (from ``GET /?t=json``)."""
        r = self.http.get("/", params={"t": "json"})
        r.raise_for_status()
        servers: list[dict[str, Any]] = r.json().get("servers", [])
        return sum(
            1
            for s in servers
            if str(s.get("connection_status", "")).lower().startswith("connected")
        )

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by all running Tahoe node processes.

        Differences around an operation give its CPU cost on the Tahoe side (client + servers;
        10 ms clock ticks). Less load-sensitive than wall time, but not immune: on this 2-CPU
        VM a 64 MiB upload cost ~1.0 CPU-s at load average 8 and ~2.5 CPU-s at load 30.
        """
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                stat = Path(f"/proc/{node.proc.pid}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    def stop(self) -> None:
        """Kill every node's process group (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        if self._http is not None:
            self._http.close()
            self._http = None
        live = [n for n in self.nodes if n.proc is not None]
        for node in live:
            _killpg(node.proc, signal.SIGTERM)  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        for node in live:
            assert node.proc is not None
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _killpg(node.proc, signal.SIGKILL)  # stragglers in the group, if any
            node.proc.wait()
            node.proc = None

    def kill_storage(self, index: int) -> None:
        """``kill -9`` one storage node's process group (for failure experiments)."""
        node = self.storage[index]
        if node.proc is not None:
            _killpg(node.proc, signal.SIGKILL)
            node.proc.wait()
            node.proc = None

    def __enter__(self) -> TahoeGrid:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> TahoeGrid:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- web API ---------------------------------------------------------------------------
    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            raise TahoeError("grid not started")
        return self._http

    def _ok(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            raise TahoeError(
                f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:500]}"
            )
        return r

    def upload(self, data: bytes) -> str:
        """Immutable (CHK) upload via ``PUT /uri``; returns the read cap."""
        return self._ok(self.http.put("/uri", content=data)).text.strip()

    def download(self, cap: str) -> bytes:
        """``GET /uri/CAP``: the whole file."""
        return self._ok(self.http.get(f"/uri/{cap}")).content

    def mutable_create(self, data: bytes, fmt: str = "MDMF") -> str:
        """``PUT /uri?format=MDMF`` (or SDMF); returns the write cap."""
        return self._ok(self.http.put("/uri", params={"format": fmt}, content=data)).text.strip()

    def mutable_modify(self, cap: str, data: bytes) -> None:
        """Replace a mutable file's contents: ``PUT /uri/WRITECAP``."""
        self._ok(self.http.put(f"/uri/{cap}", content=data))

    def mutable_read(self, cap: str) -> bytes:
        return self.download(cap)

    def check(self, cap: str, *, repair: bool = False) -> dict[str, Any]:
        """``POST /uri/CAP?t=check&output=JSON`` (``repair=true`` rebuilds missing shares)."""
        params = {"t": "check", "output": "JSON", "repair": "true" if repair else "false"}
        result: dict[str, Any] = self._ok(self.http.post(f"/uri/{cap}", params=params)).json()
        return result


def _killpg(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- self-test ---------------------------------------------------------------------------------
@dataclass
class Timing:
    op: str
    size: int
    runs: list[float]
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def row(self) -> str:
        mbs = f"{self.size / self.median / 1e6:.1f}" if self.size >= 1 << 20 else ""
        cpu = f"{statistics.median(self.cpu):.3f}" if self.cpu else ""
        return (
            f"| {self.op} | {_size(self.size)} | {self.median:.3f} | {min(self.runs):.3f} | "
            f"{max(self.runs):.3f} | {mbs} | {cpu} | {len(self.runs)} |"
        )


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def _steps(
    grid: TahoeGrid, steps: list[Callable[[], object]], cpu: list[float] | None
) -> list[tuple[float, object]]:
    """Run ``steps`` in order: (wall seconds, result) each; per-step grid CPU into ``cpu``."""
    out = []
    for step in steps:
        c0 = grid.cpu_seconds() if cpu is not None else 0.0
        t0 = time.perf_counter()
        result = step()
        out.append((time.perf_counter() - t0, result))
        if cpu is not None:
            cpu.append(grid.cpu_seconds() - c0)
    return out


def time_immutable(
    grid: TahoeGrid, size: int, cpu: list[float] | None = None
) -> tuple[float, float]:
    """One immutable round trip of ``size`` fresh random bytes: (upload s, download s).

    Verifies the bytes. Public so a comparison benchmark can interleave Tahoe and tw-mesh runs
    (the machine is shared; load drifts between back-to-back blocks of runs). With ``cpu``,
    the Tahoe processes' CPU seconds for upload and download are appended to it.
    """
    data = os.urandom(size)  # fresh every run: Tahoe deduplicates identical files
    ((t_up, cap),) = _steps(grid, [lambda: grid.upload(data)], cpu)
    ((t_down, got),) = _steps(grid, [lambda: grid.download(str(cap))], cpu)
    if got != data:
        raise TahoeError(f"round-trip mismatch for {size} bytes")
    return t_up, t_down


def time_mutable(
    grid: TahoeGrid, size: int = 1 << 20, fmt: str = "MDMF", cpu: list[float] | None = None
) -> tuple[float, float, float]:
    """Create, modify (full overwrite), read a mutable file: (create s, modify s, read s).

    With ``cpu``, the Tahoe processes' CPU seconds for the three steps are appended to it.
    """
    data, new = os.urandom(size), os.urandom(size)
    ((t_c, cap),) = _steps(grid, [lambda: grid.mutable_create(data, fmt)], cpu)
    (t_m, _), (t_r, got) = _steps(
        grid, [lambda: grid.mutable_modify(str(cap), new), lambda: grid.mutable_read(str(cap))], cpu
    )
    if got != new:
        raise TahoeError("mutable read after modify returned other bytes")
    return t_c, t_m, t_r


def _curl_round_trip(grid: TahoeGrid, workdir: Path, size: int) -> tuple[float, float]:
    """The design notes' recipe: ``curl -T file /uri`` then ``curl -o file /uri/CAP``."""
    src, dst = workdir / "curl-in", workdir / "curl-out"
    src.write_bytes(os.urandom(size))
    t0 = time.perf_counter()
    cap = subprocess.run(
        ["curl", "-sSf", "--noproxy", "*", "-T", str(src), f"{grid.url}/uri"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    t1 = time.perf_counter()
    subprocess.run(
        ["curl", "-sSf", "--noproxy", "*", "-o", str(dst), f"{grid.url}/uri/{cap}"], check=True
    )
    t2 = time.perf_counter()
    if dst.read_bytes() != src.read_bytes():
        raise TahoeError("curl round-trip mismatch")
    src.unlink()
    dst.unlink()
    return t1 - t0, t2 - t1


def selftest(
    workdir: Path, runs: int, big: int, small_runs: int, curl: bool = False
) -> list[Timing]:
    results: list[Timing] = []
    t0 = time.perf_counter()
    with TahoeGrid(workdir) as grid:
        print(
            f"grid up in {time.perf_counter() - t0:.1f} s ({grid.connected_servers()} servers, "
            f"web {grid.url})",
            flush=True,
        )
        grid.download(grid.upload(os.urandom(1024)))  # warm-up: connections, first-use costs
        for size, n in ((1024, small_runs), (big, runs)):
            up, down = Timing("immutable upload", size, []), Timing("immutable download", size, [])
            cup = Timing("immutable upload, curl -T", size, [])
            cdown = Timing("immutable download, curl -o", size, [])
            for _ in range(n):
                cpu: list[float] = []
                dt_up, dt_down = time_immutable(grid, size, cpu)
                up.runs.append(dt_up)
                down.runs.append(dt_down)
                up.cpu.append(cpu[0])
                down.cpu.append(cpu[1])
                if curl:
                    a, b = _curl_round_trip(grid, workdir, size)
                    cup.runs.append(a)
                    cdown.runs.append(b)
            rows = [up, down, cup, cdown] if curl else [up, down]
            results += rows
            print(*(t.row() for t in rows), sep="\n", flush=True)
        mib = 1 << 20
        create, modify, read = (
            Timing(f"MDMF {op}", mib, []) for op in ("create", "modify", "read")
        )
        for _ in range(runs):
            cpu = []
            wall = time_mutable(grid, mib, cpu=cpu)
            for t, secs, c in zip((create, modify, read), wall, cpu, strict=True):
                t.runs.append(secs)
                t.cpu.append(c)
        results += [create, modify, read]
        for t in (create, modify, read):
            print(t.row(), flush=True)
    return results


HEADER = (
    "| op | size | median s | min s | max s | MB/s (median) | Tahoe CPU s (median) | runs |\n"
    "|---|---|---|---|---|---|---|---|"
)


def _append_results(results: list[Timing], load: str) -> None:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"\n## Tahoe-LAFS anchor self-test ({when})\n\n"
        f"`python -m benchmarks.tahoe --selftest`: tahoe-lafs {TAHOE_VERSION}, 1 introducer + 5 "
        f"storage nodes + 1 client, 4-of-6 (happy 5), loopback in a private netns, web API "
        f"via httpx; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load} after the run. MB/s = 10^6 bytes/s.\n\n{HEADER}\n"
        + "\n".join(t.row() for t in results)
        + "\n"
    )
    with RESULTS.open("a") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--install", action="store_true", help="create the Tahoe venv (needs PyPI)")
    ap.add_argument("--selftest", action="store_true", help="start a grid and time it")
    ap.add_argument("--runs", type=int, default=5, help="runs for 64 MiB and MDMF (median)")
    ap.add_argument("--small-runs", type=int, default=15, help="runs for 1 KiB")
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument(
        "--curl", action="store_true", help="also time curl -T / curl -o (the notes' recipe)"
    )
    ap.add_argument("--workdir", type=Path, help="grid directory (default: a temp dir, removed)")
    ap.add_argument(
        "--write-results",
        action="store_true",
        help="append a 'Tahoe-LAFS anchor self-test' section to benchmarks/RESULTS.md",
    )
    args = ap.parse_args(argv)
    if args.install:
        print(install())
    if not args.selftest:
        if not args.install:
            ap.print_help()
        return
    tahoe_bin()  # fail before re-exec if not installed
    reexec_in_private_netns()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds the `with`, so the nodes get killed

    signal.signal(signal.SIGTERM, on_term)
    if args.workdir:
        results = selftest(args.workdir, args.runs, args.big_mib << 20, args.small_runs, args.curl)
    else:
        with tempfile.TemporaryDirectory(prefix="tahoe-grid-") as tmp:
            results = selftest(Path(tmp), args.runs, args.big_mib << 20, args.small_runs, args.curl)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nload average after the run: {load} ({os.cpu_count()} CPUs)")
    print(HEADER + "\n" + "\n".join(t.row() for t in results))
    if args.write_results:
        _append_results(results, load)


if __name__ == "__main__":
    main()

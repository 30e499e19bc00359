"""The Tahoe-LAFS anchor harness (benchmarks/tahoe.py) and the private-netns helper.

The grid test is slow (~15-30 s) and needs root, ``unshare`` and the Tahoe venv
(``.venv/bin/python -m benchmarks.tahoe --install``); it is skipped when any is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks import netns, tahoe

ROOT = Path(__file__).resolve().parents[1]
can_unshare = os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("ip")


def _in_netns(code: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with this Python under ``unshare -n`` via the helper under test."""
    script = "from benchmarks.netns import reexec_in_private_netns\nreexec_in_private_netns()\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(netns.MARKER, None)
    return subprocess.run(
        [sys.executable, "-c", script + textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_grid_refuses_host_network(tmp_path: Path) -> None:
    if netns.in_private_netns():
        pytest.skip("already inside a private network namespace")
    with pytest.raises(tahoe.TahoeError, match="netns"):
        tahoe.TahoeGrid(tmp_path).start()


def test_grid_parameters_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        tahoe.TahoeGrid(tmp_path, storage_nodes=3, happy=5)


@pytest.mark.skipif(not can_unshare, reason="needs root with unshare and ip")
def test_reexec_lands_in_private_netns() -> None:
    r = _in_netns(
        """
        import os, subprocess
        from benchmarks.netns import interfaces
        print(interfaces())
        print(subprocess.run(["ip", "-o", "link", "show", "lo"], capture_output=True, text=True).stdout.strip())
        print(os.getpid())
        """,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    first, second, third = r.stdout.splitlines()[:3]
    assert first == "['lo']"
    assert "UP" in second.split(">", 1)[0]
    assert third == "1"  # PID 1 of its own PID namespace


def _cmdlines() -> list[bytes]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            out.append((d / "cmdline").read_bytes())
        except OSError:
            pass
    return out


@pytest.mark.skipif(not can_unshare, reason="needs root with unshare and ip")
def test_killing_the_benchmark_kills_what_it_started() -> None:
    marker = f"{os.getpid() % 1000}.{time.time_ns() % 10**6}"
    script = textwrap.dedent(
        f"""
        import subprocess, sys, time
        from benchmarks.netns import reexec_in_private_netns
        reexec_in_private_netns()
        subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
        print("started", flush=True)
        time.sleep(60)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(netns.MARKER, None)
    p = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "started"
        assert any(marker.encode() in c for c in _cmdlines())
        p.kill()  # SIGKILL to the outer `unshare`; no cleanup code of ours runs
        p.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(marker.encode() in c for c in _cmdlines()):
            assert time.monotonic() < deadline, "process started in the namespace survived"
            time.sleep(0.1)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stdout is not None:
            p.stdout.close()


@pytest.mark.slow
@pytest.mark.skipif(not can_unshare, reason="needs root with unshare and ip")
@pytest.mark.skipif(not tahoe.installed(), reason="Tahoe venv missing (benchmarks.tahoe --install)")
def test_grid_round_trips(tmp_path: Path) -> None:
    r = _in_netns(
        f"""
        import os
        from pathlib import Path
        from benchmarks.tahoe import TahoeGrid
        with TahoeGrid(Path({str(tmp_path / "grid")!r})) as g:
            assert g.connected_servers() >= 5
            for size in (0, 1, 1024, 3 << 20):
                data = os.urandom(size)
                cap = g.upload(data)
                assert g.download(cap) == data, size
            data = os.urandom(1 << 20)
            cap = g.mutable_create(data)
            assert cap.startswith("URI:MDMF:"), cap
            assert g.mutable_read(cap) == data
            new = os.urandom(1 << 20)
            g.mutable_modify(cap, new)
            assert g.mutable_read(cap) == new
            pids = [n.proc.pid for n in g.nodes]
        for pid in pids:
            assert not os.path.exists(f"/proc/{{pid}}") or \\
                open(f"/proc/{{pid}}/stat").read().split()[2] == "Z", pid
        print("ok")
        """,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("ok")

"""The monitor on real nodes: /metrics, /api/status, the page in headless Chromium, status."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proto import taskworker_pb2, taskworker_pb2_grpc
from tests.support.nodes import NodeCluster, NodeProc, run_cli

# Repair checks often (so leaders report under-replicated files) but never rebuilds here.
PEER = ["--sweep-interval", "0.5", "--repair-interval", "0.5", "--repair-grace", "600"]
MONITOR = [*PEER, "--monitor", "--http", "127.0.0.1:0", "--monitor-interval", "0.5"]
_HTTP = re.compile(r"monitor http on http://([\d.]+):(\d+)/")


def http_address(node: NodeProc) -> str:
    found = _HTTP.findall(node.log_path.read_text(errors="replace"))
    assert found, "the monitor did not log its HTTP address"
    return f"http://{found[-1][0]}:{found[-1][1]}"


def metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url)


async def wait_metric(base: str, name: str, want: float, timeout: float = 30.0) -> dict[
        str, list[tuple[dict[str, str], float]]]:
    deadline = time.monotonic() + timeout
    while True:
        resp = await get(base + "/metrics")
        assert resp.status_code == 200
        found = metrics(resp.text)
        if found.get(name, [({}, -1.0)])[0][1] == want:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never reached {want}: {found.get(name)}")
        await asyncio.sleep(0.3)


async def wait_metric_above(base: str, name: str, floor: float, timeout: float = 30.0) -> dict[
        str, list[tuple[dict[str, str], float]]]:
    deadline = time.monotonic() + timeout
    while True:
        found = metrics((await get(base + "/metrics")).text)
        if found.get(name, [({}, floor)])[0][1] > floor:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} stayed at {floor}")
        await asyncio.sleep(0.3)


def node_status(node: NodeProc) -> dict[str, object]:
    out = run_cli("status", "--json", api=node.api)
    assert out.returncode == 0, out.stderr
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


async def test_monitor_metrics_status_and_kill(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 6, extra=PEER) as cluster:
        [mon] = await cluster.add(1, extra=MONITOR)
        await cluster.wait_converged()
        files = cluster.stub(0, taskworker_pb2_grpc.FileServiceStub)
        for i in range(5):
            await files.Push(taskworker_pb2.PushRequest(file_data=bytes([i]) * 5000, public=True,
                                                        stripe_size=4096), timeout=30)
        base = http_address(mon)
        found = await wait_metric(base, "twmesh_peers_live", 7)
        deadline = time.monotonic() + 30
        while found["twmesh_fragments_total"][0][1] < 5 * 2 * 6:   # 5 files, 2 stripes, k+m=6
            assert time.monotonic() < deadline, found["twmesh_fragments_total"]
            await asyncio.sleep(0.3)
            found = metrics((await get(base + "/metrics")).text)
        assert found["twmesh_peers_known"][0][1] == 7
        ups = found["twmesh_peer_up"]
        assert len(ups) == 7 and all(v == 1 for _, v in ups)
        assert found["twmesh_files_under_replicated"][0][1] == 0
        # The fragment total is the sum of what each node reports about itself.
        per_node = sum(v for _, v in found["twmesh_peer_fragments"])
        assert found["twmesh_fragments_total"][0][1] == per_node
        own = 0.0
        for node in cluster.live():
            doc = node_status(node)
            storage = doc["services"].get("storage", {})  # type: ignore[attr-defined]
            own += float(storage.get("fragments", 0) or 0)
        assert per_node == own

        # The JSON view and `tw-mesh status` at the monitor carry the same mesh summary.
        api = (await get(base + "/api/status")).json()
        assert api["peers_up"] == 7 and len(api["peers"]) == 7
        mesh = node_status(mon)["services"]["monitor"]  # type: ignore[index]
        assert mesh["peers_up"] == 7
        assert (await get(base + "/healthz")).text == "ok\n"
        assert (await get(base + "/nope")).status_code == 404

        # A peer killed with -9 drops out of the live count and shows as down; the files that
        # had fragments on it show up as under-replicated (grace 600 s: not rebuilt yet).
        held = node_status(cluster.nodes[1])["services"]["storage"]["fragments"]  # type: ignore[index]
        cluster.nodes[1].kill()
        found = await wait_metric(base, "twmesh_peers_live", 6)
        down = [labels for labels, v in found["twmesh_peer_up"] if v == 0]
        assert len(down) == 1
        assert cluster.nodes[1].peer in down[0]["address"]
        if held:
            found = await wait_metric_above(base, "twmesh_files_under_replicated", 0)
        page = (await get(base + "/")).text
        assert '<span id="live-peers">6</span>' in page and "down" in page
        if held:
            assert "below k+m" in page


async def test_monitor_refuses_foreign_host_and_methods(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 1, extra=MONITOR) as cluster:
        base = http_address(cluster.nodes[0])
        async with httpx.AsyncClient(timeout=10) as client:
            evil = await client.get(base + "/metrics", headers={"Host": "evil.example:80"})
            assert evil.status_code == 403          # DNS rebinding
            post = await client.post(base + "/metrics", content=b"x")
            assert post.status_code == 405
        out = run_cli("join", "--monitor", "--http", "0.0.0.0:0", "--listen", "127.0.0.1:0",
                      "--api", "127.0.0.1:0", "--data-dir", str(tmp_path / "remote"), timeout=30)
        assert out.returncode != 0 and b"loopback" in out.stderr


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(chromium() is None,
                    reason="headless Chromium not installed (tools/system_deps.sh installs "
                    "Debian's chromium)")
async def test_status_page_in_headless_chromium(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 3) as cluster:
        [mon] = await cluster.add(1, extra=MONITOR)
        await cluster.wait_converged()
        base = http_address(mon)
        await wait_metric(base, "twmesh_peers_live", 4)
        browser = chromium()
        assert browser is not None
        profile = tmp_path / "chromium-profile"
        args = [browser, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--dump-dom", base + "/"]
        proc = await asyncio.to_thread(subprocess.run, args, capture_output=True, timeout=120,
                                       check=False)
        dom = proc.stdout.decode(errors="replace")
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
        match = re.search(r'<span id="live-peers">(\d+)</span>', dom)
        assert match is not None, dom[:2000]
        assert int(match.group(1)) == 4
        assert "<svg" in dom and 'id="peers"' in dom
        assert dom.count("<tr>") >= 5               # header + 4 peers


async def test_two_monitors_agree(tmp_path: Path) -> None:
    """Several monitors may run; they agree because they read the same peers."""
    async with NodeCluster(tmp_path, 3, extra=PEER) as cluster:
        first, second = await cluster.add(2, extra=MONITOR)
        await cluster.wait_converged()
        files = cluster.stub(0, taskworker_pb2_grpc.FileServiceStub)
        for i in range(3):
            await files.Push(taskworker_pb2.PushRequest(file_data=bytes([i]) * 3000, public=True),
                             timeout=30)
        want = sum(float(node_status(n)["services"]["storage"]["fragments"])  # type: ignore[index]
                   for n in cluster.live())
        deadline = time.monotonic() + 60
        while True:
            views = [metrics((await get(http_address(m) + "/metrics")).text)
                     for m in (first, second)]
            summary = [(v["twmesh_peers_live"][0][1], v["twmesh_fragments_total"][0][1])
                       for v in views]
            if summary[0] == summary[1] == (5, want):
                break
            assert time.monotonic() < deadline, f"monitors disagree: {summary}, want (5, {want})"
            await asyncio.sleep(0.3)

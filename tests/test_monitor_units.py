"""Monitor pieces without nodes: page escaping, charts, HTTP parsing, status extraction."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families

from mesh.context import MeshContext
from taskworker.monitor.httpd import HttpServer, Response
from taskworker.monitor.metrics import build_registry, render
from taskworker.monitor.page import render_page, svg_chart
from taskworker.monitor.peer_state import PeerState, Sample
from taskworker.monitor.poller import MeshPoller


def poller_with(peers: list[PeerState]) -> MeshPoller:
    ctx = cast(MeshContext, SimpleNamespace())
    poller = MeshPoller(ctx)
    poller.peers = {p.node_id: p for p in peers}
    now = time.time()
    for i in range(5):
        poller.history.append(Sample(now + i, 2, float(i), 1000.0 * i, 10.0 * i, 0.0))
    return poller


def peer(node: str, up: bool, services: dict[str, Any]) -> PeerState:
    return PeerState(node_id=node * 8, address=f"127.0.0.1:{len(node)}", up=up,
                     status={"uptime_s": 12.5, "services": services})


def test_page_escapes_peer_strings_and_draws_charts() -> None:
    hostile = peer("ab", True, {"storage": {"fragments": 7}, "repair": {"under_replicated": [
        {"cid": "<script>alert(1)</script>", "healthy": 4, "want": 6}]}})
    hostile.error = "<img src=x onerror=alert(1)>"
    poller = poller_with([hostile, peer("cd", False, {})])
    page = render_page(poller, title="t")
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;" in page
    assert '<span id="live-peers">1</span>' in page
    assert '<span id="fragments-total">7</span>' in page
    assert page.count("<polyline") == 4
    assert "no samples yet" in svg_chart([], lambda s: s.calls_per_s)


def test_metrics_are_parseable_and_add_up() -> None:
    a = peer("ab", True, {"storage": {"fragments": 7, "bytes": 700},
                          "compute": {"executed": 3, "failed": 1,
                                      "sandbox": {"size": 4, "idle": 3}}})
    a.status["api_auth"] = {"refused": {"missing": 2, "malformed": 0, "wrong": 5}}
    b = peer("cd", True, {"storage": {"fragments": 5}})
    text = render(build_registry(poller_with([a, b, peer("ef", False, {})]))).decode()
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
              if not s.labels}
    assert values["twmesh_peers_live"] == 2 and values["twmesh_peers_known"] == 3
    assert values["twmesh_fragments_total"] == 12
    assert values["twmesh_stored_bytes_total"] == 700
    assert "twmesh_peer_sandbox" in text and 'field="idle"' in text
    refused = {(s.labels["node"][:2], s.labels["reason"]): s.value
               for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "twmesh_peer_api_refused_calls_total"}
    assert refused == {("ab", "missing"): 2, ("ab", "malformed"): 0, ("ab", "wrong"): 5}


def test_rates_from_counter_deltas() -> None:
    p = peer("ab", True, {"compute": {"executed": 10, "routed": 5}})
    p.update_rates(100.0)
    p.status["services"]["compute"]["executed"] = 30
    p.update_rates(102.0)
    assert p.calls_per_s == 10.0
    p.status["services"]["compute"]["executed"] = 0     # restarted peer: counters reset
    p.update_rates(103.0)
    assert p.calls_per_s == 10.0


def test_http_handler_rules() -> None:
    server = HttpServer("127.0.0.1", 0, {"/x": lambda: Response(200, b"hi")})
    ok, body = server.handle(b"GET /x?a=1 HTTP/1.1\r\nHost: 127.0.0.1:9100")
    assert ok.status == 200 and body
    assert server.handle(b"HEAD /x HTTP/1.1\r\nHost: localhost")[1] is False
    assert server.handle(b"GET /x HTTP/1.1\r\nHost: attacker.example")[0].status == 403
    assert server.handle(b"GET /x HTTP/1.1\r\nHost: [::1]:80")[0].status == 200
    assert server.handle(b"DELETE /x HTTP/1.1")[0].status == 405
    assert server.handle(b"GET /y HTTP/1.1")[0].status == 404
    assert server.handle(b"garbage")[0].status == 400
    assert server.handle(b"GET /x SPDY/3")[0].status == 400


def test_a_peer_others_gave_stores_up_on_is_flagged() -> None:
    """storage.suspect_peers (node-id prefixes) from every live peer add up per node: the
    summary, the metric and the page show a node that is up but whose stores hang."""
    a = peer("ab", True, {"storage": {"suspect_peers": ["cdcdcdcdcdcdcdcd"]}})
    b = peer("ef", True, {"storage": {"suspect_peers": ["cdcdcdcdcdcdcdcd", "ab" * 8]}})
    stuck = peer("cd", True, {"storage": {"suspect_peers": []}})
    gone = peer("01", False, {"storage": {"suspect_peers": ["ab" * 8]}})  # down: not counted
    poller = poller_with([a, b, stuck, gone])
    views = {p["node_id"][:2]: p["suspected_by"] for p in poller.summary()["peers"]}
    assert views == {"ab": 1, "cd": 2, "ef": 0, "01": 0}
    text = render(build_registry(poller)).decode()
    got = {s.labels["node"][:2]: s.value for f in text_string_to_metric_families(text)
           for s in f.samples if s.name == "twmesh_peer_suspected_by"}
    assert got == {"ab": 1.0, "cd": 2.0, "ef": 0.0, "01": 0.0}
    assert "stores hang (suspected by 2)" in render_page(poller, title="t")


def test_full_peers_are_flagged() -> None:
    """storage.full (storage/capacity.py: usable space under 64 MiB) reaches the summary,
    the metrics and the page; a peer without the field is not full."""
    full = peer("ab", True, {"storage": {"full": True, "usable_bytes": 0}})
    roomy = peer("cd", True, {"storage": {"full": False}})
    old = peer("ef", True, {"storage": {}})
    poller = poller_with([full, roomy, old])
    views = {p["node_id"][:2]: p["storage_full"] for p in poller.summary()["peers"]}
    assert views == {"ab": True, "cd": False, "ef": False}
    text = render(build_registry(poller)).decode()
    got = {s.labels["node"][:2]: s.value for f in text_string_to_metric_families(text)
           for s in f.samples if s.name == "twmesh_peer_storage_full"}
    assert got == {"ab": 1.0, "cd": 0.0, "ef": 0.0}
    assert render_page(poller, title="t").count("storage full") == 1

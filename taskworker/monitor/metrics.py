"""Prometheus exposition of the monitor's mesh view (a dedicated CollectorRegistry).

Every scrape renders the poller's latest snapshot: no background state lives in the registry,
so two monitors reading the same peers export the same figures.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from taskworker.monitor.poller import MeshPoller

PREFIX = "twmesh"


class MeshCollector(Collector):
    def __init__(self, poller: MeshPoller) -> None:
        self.poller = poller

    def collect(self) -> Iterator[Metric]:
        peers = list(self.poller.peers.values())
        up = [p for p in peers if p.up]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        yield gauge("peers_live", "Peers answering mesh.Status (this monitor included)", len(up))
        yield gauge("peers_known", "Peers discovered, up or recently down", len(peers))
        yield gauge("fragments_total", "Fragments held by live peers", sum(p.fragments for p in up))
        yield gauge("stored_bytes_total", "Fragment bytes held by live peers",
                    sum(p.stored_bytes for p in up))
        yield gauge("calls_per_second", "Calls per second across live peers",
                    sum(p.calls_per_s for p in up))
        summary_files = self.poller.summary()["files_under_replicated"]
        yield gauge("files_under_replicated", "Files reported below k+m healthy fragments",
                    len(summary_files))
        yield gauge("monitor_rounds", "Polling rounds completed", self.poller.rounds)

        per_peer: list[tuple[str, str, str]] = [
            ("peer_up", "1 if the peer answered the last poll", "up"),
            ("peer_uptime_seconds", "Peer uptime", "uptime_s"),
            ("peer_disk_used_bytes", "Disk used on the peer's data volume", "disk_used"),
            ("peer_disk_free_bytes", "Disk free on the peer's data volume", "disk_free"),
            ("peer_fragments", "Fragments the peer holds", "fragments"),
            ("peer_stored_bytes", "Fragment bytes the peer holds", "stored_bytes"),
            ("peer_calls_per_second", "Calls per second served or routed", "calls_per_s"),
            ("peer_status_rtt_p99_seconds", "p99 round trip of mesh.Status", "status_rtt_p99_s"),
            ("peer_errors", "Errors the peer's services report", "errors"),
            ("peer_storage_full", "1 if the peer refuses new data: usable space (free minus its "
             "--reserved-space) is under 64 MiB", "storage_full"),
        ]
        for name, doc, attr in per_peer:
            fam = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["node", "address"])
            for p in peers:
                fam.add_metric([p.node_id[:16], p.address], float(getattr(p, attr)))
            yield fam
        suspected = self.poller.suspected_by()
        fam = GaugeMetricFamily(f"{PREFIX}_peer_suspected_by",
                                "Live peers that gave a store up on this peer in the last minute "
                                "(answers Status but its storage hangs, e.g. a stuck disk)",
                                labels=["node", "address"])
        for p in peers:
            fam.add_metric([p.node_id[:16], p.address], float(suspected.get(p.node_id, 0)))
        yield fam
        lat = GaugeMetricFamily(f"{PREFIX}_peer_call_latency_p99_seconds",
                                "p99 call latency the peer's services report",
                                labels=["node", "address"])
        pool = GaugeMetricFamily(f"{PREFIX}_peer_sandbox", "Sandbox pool figures",
                                 labels=["node", "address", "field"])
        refused = CounterMetricFamily(f"{PREFIX}_peer_api_refused_calls",
                                      "Local-API calls the peer refused (no, a malformed or a "
                                      "wrong token), by reason",
                                      labels=["node", "address", "reason"])
        for p in up:
            if p.p99_latency_s is not None:
                lat.add_metric([p.node_id[:16], p.address], p.p99_latency_s)
            for key, value in sorted(p.sandbox.items()):
                pool.add_metric([p.node_id[:16], p.address, key], value)
            for reason, count in sorted(p.api_refused.items()):
                refused.add_metric([p.node_id[:16], p.address, reason], count)
        yield lat
        yield pool
        yield refused


def build_registry(poller: MeshPoller) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MeshCollector(poller))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

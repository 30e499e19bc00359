"""What the monitor knows of one peer (``PeerState``, from its ``mesh.Status`` JSON) and the
mesh-wide time series (``Sample``); the poller that fills them is poller.py."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

# Counters whose rate is "calls/s": (service, key) in a peer's status JSON.
CALL_COUNTERS = (("compute", "executed"), ("compute", "routed"), ("storage", "peer_calls"),
                 ("storage", "gets"), ("storage", "pushes"), ("proxy", "requests"))
# Counters that add up to "errors".
ERROR_COUNTERS = (("compute", "failed"), ("compute", "sandbox.failures"),
                  ("storage", "fragment_failures"), ("storage", "corrupt_fragments_dropped"),
                  ("repair", "failures"), ("proxy", "errors"))
HISTORY = 360              # samples kept for the charts (30 min at the default 5 s interval)


def lookup(doc: Any, path: str) -> Any:
    """``doc["a"]["b"]`` for ``path`` "a.b", or None."""
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def number(doc: Any, *paths: str) -> float | None:
    """The first numeric value found at one of ``paths`` (bools excluded)."""
    for path in paths:
        value = lookup(doc, path)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


@dataclass
class PeerState:
    """What the monitor knows about one peer."""

    node_id: str
    address: str
    roles: tuple[str, ...] = ()
    capacity_bytes: int = 0
    free_bytes: int = 0
    up: bool = False
    last_ok: float = 0.0
    last_try: float = 0.0
    failures: int = 0
    error: str = ""
    status: dict[str, Any] = field(default_factory=dict)
    rtt: deque[float] = field(default_factory=lambda: deque(maxlen=100))
    calls_total: float = 0.0
    calls_per_s: float = 0.0
    _prev_calls: tuple[float, float] | None = None

    # -- derived figures (whatever the services' status() documents expose) --------------
    @property
    def services(self) -> dict[str, Any]:
        svc = self.status.get("services")
        return svc if isinstance(svc, dict) else {}

    @property
    def uptime_s(self) -> float:
        return number(self.status, "uptime_s") or 0.0

    @property
    def fragments(self) -> float:
        return number(self.services, "storage.fragments", "storage.fragments_held",
                      "storage.fragment_count", "storage.store.fragments") or 0.0

    @property
    def stored_bytes(self) -> float:
        return number(self.services, "storage.fragment_bytes", "storage.bytes",
                      "storage.stored_bytes", "storage.store.bytes") or 0.0

    @property
    def disk_free(self) -> float:
        return number(self.services, "storage.disk_free", "storage.free_bytes") \
            or float(self.free_bytes)

    @property
    def disk_used(self) -> float:
        used = number(self.services, "storage.disk_used", "storage.used_bytes")
        if used is not None:
            return used
        return float(max(0, self.capacity_bytes - self.free_bytes))

    @property
    def errors(self) -> float:
        total = sum(number(self.services, f"{svc}.{key}") or 0.0 for svc, key in ERROR_COUNTERS)
        return total + (number(self.status, "channel.refused_frames") or 0.0)

    @property
    def sandbox(self) -> dict[str, float]:
        pool = lookup(self.services, "compute.sandbox")
        if not isinstance(pool, dict):
            return {}
        return {k: float(v) for k, v in pool.items()
                if isinstance(v, int | float) and not isinstance(v, bool)}

    @property
    def api_refused(self) -> dict[str, float]:
        """Local-API calls the peer refused for want of a valid token, by reason."""
        found = lookup(self.status, "api_auth.refused")
        if not isinstance(found, dict):
            return {}
        return {str(k): float(v) for k, v in found.items()
                if isinstance(v, int | float) and not isinstance(v, bool)}

    @property
    def p99_latency_s(self) -> float | None:
        """The services' own p99 call latency if they report one, else None."""
        ms = number(self.services, "compute.p99_ms", "storage.p99_ms", "compute.latency_p99_ms")
        return ms / 1000.0 if ms is not None else None

    @property
    def status_rtt_p99_s(self) -> float:
        if not self.rtt:
            return 0.0
        ordered = sorted(self.rtt)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    @property
    def storage_full(self) -> float:
        """1 if the peer has less usable space than its reserve allows new data (capacity.py)."""
        return 1.0 if lookup(self.services, "storage.full") is True else 0.0

    def suspects(self) -> list[str]:
        """Node-id prefixes this peer gave a store up on lately (storage/tail.py)."""
        found = lookup(self.services, "storage.suspect_peers")
        return [str(x) for x in found] if isinstance(found, list) else []

    def under_replicated(self) -> list[dict[str, Any]]:
        """Files this peer (as a manifest holder / repairer) reports below k+m."""
        files = lookup(self.services, "repair.under_replicated")
        return [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []

    def update_rates(self, now: float) -> None:
        total = sum(number(self.services, f"{svc}.{key}") or 0.0 for svc, key in CALL_COUNTERS)
        if self._prev_calls is not None:
            t0, c0 = self._prev_calls
            if now > t0 and total >= c0:
                self.calls_per_s = (total - c0) / (now - t0)
        self._prev_calls = (now, total)
        self.calls_total = total


@dataclass
class Sample:
    """One point of the mesh-wide time series."""

    t: float
    peers_up: int
    calls_per_s: float
    stored_bytes: float
    fragments: float
    disk_used: float

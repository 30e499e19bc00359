"""The mesh monitor: `tw-mesh join --monitor --http 127.0.0.1:9100`.

An ordinary peer that also discovers every peer, polls each one's ``mesh.Status`` over the
sealed channel (``poller``), and serves Prometheus ``/metrics`` (``metrics``), an HTML status
page (``page``), ``/api/status`` (JSON) and ``/healthz`` on loopback (``httpd``). Its own
``status()`` carries the mesh summary, so `tw-mesh status --api <monitor>` prints the mesh.
Nothing depends on a monitor being up; several may run and agree since they read the same peers.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc

from mesh.context import MeshContext
from mesh.errors import InvalidArgumentError
from taskworker.monitor.httpd import HttpServer, Response, is_loopback
from taskworker.monitor.metrics import build_registry, render
from taskworker.monitor.page import render_page
from taskworker.monitor.poller import MeshPoller

log = logging.getLogger("tw-mesh")

DEFAULT_HTTP = ("127.0.0.1", 9100)
DEFAULT_INTERVAL = 5.0


class MonitorService:
    name = "monitor"

    def __init__(self, ctx: MeshContext, *, http: tuple[str, int] | None,
                 interval: float = DEFAULT_INTERVAL, allow_remote: bool = False) -> None:
        if http is not None and not is_loopback(http[0]) and not allow_remote:
            raise InvalidArgumentError(
                f"the monitor serves on loopback only, not {http[0]} "
                "(pass --monitor-allow-remote to expose it; it has no auth)")
        self.ctx = ctx
        self.poller = MeshPoller(ctx, interval=interval, timeout=max(1.0, min(5.0, interval * 2)))
        self.registry = build_registry(self.poller)
        self.title = f"tw-mesh monitor {ctx.identity.node_id_hex[:16]}"
        self.http = HttpServer(*http, routes={
            "/": self._page, "/index.html": self._page, "/metrics": self._metrics,
            "/api/status": self._api, "/healthz": self._healthz}) if http else None
        ctx.registry["monitor"] = self

    def attach(self, api_server: grpc.aio.Server) -> None:
        """No servicer of its own: the mesh view rides in the node's Status."""

    async def start(self) -> None:
        await self.poller.start()
        if self.http is not None:
            await self.http.start()
            log.info("monitor http on http://%s:%d/", self.http.host, self.http.port)

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        await self.poller.stop()

    def status(self) -> dict[str, Any]:
        doc = self.poller.summary()
        doc["http"] = f"{self.http.host}:{self.http.port}" if self.http else ""
        return doc

    def load(self) -> int:
        return 0

    # -- routes ------------------------------------------------------------------------------
    def _page(self) -> Response:
        return Response(200, render_page(self.poller, title=self.title).encode(),
                        "text/html; charset=utf-8")

    def _metrics(self) -> Response:
        return Response(200, render(self.registry), "text/plain; version=0.0.4; charset=utf-8")

    def _api(self) -> Response:
        return Response(200, json.dumps(self.status(), indent=1).encode(), "application/json")

    def _healthz(self) -> Response:
        return Response(200, b"ok\n")


def create(ctx: MeshContext) -> MonitorService | None:
    """The node's monitor with --monitor, else None (repair is storage.healing's service)."""
    if not ctx.settings.get("monitor"):
        return None
    http = ctx.settings.get("monitor_http")
    return MonitorService(
        ctx, http=tuple(http) if http else DEFAULT_HTTP,   # type: ignore[arg-type]
        interval=float(ctx.settings.get("monitor_interval", DEFAULT_INTERVAL)),
        allow_remote=bool(ctx.settings.get("monitor_allow_remote", False)))

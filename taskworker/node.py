"""The composition root: one process = one node (DHT + channel server + local API + services).

Start order matters: the peer gRPC server is up before the DHT announces us, so a peer that
learns about this node can reach it; the local API opens last, when the node can serve.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from mesh.channel import Caller, ChannelPool, ChannelServer
from mesh.channel.tcp_server import TcpListener
from mesh.context import MeshContext, MeshService
from mesh.dht import DEFAULT_MESH, Membership
from mesh.grpc_guard import MalformedRequestInterceptor
from mesh.identity import Identity, load_or_create
from proto import mesh_pb2
from taskworker.api import NodeServicer
from taskworker.api_auth import ApiTokenInterceptor
from taskworker.api_runtime import remove_runtime_file, write_runtime_file
from taskworker.api_token import TOKEN_FILE, TokenError, UserTokens, load_or_create_token
from taskworker.node_startup import (
    PEER_OPTIONS_BESIDE_TCP,
    SERVER_OPTIONS,
    StartupError,
    add_health_and_reflection,
    bind_api_port,
    bind_peer_port,
    is_loopback,
    join,
)

__all__ = ["SERVICE_MODULES", "VERSION", "Node", "NodeConfig", "StartupError"]

log = logging.getLogger("tw-mesh")

VERSION = "0.1.0"
# Optional capability modules; each exposes ``create(ctx) -> MeshService``.
SERVICE_MODULES = ("storage.service", "storage.versions.service", "storage.healing",
                   "compute.service", "compute.proxy.service", "taskworker.monitor")


@dataclass
class NodeConfig:
    data_dir: Path = Path(".tw-mesh")
    listen: tuple[str, int] = ("127.0.0.1", 50051)
    api: tuple[str, int] = ("127.0.0.1", 50052)
    bootstrap: list[tuple[str, int]] = field(default_factory=list)
    roles: tuple[str, ...] = ("storage", "compute")
    rpc_timeout: float = 1.0
    sweep_interval: float = 2.0
    allow_remote_api: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    mesh: str = DEFAULT_MESH
    tcp_channel: bool = True          # serve the peer channel over plain TCP too (tcp_server.py)
    channel_port: int = 0             # its TCP port (0: any free one; the peer record says)


class Node:
    def __init__(self, config: NodeConfig, identity: Identity | None = None) -> None:
        self.config = config
        self.identity = identity or load_or_create(config.data_dir)
        self.started = time.time()
        self.services: list[MeshService] = []
        self.channel_server = ChannelServer(self.identity)
        self.tcp_listener = TcpListener(self.channel_server) if config.tcp_channel else None
        self.channel_port = 0
        self.channels = ChannelPool(self.identity, on_unreachable=self._unreachable)
        guard = MalformedRequestInterceptor()
        self.peer_server = grpc.aio.server(
            options=PEER_OPTIONS_BESIDE_TCP if config.tcp_channel else SERVER_OPTIONS,
            interceptors=[guard])
        # the local API: every call but health/reflection needs DATA_DIR/api.token (api_auth.py)
        self.api_token = load_or_create_token(config.data_dir)
        self.api_token_file = config.data_dir / TOKEN_FILE
        self.api_runtime_file: Path | None = None
        # ... or a keyring user's own token, DATA_DIR/users/NAME.token (acts as that user only)
        self._api_auth = ApiTokenInterceptor(self.api_token, str(self.api_token_file),
                                             UserTokens(config.data_dir))
        self.api_server = grpc.aio.server(options=SERVER_OPTIONS,
                                          interceptors=[self._api_auth, guard])
        self.port = 0
        self.api_port = 0
        self.membership: Membership | None = None
        self.ctx: MeshContext | None = None
        self.shutdown = asyncio.Event()      # set by SIGINT/SIGTERM or NodeService.Leave
        self._watch: asyncio.Task[None] | None = None

    # -- wiring (opening ports, joining: node_startup.py) ------------------------------------
    def _peer_record(self) -> mesh_pb2.PeerRecord:
        usage = shutil.disk_usage(self.config.data_dir)
        storage = self.ctx.registry.get("storage") if self.ctx is not None else None
        capacity = getattr(storage, "capacity", None)
        return mesh_pb2.PeerRecord(
            address=f"{self.config.listen[0]}:{self.port}", roles=list(self.config.roles),
            capacity_bytes=usage.total, free_bytes=usage.free,
            load=sum(s.load() for s in self.services), version=VERSION,
            channel_port=self.channel_port,
            reserved_bytes=getattr(capacity, "reserved", 0))

    def _unreachable(self, node_id: bytes) -> None:
        if self.membership is not None:
            self.membership.mark_dead(node_id)

    def status(self) -> dict[str, Any]:
        peers = self.membership.live_peers() if self.membership else []
        return {
            "node_id": self.identity.node_id_hex,
            "address": f"{self.config.listen[0]}:{self.port}",
            "channel_port": self.channel_port,
            "api": f"{self.config.api[0]}:{self.api_port}",
            "uptime_s": round(time.time() - self.started, 1),
            "version": VERSION,
            "mesh": self.config.mesh,
            "roles": list(self.config.roles),
            "peers": len(peers),
            "channel": {"refused_frames": self.channel_server.refused_frames,
                        "hedged_calls": self.channels.hedged_calls,
                        "receive": self.tcp_listener.budget.status()     # tcp_budget.py
                        if self.tcp_listener is not None else {}},
            "api_auth": self._api_auth.refusals.status(),     # local-API calls refused
            "services": {s.name: s.status() for s in self.services},
        }

    async def _rpc_status(self, caller: Caller, body: bytes) -> bytes:
        return mesh_pb2.StatusReply(json=json.dumps(self.status())).SerializeToString()

    async def _rpc_ping(self, caller: Caller, body: bytes) -> bytes:
        return body

    def _load_services(self, ctx: MeshContext) -> None:
        for name in dict.fromkeys(SERVICE_MODULES):     # in order, each once
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name is not None and name.startswith(exc.name):
                    continue           # capability not built into this tree
                raise
            service: MeshService | None = module.create(ctx)
            if service is not None:
                self.services.append(service)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        api_host, api_port = cfg.api
        if not is_loopback(api_host) and not cfg.allow_remote_api:
            raise StartupError(f"the local API must listen on loopback, not {api_host} "
                               "(pass --allow-remote-api to expose it)")
        self.port = bind_peer_port(self.peer_server, *cfg.listen)
        self.channel_server.add_to(self.peer_server)
        if self.tcp_listener is not None:
            try:
                self.channel_port = await self.tcp_listener.start(cfg.listen[0],
                                                                  cfg.channel_port)
            except OSError as exc:
                raise StartupError(f"cannot listen on {cfg.listen[0]}:{cfg.channel_port} (TCP, "
                                   f"peer channel): {exc} (pass --channel-port)") from exc
        self.channel_server.handle("mesh.Status", self._rpc_status)
        self.channel_server.handle("mesh.Ping", self._rpc_ping)
        self.membership = Membership(
            self.identity, host=cfg.listen[0], port=self.port, rpc_timeout=cfg.rpc_timeout,
            sweep_interval=cfg.sweep_interval, peer_record_factory=self._peer_record,
            mesh=cfg.mesh)
        self.ctx = MeshContext(self.identity, self.membership, self.channels,
                               self.channel_server, cfg.data_dir,
                               f"{cfg.listen[0]}:{self.port}", cfg.roles, cfg.settings)
        self._load_services(self.ctx)
        NodeServicer(self).add_to(self.api_server)
        for service in self.services:
            service.attach(self.api_server)
        add_health_and_reflection(self.api_server)
        self.api_port = bind_api_port(self.api_server, api_host, api_port)
        await self.peer_server.start()
        try:
            await self.membership.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {cfg.listen[0]}:{self.port} (UDP): {exc}") from exc
        log.info("node %s started; peer address %s:%d, channel %s",
                 self.identity.node_id_hex[:16], cfg.listen[0], self.port,
                 f"TCP port {self.channel_port}" if self.channel_port else "over gRPC only")
        self._watch = asyncio.create_task(self._log_membership(), name="membership-log")
        await join(self.membership, cfg.bootstrap, cfg.mesh, cfg.listen[0], self.port)
        for service in self.services:
            await service.start()
        await self.api_server.start()
        self._publish_token()
        log.info("local API on %s:%d; bearer token in %s%s", api_host, self.api_port,
                 self.api_token_file.resolve(),
                 f" (clients on this host find it in {self.api_runtime_file})"
                 if self.api_runtime_file else "")

    def _publish_token(self) -> None:
        """Leave the token where a client that knows only the API port finds it."""
        try:
            self.api_runtime_file = write_runtime_file(self.api_port, self.api_token)
        except (OSError, RuntimeError, TokenError) as exc:
            log.warning("cannot write the API token's runtime file (%s); clients must pass "
                        "--api-token-file %s", exc, self.api_token_file.resolve())
            return
        self._api_auth.set_where(f"{self.api_runtime_file} or {self.api_token_file.resolve()}")

    async def _log_membership(self) -> None:
        assert self.membership is not None
        queue = self.membership.subscribe()
        while True:
            event = await queue.get()
            verb = "up" if event.kind == "join" else "down"
            log.info("peer %s %s at %s", verb, event.record.node_id.hex()[:16],
                     event.record.address)
            if event.kind == "leave":
                await self.channels.forget(event.record.node_id)

    async def stop(self, grace: float = 1.0) -> None:
        if self.api_runtime_file is not None:
            remove_runtime_file(self.api_runtime_file, self.api_token)
            self.api_runtime_file = None
        await self.api_server.stop(grace)
        self._api_auth.close()
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", service.name)
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self.membership is not None:
            await self.membership.stop()
        await self.channels.close()
        if self.tcp_listener is not None:
            await self.tcp_listener.stop()
        await self.peer_server.stop(grace)
        log.info("node %s stopped", self.identity.node_id_hex[:16])

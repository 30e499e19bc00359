"""The node-pool proxy capability: secrets, DNS and outbound HTTP for sandboxed functions.

``create(ctx)`` registers the service as ``ctx.registry["proxy"]``; the compute service asks
``host_for(worker_id, function)`` for the HostServices object of one call (host.py). See
docs/proxy.md.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
from typing import Any

import grpc

from mesh.context import MeshContext
from mesh.errors import InvalidArgumentError, NotFoundError
from mesh.identity import node_id_for
from mesh.records import record_key
from proto import mesh_pb2

from .dns import Answer, Record, Resolver
from .host import WorkerHost
from .http import HttpProxy, Request, Response
from .peer import PeerProxy
from .policy import ProxyPolicy
from .secrets import REPUBLISH_S, SecretStore

log = logging.getLogger("tw-mesh.proxy")

MESH_TTL = 30


def _host_of(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def _address_records(addresses: list[tuple[bytes, str]], rtype: str) -> list[Record]:
    out: list[Record] = []
    seen: set[str] = set()
    for node_id, address in addresses:
        host = _host_of(address)
        if rtype == "TXT":
            out.append(Record("TXT", f"{node_id.hex()} {address}", MESH_TTL))
            continue
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        if (rtype == "A" and ip.version == 4) or (rtype == "AAAA" and ip.version == 6):
            if host not in seen:
                seen.add(host)
                out.append(Record(rtype, host, MESH_TTL))
    return out


def _live_providers(function: str, records: list[mesh_pb2.SignedRecord]
                    ) -> list[mesh_pb2.SignedRecord]:
    """Provider records of ``function`` that are not withdrawn (decoded by compute.registry
    when that module is present)."""
    records = [r for r in records if r.kind == "provider" and r.name == function.encode()]
    try:
        registry = importlib.import_module("compute.registry")
    except ImportError:
        return records
    live = {p.owner_id for p in registry.decode_providers(function, records)}
    return [r for r in records if node_id_for(r.owner_key) in live]


class ProxyService:
    name = "proxy"

    def __init__(self, ctx: MeshContext) -> None:
        self.ctx = ctx
        self.policy = ProxyPolicy.from_settings(ctx.settings)
        resolvers = [str(s) for s in ctx.settings.get("proxy_resolvers", [])]
        self.resolver = Resolver(self.policy, resolvers or None, mesh_lookup=self.mesh_lookup,
                                 negative_ttl=float(ctx.settings.get("proxy_negative_ttl", 30)))
        self.http = HttpProxy(self.policy, self.resolve_ips)
        self.secrets = SecretStore(ctx, cache_s=self.policy.secret_cache_s, trusted_owners=[
            str(t) for t in ctx.settings.get("proxy_secret_owners", [])])
        self.peers = PeerProxy(self)
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._reseal = asyncio.Event()
        self.peers.register()

    # -- compute hook --------------------------------------------------------------------------
    def host_for(self, worker_id: str, function: str, deployer: bytes | None = None
                 ) -> WorkerHost:
        """HostServices for one call; ``deployer`` (node id of whoever deployed/registered
        the code, when the caller knows it) enables ``NAME@NODE_ID`` secret entries."""
        return WorkerHost(self, worker_id, function, deployer)

    # -- operations ----------------------------------------------------------------------------
    async def resolve(self, domain: str, record_type: str = "A", worker: str = "") -> Answer:
        self._in_flight += 1
        try:
            if self.policy.via_peers and not domain.rstrip(".").lower().endswith(".mesh"):
                return await self.peers.resolve(domain, record_type or "A", worker)
            return await self.resolver.resolve(domain, record_type or "A")
        finally:
            self._in_flight -= 1

    async def fetch(self, req: Request, worker: str) -> Response:
        self._in_flight += 1
        try:
            if self.policy.via_peers:
                return await self.peers.http(req, worker)
            return await self.http.fetch(req)
        finally:
            self._in_flight -= 1

    async def resolve_ips(self, host: str) -> list[str]:
        answer = await self.resolver.resolve(host, "A")
        ips = [r.value for r in answer.records if r.type == "A"]
        if not ips:
            try:
                answer = await self.resolver.resolve(host, "AAAA")
            except NotFoundError:
                return []
            ips = [r.value for r in answer.records if r.type == "AAAA"]
        return ips

    async def mesh_lookup(self, name: str, rtype: str) -> list[Record]:
        """``<node-id-prefix>.node.mesh`` → that peer; ``<function>.fn.mesh`` → the peers
        that provide the function (provider records in the DHT)."""
        labels = name.split(".")
        if len(labels) == 3 and labels[1:] == ["node", "mesh"]:
            prefix = labels[0]
            if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
                raise InvalidArgumentError("a node name is <hex node-id prefix, ≥4>.node.mesh")
            nodes = [(self.ctx.identity.node_id, self.ctx.address)]
            nodes += [(p.node_id, p.address) for p in self.ctx.membership.live_peers()]
            hits = [n for n in nodes if n[0].hex().startswith(prefix)]
            return _address_records(hits[:1] if len(hits) == 1 else [], rtype)
        if len(labels) >= 3 and labels[-2:] == ["fn", "mesh"]:
            function = ".".join(labels[:-2])
            records = await self.ctx.membership.fetch(
                record_key("provider", b"", function.encode()))
            providers: list[tuple[bytes, str]] = []
            for record in _live_providers(function, records):
                node_id = node_id_for(record.owner_key)
                peer = await self.ctx.membership.fetch_peer(node_id)
                if peer is not None:
                    providers.append((node_id, peer.address))
            return _address_records(providers, rtype)
        return []

    # -- MeshService ---------------------------------------------------------------------------
    def attach(self, api_server: grpc.aio.Server) -> None:
        from .servicer import add_servicers

        add_servicers(self, api_server)

    async def start(self) -> None:
        self.secrets.load()
        self._tasks.append(asyncio.create_task(self._watch_peers(), name="proxy-peers"))
        self._tasks.append(asyncio.create_task(self._reseal_loop(), name="proxy-reseal"))
        self._reseal.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.http.close()
        await self.resolver.close()

    async def _watch_peers(self) -> None:
        queue = self.ctx.membership.subscribe()
        while True:
            event = await queue.get()
            if event.kind == "join" and "compute" in event.record.roles:
                self._reseal.set()

    async def _reseal_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._reseal.wait(), REPUBLISH_S)
            except TimeoutError:
                pass
            self._reseal.clear()
            await asyncio.sleep(0.5)          # let a burst of joins settle
            try:
                await self.secrets.reseal_for_new_nodes()
                await self.secrets.republish()
            except Exception:  # keep the loop alive; never log values (none are in scope)
                log.exception("re-sealing secrets failed")

    def status(self) -> dict[str, Any]:
        return {"in_flight": self._in_flight, "via_peers": self.policy.via_peers,
                "dns": self.resolver.status(), "http": dict(self.http.stats),
                "secrets": self.secrets.status(), "peer": {**self.peers.stats,
                                                         "shunned": len(self.peers.shunned)}}

    def load(self) -> int:
        return self._in_flight


def create(ctx: MeshContext) -> ProxyService:
    service = ProxyService(ctx)
    ctx.registry["proxy"] = service
    return service

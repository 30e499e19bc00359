"""compute.proxy against real loopback servers: dnsmasq (zone written by the test) for DNS,
a threaded http.server for outbound HTTP, real sandbox workers for the end-to-end checks.
The mesh is replaced by an in-memory record store (real-node tests: tests/system)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nacl.utils
import pytest

from compute.proxy.dns import Resolver
from compute.proxy.envelope import encrypt_value, seal_record
from compute.proxy.http import HttpProxy, Request
from compute.proxy.policy import ProxyPolicy, suffix_match
from compute.proxy.secrets import SecretStore
from compute.proxy.service import ProxyService, WorkerHost
from compute.sandbox import PolicyViolation, SandboxPool, UserCodeError
from mesh.dht.peers import PeerView
from mesh.errors import (
    DeadlineExceededError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
)
from mesh.identity import Identity
from mesh.records import record_key
from proto import mesh_pb2
from tests.compute.test_proxy_support import (  # noqa: F401 - fixtures
    ZONE_TTL,
    Dnsmasq,
    HttpServer,
    dnsmasq_fixture,
    http_server_fixture,
)

LOOPBACK = [ipaddress.ip_network("127.0.0.1/32")]
SECRET = "sk-live-4f9a8c7e2b1d"


# ---------------------------------------------------------------- an in-memory mesh
class FakeDHT:
    def __init__(self) -> None:
        self.records: dict[bytes, dict[bytes, mesh_pb2.SignedRecord]] = {}


class FakeMembership:
    def __init__(self, dht: FakeDHT) -> None:
        self.dht = dht
        self.peers: list[PeerView] = []

    def live_peers(self) -> list[PeerView]:
        return list(self.peers)

    def subscribe(self) -> asyncio.Queue[Any]:
        return asyncio.Queue()

    async def publish(self, record: mesh_pb2.SignedRecord) -> int:
        key = record_key(record.kind, record.owner_key, record.name)
        slot = self.dht.records.setdefault(key, {})
        held = slot.get(record.owner_key)
        if held is None or record.seq > held.seq:
            slot[record.owner_key] = record
        return 1

    async def fetch(self, key: bytes) -> list[mesh_pb2.SignedRecord]:
        return list(self.dht.records.get(key, {}).values())

    async def fetch_peer(self, node_id: bytes) -> mesh_pb2.PeerRecord | None:
        return next((p.record for p in self.peers if p.node_id == node_id), None)


class FakeServer:
    def handle(self, method: str, handler: Any) -> None:
        pass


class FakeCtx:
    def __init__(self, name: str, dht: FakeDHT, data_dir: Path,
                 settings: dict[str, Any] | None = None) -> None:
        self.identity = Identity.from_seed(name.encode())
        self.membership = FakeMembership(dht)
        self.channel_server = FakeServer()
        self.data_dir = data_dir / name
        self.address = "127.0.0.1:1"
        self.settings = settings or {}
        self.registry: dict[str, Any] = {}

    def view(self) -> PeerView:
        record = mesh_pb2.PeerRecord(node_id=self.identity.node_id,
                                     identity_key=self.identity.public_key,
                                     address=self.address, roles=["compute"])
        return PeerView(self.identity.node_id, self.address, 0.0, ("compute",), record)


def link(*ctxs: FakeCtx) -> None:
    for ctx in ctxs:
        ctx.membership.peers = [c.view() for c in ctxs if c is not ctx]


def store(ctx: FakeCtx, cache_s: float = 0.0) -> SecretStore:
    return SecretStore(ctx, cache_s=cache_s)  # type: ignore[arg-type]


# ---------------------------------------------------------------- policy
def test_suffix_patterns() -> None:
    assert suffix_match("api.example.com", "example.com")
    assert suffix_match("example.com.", "example.com")
    assert not suffix_match("badexample.com", "example.com")
    assert suffix_match("a.example.com", "*.example.com")
    assert not suffix_match("example.com", "*.example.com")
    policy = ProxyPolicy(dns_allow=["test"], dns_deny=["secret.test"])
    assert policy.dns_allowed("api.test") and not policy.dns_allowed("x.secret.test")
    assert not policy.dns_allowed("example.com")
    for ip in ("127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.169.254", "::1", "fe80::1",
               "0.0.0.0", "224.0.0.1", "::ffff:127.0.0.1", "100.64.0.1", "fc00::1"):
        assert ProxyPolicy().address_allowed(ipaddress.ip_address(ip)) is not None, ip
    assert ProxyPolicy().address_allowed(ipaddress.ip_address("93.184.216.34")) is None
    assert ProxyPolicy(allow_networks=LOOPBACK).address_allowed(
        ipaddress.ip_address("127.0.0.1")) is None


SIX_TO_FOUR = {      # 2002:AABB:CCDD::/48 is the 6to4 prefix of IPv4 A.B.C.D
    "2002:7f00:1::": "loopback", "2002:7F00:0001:0000:0000:0000:0000:0001": "loopback",
    "2002:7f00:1:ffff::1": "loopback", "2002:7f01:203::": "loopback",
    "2002:a00:1::1": "private", "2002:c0a8:101::": "private", "2002:ac10:fe01::": "private",
    "2002:a9fe:a9fe::": "link-local", "2002::": "private", "2002:0:0:0:0:0:0:1": "private",
    "2002:e000:1::": "multicast", "2002:6440:1::": "shared (CGNAT)",
    "2002:ffff:ffff::": "private", "2002:c000:201::": "private"}   # 255.255.255.255, TEST-NET


@pytest.mark.parametrize(("address", "reason"), SIX_TO_FOUR.items())
def test_6to4_addresses_embedding_a_forbidden_ipv4_address_are_refused(
        address: str, reason: str) -> None:
    """Python's ipaddress calls 2002::/16 global; through a 6to4 relay it reaches the IPv4
    address it embeds, so that address decides (an allowed IPv4 network does not extend to
    its 6to4 spelling)."""
    ip = ipaddress.ip_address(address)
    assert ProxyPolicy().address_allowed(ip) == f"6to4-embedded {reason}", address
    assert ProxyPolicy(allow_networks=LOOPBACK).address_allowed(ip) is not None, address


def test_6to4_of_a_public_ipv4_address_is_allowed() -> None:
    assert ProxyPolicy().address_allowed(ipaddress.ip_address("2002:5db8:d822::1")) is None
    assert ProxyPolicy(allow_networks=[ipaddress.ip_network("2002:7f00:1::/48")]).\
        address_allowed(ipaddress.ip_address("2002:7f00:1::")) is None      # named: allowed


async def test_a_6to4_literal_is_refused_before_any_connection(proxy: HttpProxy) -> None:
    before = proxy.connections_attempted
    for address in ("2002:7f00:1::", "2002:c0a8:101::1"):
        with pytest.raises(PermissionDeniedError, match="6to4-embedded"):
            await proxy.fetch(req(f"http://[{address}]:80/", allowed_hosts=["*"]))
    assert proxy.connections_attempted == before


# ---------------------------------------------------------------- DNS against dnsmasq
@pytest.fixture
async def resolver(dnsmasq: Dnsmasq) -> AsyncIterator[Resolver]:
    r = Resolver(ProxyPolicy(dns_deny=["blocked.test"]), [dnsmasq.address])
    try:
        yield r
    finally:
        await r.close()


async def test_dns_resolves_through_aiodns_with_ttl_cache(resolver: Resolver) -> None:
    first = await resolver.resolve("internal.test", "A")
    assert [(r.type, r.value) for r in first.records] == [("A", "10.1.2.3")]
    assert first.records[0].ttl == ZONE_TTL and not first.cached and first.source == "upstream"
    second = await resolver.resolve("INTERNAL.test.", "A")
    assert second.cached and second.source == "cache" and second.records[0].value == "10.1.2.3"
    assert 0 < second.records[0].ttl <= ZONE_TTL
    assert resolver.stats["upstream"] == 1
    txt = await resolver.resolve("txt.test", "TXT")
    assert txt.records[0].value == "hello world"


async def test_dns_cache_expires_with_ttl(dnsmasq: Dnsmasq) -> None:
    r = Resolver(ProxyPolicy(), [dnsmasq.address], max_ttl=1.0)
    try:
        await r.resolve("api.test")
        assert (await r.resolve("api.test")).cached
        await asyncio.sleep(1.1)
        assert not (await r.resolve("api.test")).cached
        assert r.stats["upstream"] == 2
    finally:
        await r.close()


async def test_dns_negative_caching(resolver: Resolver) -> None:
    for _ in range(3):
        with pytest.raises(NotFoundError):
            await resolver.resolve("nope.test", "A")
    nodata = await resolver.resolve("api.test", "MX")     # name exists, no MX: empty answer
    assert nodata.records == []
    assert (await resolver.resolve("api.test", "MX")).cached
    assert resolver.stats["upstream"] == 2 and resolver.stats["negative_hits"] == 3


async def test_dns_policy_and_bad_input(resolver: Resolver) -> None:
    with pytest.raises(PermissionDeniedError):
        await resolver.resolve("x.blocked.test")
    for bad, rtype in (("a..b", "A"), ("a b.test", "A"), ("x" * 300, "A"), ("ok.test", "AXFR")):
        with pytest.raises(Exception) as info:
            await resolver.resolve(bad, rtype)
        assert "invalid" in str(info.value) or "unsupported" in str(info.value)
    assert resolver.stats["upstream"] == 0


async def test_dns_concurrent_queries_coalesce(resolver: Resolver) -> None:
    answers = await asyncio.gather(*(resolver.resolve("other.test") for _ in range(20)))
    assert {a.records[0].value for a in answers} == {"127.0.0.1"}
    assert resolver.stats["upstream"] == 1


# ---------------------------------------------------------------- HTTP against http.server
@pytest.fixture
async def proxy(resolver: Resolver) -> AsyncIterator[HttpProxy]:
    async def ips(host: str) -> list[str]:
        return [r.value for r in (await resolver.resolve(host, "A")).records if r.type == "A"]

    p = HttpProxy(ProxyPolicy(allow_networks=LOOPBACK, max_response_bytes=100_000), ips)
    try:
        yield p
    finally:
        await p.close()


def req(url: str, **kw: Any) -> Request:
    kw.setdefault("allowed_hosts", ["api.test", "127.0.0.1"])
    return Request(url=url, **kw)


async def test_http_allowed_host_pinned_to_checked_address(proxy: HttpProxy,
                                                           http_server: HttpServer) -> None:
    resp = await proxy.fetch(req(f"http://api.test:{http_server.port}/echo?q=1",
                                 headers={"X-Test": "yes"}))
    assert resp.status == 200
    echoed = json.loads(resp.body)
    assert echoed["headers"]["Host"] == f"api.test:{http_server.port}"
    assert echoed["headers"]["X-Test"] == "yes" and echoed["path"] == "/echo?q=1"
    post = await proxy.fetch(req(f"http://127.0.0.1:{http_server.port}/echo", method="POST",
                                 body=b"payload"))
    assert json.loads(post.body)["method"] == "POST"


async def test_http_refusals_happen_before_any_connection(proxy: HttpProxy,
                                                          http_server: HttpServer) -> None:
    before, hits = proxy.connections_attempted, len(http_server.hits)
    port = http_server.port
    refused = [
        req(f"http://other.test:{port}/echo"),                         # not on the allow-list
        req(f"http://internal.test:{port}/echo", allowed_hosts=["internal.test"]),  # 10.1.2.3
        req(f"http://router.test:{port}/echo", allowed_hosts=["*"]),   # 192.168.1.1
        req("http://10.0.0.7/", allowed_hosts=["*"]),
        req("http://169.254.169.254/latest/meta-data/", allowed_hosts=["*"]),
        req("http://[::1]:1/", allowed_hosts=["*"]),
        req("file:///etc/passwd", allowed_hosts=["*"]),
        req(f"http://user:pw@api.test:{port}/echo"),
    ]
    for r in refused:
        with pytest.raises((PermissionDeniedError, Exception)) as info:
            await proxy.fetch(r)
        assert "refused" in str(info.value) or "allow" in str(info.value) \
            or "credentials" in str(info.value), (r.url, info.value)
    assert proxy.connections_attempted == before
    assert len(http_server.hits) == hits


async def test_http_without_loopback_allowance_refuses_loopback(resolver: Resolver,
                                                                http_server: HttpServer) -> None:
    async def ips(host: str) -> list[str]:
        return ["127.0.0.1"]

    strict = HttpProxy(ProxyPolicy(), ips)
    with pytest.raises(PermissionDeniedError, match="loopback"):
        await strict.fetch(req(f"http://api.test:{http_server.port}/echo"))
    assert strict.connections_attempted == 0
    await strict.close()


async def test_http_redirects_rechecked_each_hop(proxy: HttpProxy,
                                                 http_server: HttpServer) -> None:
    port = http_server.port
    ok = await proxy.fetch(req(f"http://api.test:{port}/redirect?to=/echo"))
    assert ok.status == 200 and json.loads(ok.body)["path"] == "/echo"
    assert proxy.stats["redirects"] == 1
    hits = len(http_server.hits)
    for target in (f"http://other.test:{port}/echo",                # disallowed host
                   f"http://internal.test:{port}/echo",             # private address
                   "http://192.168.0.1/"):
        with pytest.raises(PermissionDeniedError):
            await proxy.fetch(req(f"http://api.test:{port}/redirect?to={target}",
                                  allowed_hosts=["api.test", "internal.test"]))
    assert len(http_server.hits) == hits + 3     # only the redirecting requests went out
    # a cross-origin redirect drops credentials and headers that carried secrets
    resp = await proxy.fetch(req(
        f"http://api.test:{port}/redirect?to=http://127.0.0.1:{port}/echo",
        headers={"Authorization": "Bearer x", "X-Key": SECRET, "X-Plain": "p"},
        secret_headers={"x-key"}, secrets=[SECRET]))
    sent = json.loads(resp.body)["headers"]
    assert "Authorization" not in sent and "X-Key" not in sent and sent["X-Plain"] == "p"


async def test_http_size_and_time_limits(proxy: HttpProxy, http_server: HttpServer) -> None:
    port = http_server.port
    assert len((await proxy.fetch(req(f"http://api.test:{port}/big?n=1000"))).body) == 1000
    with pytest.raises(ResourceExhaustedError):            # declared Content-Length
        await proxy.fetch(req(f"http://api.test:{port}/big?n=2000000"))
    with pytest.raises(ResourceExhaustedError):            # chunked: counted while streaming
        await proxy.fetch(req(f"http://api.test:{port}/chunked"))
    with pytest.raises(DeadlineExceededError):
        await proxy.fetch(req(f"http://api.test:{port}/slow?s=2", timeout=0.3))


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for api.test only (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ca_key, ca, key, csr, cert, ext = (folder / n for n in (
        "ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem", "ext.cnf"))
    ext.write_text("subjectAltName=DNS:api.test\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1",
                 "-subj", "/CN=tw-mesh test CA"],
                ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=api.test"],
                ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                 "-out", cert, "-days", "1", "-extfile", ext]):
        subprocess.run(["openssl", *map(str, cmd)], check=True, capture_output=True)
    return ca, cert, key


async def test_https_pinned_address_verifies_the_name(tmp_path: Path, resolver: Resolver) -> None:
    ca, cert, key = _tls_files(tmp_path)
    server = HttpServer()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    client_ctx = ssl.create_default_context(cafile=str(ca))

    async def ips(host: str) -> list[str]:
        return [r.value for r in (await resolver.resolve(host, "A")).records if r.type == "A"]

    proxy = HttpProxy(ProxyPolicy(allow_networks=LOOPBACK), ips, ssl_context=client_ctx)
    try:
        # connected to 127.0.0.1, SNI and certificate check on "api.test"
        resp = await proxy.fetch(req(f"https://api.test:{server.port}/echo"))
        assert resp.status == 200 and json.loads(resp.body)["headers"]["Host"] == \
            f"api.test:{server.port}"
        # same address under another name: the certificate does not match, refused
        with pytest.raises(UnavailableError):
            await proxy.fetch(req(f"https://other.test:{server.port}/echo",
                                  allowed_hosts=["other.test"]))
    finally:
        await proxy.close()
        server.stop()


# ---------------------------------------------------------------- secrets
async def test_secret_sealed_to_nodes_and_allowed_workers_only(tmp_path: Path) -> None:
    dht = FakeDHT()
    owner, server, outsider = (FakeCtx(n, dht, tmp_path) for n in ("owner", "server", "outs"))
    link(owner, server)                    # the outsider joins after the secret was set
    s_owner, s_server, s_out = store(owner), store(server), store(outsider)
    record, _ = await s_owner.set("api_key", SECRET.encode(), ["weather"], [])
    assert await s_server.get("api_key", "weather", "forecast") == SECRET
    assert await s_server.get("api_key", "w9", "weather") == SECRET     # by function name
    with pytest.raises(PermissionDeniedError):
        await s_server.get("api_key", "other", "forecast")
    with pytest.raises(PermissionDeniedError):
        await s_server.get("missing", "weather", "forecast")
    with pytest.raises(PermissionDeniedError, match="not sealed to this node"):
        await s_out.get("api_key", "weather", "forecast")
    # nothing in clear on disk or in the record
    for path in sorted(tmp_path.rglob("*")):  # noqa: ASYNC240 - a test's own tmp dir
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes()
            assert path.stat().st_mode & 0o077 == 0
    assert SECRET.encode() not in record.SerializeToString()
    # deployer-qualified entries: the name alone is not enough
    await s_owner.set("pinned", b"pinned-value", [f"weather@{owner.identity.node_id_hex[:8]}"],
                      [])
    with pytest.raises(PermissionDeniedError):
        await s_server.get("pinned", "weather", "forecast")
    with pytest.raises(PermissionDeniedError):
        await s_server.get("pinned", "weather", "forecast", server.identity.node_id)
    assert await s_server.get("pinned", "weather", "f", owner.identity.node_id) == "pinned-value"
    # a new compute node joins: the owner re-seals and it can read
    link(owner, server, outsider)
    assert await s_owner.reseal_for_new_nodes() == 2
    assert await s_out.get("api_key", "weather", "forecast") == SECRET


async def test_secret_rotation_revocation_and_restart(tmp_path: Path) -> None:
    dht = FakeDHT()
    owner, server = FakeCtx("owner", dht, tmp_path), FakeCtx("server", dht, tmp_path)
    link(owner, server)
    s_owner, s_server = store(owner), store(server, cache_s=0.2)
    await s_owner.set("token", b"v1-aaaa", ["fn"], [])
    assert await s_server.get("token", "w", "fn") == "v1-aaaa"
    await s_owner.set("token", b"v2-bbbb", ["fn"], [])
    await asyncio.sleep(0.25)                                  # the reader's short cache
    assert await s_server.get("token", "w", "fn") == "v2-bbbb"
    assert [i.name for i in s_owner.list()] == ["token"]
    restarted = store(owner)
    restarted.load()
    assert [(i.name, i.revoked) for i in restarted.list()] == [("token", False)]
    await restarted.revoke("token")
    await asyncio.sleep(0.25)
    with pytest.raises(PermissionDeniedError):
        await s_server.get("token", "w", "fn")
    # another key publishes a genuine secret of its own under the name, at a sequence the
    # owner can never pass: the owner's code still reads the owner's record (here revoked)
    intruder = FakeCtx("intruder", dht, tmp_path)
    link(owner, server, intruder)
    data_key = nacl.utils.random(32)
    await intruder.membership.publish(seal_record(
        intruder.identity, "token", 2**63, data_key,
        encrypt_value(intruder.identity.public_key, "token", b"forged-value", data_key),
        ["fn"], {server.identity.node_id: server.identity.public_key}, True))
    owner_id, intruder_id = owner.identity.node_id, intruder.identity.node_id
    s_server.invalidate("token")
    with pytest.raises(PermissionDeniedError, match="no secret"):
        await s_server.get("token", "w", "fn", owner_id)
    with pytest.raises(PermissionDeniedError, match="published by 2 keys"):
        await s_server.get("token", "w", "fn")          # no owner of its own: refused
    assert await s_server.get("token", "w", "fn", intruder_id) == "forged-value"  # its code
    await s_owner.set("token", b"v3-cccc", ["fn"], [])
    s_server.invalidate("token")
    assert await s_server.get("token", "w", "fn", owner_id) == "v3-cccc"
    pinned = SecretStore(server, cache_s=0.0,  # type: ignore[arg-type]
                         trusted_owners=[owner.identity.node_id_hex[:12]])
    assert await pinned.get("token", "w", "fn") == "v3-cccc"       # --secret-owner: that one
    # named recipients: sealed to this node and the owner only
    record, _ = await s_owner.set("narrow", b"n-secret", ["fn"], [owner.identity.node_id_hex[:8]])
    with pytest.raises(PermissionDeniedError, match="not sealed"):
        await s_server.get("narrow", "w", "fn")


# ---------------------------------------------------------------- end to end through a sandbox
USER = '''
def leak():
    key = worker.get_secret("api_key")
    raise ValueError("upstream said no to " + key)

def read():
    return worker.get_secret("api_key")

def call(url):
    return worker.call_external_api(url, headers={"Authorization": "Bearer {{secret:api_key}}"})

def call_plain(url):
    return worker.call_external_api(url)

def lookup(name, rtype="A"):
    return worker.resolve(name, rtype)
'''


@pytest.fixture
async def pool() -> AsyncIterator[SandboxPool]:
    p = SandboxPool(size=2)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def service(tmp_path: Path, dnsmasq: Dnsmasq) -> AsyncIterator[ProxyService]:
    ctx = FakeCtx("node", FakeDHT(), tmp_path, {
        "proxy_resolvers": [dnsmasq.address], "proxy_allow_networks": ["127.0.0.1/32"],
        "proxy_http_allow": ["weather=api.test", "*=txt.test"], "proxy_dns_deny": ["blocked.test"],
        "proxy_secret_cache": 0.0})
    svc = ProxyService(ctx)  # type: ignore[arg-type]
    try:
        yield svc
    finally:
        await svc.stop()


async def test_sandbox_end_to_end(pool: SandboxPool, service: ProxyService,
                                  http_server: HttpServer,
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await service.secrets.set("api_key", SECRET.encode(), ["weather"], [])
    allowed: WorkerHost = service.host_for("weather", "forecast")
    other = service.host_for("billing", "charge")
    port = http_server.port

    assert await pool.run(USER, "read", [], {}, host=allowed) == SECRET
    with pytest.raises(PolicyViolation):                         # unauthorised worker
        await pool.run(USER, "read", [], {}, host=other)

    with pytest.raises(UserCodeError) as info:                   # secret in a traceback
        await pool.run(USER, "leak", [], {}, host=allowed)
    assert SECRET not in info.value.args[0] + str(info.value) + info.value.traceback
    assert "[REDACTED]" in info.value.traceback

    # placeholder substituted by the node: the server gets it, the function never does
    hits = len(http_server.hits)
    resp = await pool.run(USER, "call", [f"http://api.test:{port}/echo"], {}, host=allowed)
    assert resp["status"] == 200 and SECRET not in json.dumps(resp)
    assert http_server.hits[hits][2]["Authorization"] == f"Bearer {SECRET}"
    with pytest.raises(PolicyViolation):                         # placeholder, wrong worker
        await pool.run(USER, "call", [f"http://api.test:{port}/echo"], {}, host=other)
    with pytest.raises(PolicyViolation):                         # host not allowed
        await pool.run(USER, "call_plain", [f"http://other.test:{port}/echo"], {}, host=allowed)

    (answer,) = await pool.run(USER, "lookup", ["api.test"], {}, host=allowed)
    assert answer["type"] == "A" and answer["value"] == "127.0.0.1"
    assert 0 < answer["ttl"] <= ZONE_TTL                       # cached since the call above
    assert await pool.run(USER, "lookup", ["nope.test"], {}, host=allowed) == []
    with pytest.raises(PolicyViolation):
        await pool.run(USER, "lookup", ["x.blocked.test"], {}, host=allowed)
    assert SECRET not in caplog.text


async def test_clients_evicted_past_the_limit_are_closed_by_close() -> None:
    """One connection pool per host name, at most ``max_clients``: the oldest is closed when a
    new host pushes it out, and ``close`` waits for that too (no task left running)."""
    async def no_lookup(host: str) -> list[str]:
        raise AssertionError("not resolved here")

    proxy = HttpProxy(ProxyPolicy(), no_lookup, max_clients=2)
    first = proxy._client("a.example")
    proxy._client("b.example")
    proxy._client("c.example")                 # pushes a.example's pool out
    assert "a.example" not in proxy._clients and len(proxy._clients) == 2
    await proxy.close()
    assert first.is_closed and not proxy._closing and not proxy._clients

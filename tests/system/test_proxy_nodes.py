"""The proxy on real nodes: `tw-mesh join` subprocesses (DNSService through the local API,
resolve forwarded to another peer over the sealed channel, `tw-mesh secret` and `resolve`),
and in-process Nodes (real DHT and channel) for secrets read on another node and HTTP
forwarded to a peer. DNS is a dnsmasq the test starts; HTTP an http.server; loopback only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from compute.proxy.peer import RESOLVE_REPLY_CAP
from compute.proxy.service import ProxyService
from mesh.channel import Caller, tcp_rx
from mesh.errors import NotFoundError, ResourceExhaustedError
from proto import proxy_pb2, proxy_pb2_grpc, taskworker_pb2, taskworker_pb2_grpc
from taskworker.api_auth import aio_channel
from taskworker.node import Node, NodeConfig
from tests.compute.test_proxy_support import (  # noqa: F401 - fixtures
    ZONE_TTL,
    Dnsmasq,
    HttpServer,
    dnsmasq_fixture,
    http_server_fixture,
)
from tests.support.nodes import NodeCluster, run_cli

SECRET = "tok-9d1e77a0c4b2f3"


async def test_dns_and_secrets_on_node_processes(tmp_path: Path, dnsmasq: Dnsmasq) -> None:
    base = ["--sweep-interval", "0.5"]
    async with NodeCluster(tmp_path, 1, extra=[*base, "--resolver", dnsmasq.address,
                                               "--dns-deny", "blocked.test"]) as cluster:
        await cluster.add(1, extra=[*base, "--proxy-via-peers"])        # no local egress
        await cluster.add(1, extra=[*base, "--no-proxy-for-peers"])     # refuses peers
        await cluster.wait_converged()
        n0, n1 = cluster.nodes[0], cluster.nodes[1]
        dns0 = cluster.stub(0, taskworker_pb2_grpc.DNSServiceStub)
        first = await dns0.ResolveDomain(taskworker_pb2.DNSRequest(domain="api.test"))
        assert [(r.type, r.value, r.ttl) for r in first.records] == [("A", "127.0.0.1",
                                                                       ZONE_TTL)]
        assert first.source == "upstream" and not first.cached
        again = await dns0.ResolveDomain(taskworker_pb2.DNSRequest(domain="api.test"))
        assert again.cached and again.source == "cache"
        txt = await dns0.ResolveDomain(taskworker_pb2.DNSRequest(domain="txt.test",
                                                                 record_type="TXT"))
        assert txt.records[0].value == "hello world"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await dns0.ResolveDomain(taskworker_pb2.DNSRequest(domain="nope.test"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await dns0.ResolveDomain(taskworker_pb2.DNSRequest(domain="a.blocked.test"))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # node 1 has no egress: node 2 refuses peers, node 0 answers over the sealed channel
        dns1 = cluster.stub(1, taskworker_pb2_grpc.DNSServiceStub)
        ids = {i: (await cluster.peers_of(i)).self_id for i in range(3)}
        for _ in range(3):
            fwd = await dns1.ResolveDomain(taskworker_pb2.DNSRequest(domain="other.test"))
            assert fwd.records[0].value == "127.0.0.1"
            assert fwd.source == f"peer:{ids[0][:16]}"
        with pytest.raises(grpc.aio.AioRpcError) as info:     # node 0's policy still applies
            await dns1.ResolveDomain(taskworker_pb2.DNSRequest(domain="x.blocked.test"))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # names inside the mesh
        mesh = await dns0.ResolveDomain(taskworker_pb2.DNSRequest(
            domain=f"{ids[1][:10]}.node.mesh", record_type="TXT"))
        assert mesh.source == "mesh" and mesh.records[0].value == f"{ids[1]} {n1.peer}"
        proc = run_cli("resolve", f"{ids[2][:8]}.node.mesh", "--json", api=n1.api)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["records"][0]["value"] == "127.0.0.1"
        proc = run_cli("resolve", "txt.test", "--type", "TXT", api=n0.api)
        assert proc.returncode == 0 and b"hello world" in proc.stdout

        # secrets through the CLI: value on stdin only, sealed to the 3 compute nodes
        proc = run_cli("secret", "set", "api_key", "--for", "weather", "--for", "billing/charge",
                       api=n0.api, input_data=SECRET.encode() + b"\n")
        assert proc.returncode == 0, proc.stderr
        assert b"sealed to 3 node(s)" in proc.stdout
        listing = json.loads(run_cli("secret", "list", "--json", api=n0.api).stdout)
        assert listing[0]["name"] == "api_key" and listing[0]["recipients"] == 3
        assert listing[0]["allowed"] == ["billing/charge", "weather"]
        proc = run_cli("secret", "set", "x", api=n0.api, input_data=b"v\n")
        assert proc.returncode != 0 and b"--for" in proc.stderr
        proc = run_cli("secret", "revoke", "api_key", api=n0.api)
        assert proc.returncode == 0, proc.stderr
        listing = json.loads(run_cli("secret", "list", "--json", api=n0.api).stdout)
        assert listing[0]["revoked"] is True
        status = json.loads(run_cli("status", "--json", api=n0.api).stdout)
        assert status["services"]["proxy"]["dns"]["upstream"] >= 3
    for path in sorted(tmp_path.rglob("*")):  # noqa: ASYNC240 - no plaintext in dirs or logs
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


# ---------------------------------------------------------------- in-process nodes
@pytest.fixture
async def nodes(tmp_path: Path, dnsmasq: Dnsmasq) -> AsyncIterator[list[Node]]:
    common = {"proxy_resolvers": [dnsmasq.address], "proxy_allow_networks": ["127.0.0.1/32"],
              "proxy_http_allow": ["weather=api.test"], "proxy_secret_cache": 0.0}
    started: list[Node] = []
    try:
        for i, extra in enumerate(({}, {}, {"proxy_via_peers": True})):
            boot = [("127.0.0.1", started[0].port)] if started else []
            node = Node(NodeConfig(data_dir=tmp_path / f"n{i}", listen=("127.0.0.1", 0),
                                   api=("127.0.0.1", 0), bootstrap=boot, sweep_interval=0.5,
                                   settings={**common, **extra}))
            await node.start()
            started.append(node)
        for _ in range(200):
            if all(len(n.membership.live_peers()) == 2 for n in started if n.membership):
                break
            await asyncio.sleep(0.05)
        yield started
    finally:
        for node in reversed(started):
            await node.stop(grace=0.1)


def proxy_of(node: Node) -> ProxyService:
    assert node.ctx is not None
    proxy = node.ctx.registry["proxy"]
    assert isinstance(proxy, ProxyService)
    return proxy


async def test_secret_read_on_another_node_and_http_through_a_peer(
        nodes: list[Node], http_server: HttpServer) -> None:
    owner, server, egressless = (proxy_of(n) for n in nodes)
    channel = aio_channel(f"127.0.0.1:{nodes[0].api_port}", nodes[0].api_token)
    try:
        reply = await proxy_pb2_grpc.ProxyServiceStub(channel).SetSecret(
            proxy_pb2.SetSecretRequest(name="api_key", value=SECRET.encode(),
                                       allowed=["weather"]))
    finally:
        await channel.close()
    assert reply.recipients == 3 and reply.stored >= 1

    host = server.host_for("weather", "forecast")
    assert await host.get_secret("api_key") == SECRET             # fetched from the DHT
    with pytest.raises(PermissionError):
        await server.host_for("billing", "charge").get_secret("api_key")

    # rotation reaches the other node without a restart
    await owner.secrets.set("api_key", b"rotated-value-2", ["weather"], [])
    assert await host.get_secret("api_key") == "rotated-value-2"
    await owner.secrets.set("api_key", SECRET.encode(), ["weather"], [])

    # node 2 has no egress: its call goes out through a peer over the sealed channel, with
    # the secret substituted by node 2 and never handed to the function
    hits = len(http_server.hits)
    far = egressless.host_for("weather", "forecast")
    resp = await far.call_external_api(
        f"http://api.test:{http_server.port}/echo", "GET",
        {"Authorization": "Bearer {{secret:api_key}}"}, None, 5.0)
    assert resp["status"] == 200 and SECRET not in json.dumps(resp)
    assert http_server.hits[hits][2]["Authorization"] == f"Bearer {SECRET}"
    assert owner.peers.stats["served_http"] + server.peers.stats["served_http"] == 1
    with pytest.raises(PermissionError):          # the peer re-checks the allow-list per hop
        await far.call_external_api(
            f"http://api.test:{http_server.port}/redirect?to=http://127.0.0.1:"
            f"{http_server.port}/echo", "GET", None, None, 5.0)
    egressless.policy.http_allow["weather"].append("internal.test")
    with pytest.raises(PermissionError, match="private"):     # 10.1.2.3, refused by the peer
        await far.call_external_api("http://internal.test/", "GET", None, None, 5.0)
    assert len(http_server.hits) == hits + 2


class Allocations:
    """The payload buffers the channel's TCP receivers allocate in this process (tcp_rx):
    one per received message over 16 KiB, of its size (the nodes' replies are small)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        real = tcp_rx._writable_bytes

        def allocate(size: int) -> tuple[bytes, memoryview]:
            self.sizes.append(size)
            return real(size)
        monkeypatch.setattr(tcp_rx, "_writable_bytes", allocate)

    def largest(self) -> int:
        return max(self.sizes, default=0)


async def test_a_hostile_proxy_peer_s_answer_is_held_to_the_origin_s_caps(
        nodes: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes 0 and 1 serve ``proxy.Http`` for node 2 (--proxy-via-peers); both are made
    hostile in process (their handler replaced by one that answers what the test says).
    Before, node 2 handed the function whatever a peer answered, up to the channel's 64 MiB
    frame, whatever its own cap; now each bad answer is a clear error and nothing of it. An
    answer over the cap is refused at its header (the call's max_reply), before node 2
    allocates or receives it: before, the 16 MiB answer was received whole, then refused."""
    allocations = Allocations(monkeypatch)
    far = proxy_of(nodes[2])
    cap = far.policy.max_response_bytes
    url = "http://api.test/echo"
    header = proxy_pb2.Header
    bad = {
        "a body of 1 MiB + 1 byte": (proxy_pb2.HttpReply(status=200, url=url,
                                                          body=b"x" * (cap + 1)),
                                      "body of 1048577 bytes, over this node's cap"),
        "a body of 16 MiB": (proxy_pb2.HttpReply(status=200, url=url, body=b"y" * 2**24),
                             "over this node's cap of 1048576 for a body; refused unread"),
        "5,000 headers": (proxy_pb2.HttpReply(status=200, url=url, headers=[
            header(name=f"x-{i}", value="v") for i in range(5000)]), "5000 headers"),
        "a 128 KiB header": (proxy_pb2.HttpReply(status=200, url=url, headers=[
            header(name="x-big", value="v" * 2**17)]), "bytes of headers"),
        "status 0": (proxy_pb2.HttpReply(status=0, url=url), "HTTP status 0"),
        "status 70000": (proxy_pb2.HttpReply(status=70000, url=url), "HTTP status 70000"),
        "a file: URL": (proxy_pb2.HttpReply(status=200, url="file:///etc/passwd"),
                        "malformed URL"),
        "bytes that are no HttpReply": (b"\xff\xff\xff\xff", "malformed reply"),
    }
    answer: list[bytes] = []
    served: list[bytes] = []

    async def hostile(caller: Caller, body: bytes) -> bytes:
        served.append(caller.node_id)
        return answer[0]

    for node in nodes[:2]:
        assert node.ctx is not None
        node.ctx.channel_server.handle("proxy.Http", hostile)
    host = far.host_for("weather", "forecast")
    for what, (reply, reason) in bad.items():
        answer[:] = [reply if isinstance(reply, bytes) else reply.SerializeToString()]
        allocations.sizes.clear()
        with pytest.raises(RuntimeError, match=reason) as info:
            await host.call_external_api(url, "GET", None, None, 5.0)
        assert len(str(info.value)) < 300, what                # a reason, not the answer
        assert str(info.value).startswith("peer "), what       # naming the peer
        assert allocations.largest() < 2 * cap, what           # nothing over the cap held
    assert len(served) == len(bad)          # one peer asked per call: a refusal, not a retry
    assert far.peers.stats["refused_answers"] == len(bad)
    assert far.status()["peer"]["refused_unread"] == 1     # the 16 MiB one, at its header
    answer[:] = [proxy_pb2.HttpReply(status=200, url=url, body=b"x" * cap, headers=[
        header(name="content-type", value="text/plain")]).SerializeToString()]
    resp = await host.call_external_api(url, "GET", None, None, 5.0)   # at the cap: handed
    assert resp["status"] == 200 and len(resp["body"]) == cap


async def test_a_hostile_proxy_peer_s_oversized_dns_answer_is_refused_unread(
        nodes: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """``proxy.Resolve`` answers are capped at MAX_RESOLVE_RECORDS records of at most
    MAX_RECORD_VALUE_CHARS: one of 8 MiB is refused at its header, before node 2 holds it,
    and not asked of another peer; one at the caps is taken."""
    allocations = Allocations(monkeypatch)
    far = proxy_of(nodes[2])
    served: list[bytes] = []
    records = [2048]

    async def hostile(caller: Caller, body: bytes) -> bytes:
        served.append(caller.node_id)
        return proxy_pb2.ResolveReply(records=[
            proxy_pb2.Record(type="TXT", value="v" * 4096, ttl=60)] * records[0],
            source="upstream").SerializeToString()

    for node in nodes[:2]:
        assert node.ctx is not None
        node.ctx.channel_server.handle("proxy.Resolve", hostile)
    with pytest.raises(ResourceExhaustedError, match="for DNS records; refused unread") as info:
        await far.peers.resolve("api.test", "TXT", "weather")
    assert str(info.value).startswith("peer ") and len(str(info.value)) < 300
    assert allocations.largest() < RESOLVE_REPLY_CAP < 2**23
    assert len(served) == 1 and far.status()["peer"]["refused_unread"] == 1
    assert far.peers.stats["refused_answers"] == 1
    records[0] = 256                                          # at the caps: taken
    answer = await far.peers.resolve("api.test", "TXT", "weather")
    assert len(answer.records) == 256


async def test_a_peer_whose_answer_was_refused_is_asked_last(
        nodes: list[Node], http_server: HttpServer) -> None:
    """Peers are ranked by XOR to the domain, so the one nearest a domain served every request
    for it: a hostile one failed them all. After one refused answer it is asked last."""
    far = proxy_of(nodes[2])
    url = f"http://api.test:{http_server.port}/echo"
    first = far.peers._candidates(url.split("/")[2])[0].node_id
    liar = next(n for n in nodes[:2] if n.ctx is not None and n.ctx.identity.node_id == first)
    served: list[bytes] = []

    async def hostile(caller: Caller, body: bytes) -> bytes:
        served.append(caller.node_id)
        return proxy_pb2.HttpReply(status=0, url=url).SerializeToString()

    assert liar.ctx is not None
    liar.ctx.channel_server.handle("proxy.Http", hostile)
    host = far.host_for("weather", "forecast")
    with pytest.raises(RuntimeError, match="HTTP status 0"):
        await host.call_external_api(url, "GET", None, None, 5.0)
    for _ in range(3):                       # the honest peer serves from now on
        resp = await host.call_external_api(url, "GET", None, None, 5.0)
        assert resp["status"] == 200
    assert len(served) == 1
    assert far.status()["peer"]["shunned"] == 1


async def test_a_header_secret_goes_out_only_through_a_peer_it_is_sealed_to(
        nodes: list[Node], http_server: HttpServer) -> None:
    """A secret set with --node is sealed to those nodes (and its owner) only; before, node 2
    (--proxy-via-peers) substituted it into a header and sent the request to whichever peer
    serves, so a node the owner kept it from saw it in clear."""
    owner, other, far = (proxy_of(n) for n in nodes)
    await owner.secrets.set("narrow", SECRET.encode(), ["weather"],
                            [nodes[2].identity.node_id_hex[:16]])      # + the owner, node 0
    host = far.host_for("weather", "forecast")
    url = f"http://api.test:{http_server.port}/echo"
    auth = {"Authorization": "Bearer {{secret:narrow}}"}
    hits, served = len(http_server.hits), other.peers.stats["served_http"]
    owner.policy.serve_peers = False          # the one recipient that could carry it refuses
    try:
        with pytest.raises(RuntimeError, match="sealed to"):
            await host.call_external_api(url, "GET", auth, None, 5.0)
    finally:
        owner.policy.serve_peers = True
    assert other.peers.stats["served_http"] == served and len(http_server.hits) == hits
    resp = await host.call_external_api(url, "GET", auth, None, 5.0)   # through node 0
    assert resp["status"] == 200 and SECRET not in json.dumps(resp)
    assert http_server.hits[hits][2]["Authorization"] == f"Bearer {SECRET}"
    assert other.peers.stats["served_http"] == served
    resp = await host.call_external_api(url, "GET", None, None, 5.0)   # no secret: any peer
    assert resp["status"] == 200


async def test_function_names_resolve_to_providers(nodes: list[Node]) -> None:
    from mesh.records import sign_record

    provider = nodes[1]
    try:
        from proto import compute_pb2

        payload = compute_pb2.ProviderRecord(
            function="hello", worker_id="w1", node_id=provider.identity.node_id,
            address=f"127.0.0.1:{provider.port}").SerializeToString()
    except ImportError:                      # the compute capability is not in this tree
        payload = b""
    assert provider.membership is not None
    await provider.membership.publish(sign_record(provider.identity, "provider", payload,
                                                  name=b"hello", ttl_s=60))
    proxy = proxy_of(nodes[0])
    a = await proxy.resolve("hello.fn.mesh", "A")
    assert a.source == "mesh" and [r.value for r in a.records] == ["127.0.0.1"]
    txt = await proxy.resolve("hello.fn.mesh", "TXT")
    assert [r.value for r in txt.records] == [f"{provider.identity.node_id_hex} "
                                              f"127.0.0.1:{provider.port}"]
    with pytest.raises(NotFoundError):
        await proxy.resolve("nobody.fn.mesh", "A")


WEATHER = '''
import hashlib

def key_matches(digest):
    return hashlib.sha256(worker.get_secret("api_key").encode()).hexdigest() == digest

def key_leak():
    raise ValueError("upstream refused key " + worker.get_secret("api_key"))

def key_fetch(url):
    r = worker.call_external_api(url, headers={"Authorization": "Bearer {{secret:api_key}}"})
    return [r["status"], "tok-" in r["body"]]

def key_query(url):
    return worker.call_external_api(url + "?k=" + worker.get_secret("api_key"))["status"]

def key_lookup():
    return worker.resolve("api.test")
'''
BILLING = '''
def key_steal():
    return worker.get_secret("api_key")
'''


async def test_deployed_functions_use_the_proxy_end_to_end(
        tmp_path: Path, dnsmasq: Dnsmasq, http_server: HttpServer) -> None:
    """Through the compute service: `tw-mesh deploy` + `tw-mesh call` on other nodes."""
    import hashlib

    flags = ["--sweep-interval", "0.5", "--resolver", dnsmasq.address,
             "--allow-network", "127.0.0.1/32", "--http-allow", "weather=api.test"]
    (tmp_path / "weather.py").write_text(WEATHER)
    (tmp_path / "billing.py").write_text(BILLING)
    async with NodeCluster(tmp_path, 3, extra=flags) as cluster:
        api = [n.api for n in cluster.nodes]
        proc = run_cli("secret", "set", "api_key", "--for", "weather", api=api[0],
                       input_data=SECRET.encode())
        assert proc.returncode == 0, proc.stderr
        for module, worker in (("weather.py", "weather"), ("billing.py", "billing")):
            proc = run_cli("deploy", str(tmp_path / module), "--worker-id", worker, api=api[0])
            assert proc.returncode == 0, proc.stderr

        digest = hashlib.sha256(SECRET.encode()).hexdigest()
        for i in (1, 2):
            proc = run_cli("call", "key_matches", "--args", json.dumps([digest]), api=api[i])
            assert proc.returncode == 0 and proc.stdout.strip() == b"true", proc.stderr
        proc = run_cli("call", "key_steal", api=api[1])
        assert proc.returncode == 1 and b"PERMISSION_DENIED" in proc.stderr
        assert SECRET.encode() not in proc.stdout + proc.stderr
        proc = run_cli("call", "key_leak", "--traceback", api=api[2])
        assert proc.returncode == 1 and b"[REDACTED]" in proc.stderr, proc.stderr
        assert SECRET.encode() not in proc.stdout + proc.stderr
        hits = len(http_server.hits)
        proc = run_cli("call", "key_fetch", "--args",
                       json.dumps([f"http://api.test:{http_server.port}/echo"]), api=api[1])
        assert proc.returncode == 0 and json.loads(proc.stdout) == [200, False], proc.stderr
        assert http_server.hits[hits][2]["Authorization"] == f"Bearer {SECRET}"
        proc = run_cli("call", "key_query", "--args",        # secret in a URL: never logged
                       json.dumps([f"http://api.test:{http_server.port}/echo"]), api=api[2])
        assert proc.returncode == 0 and proc.stdout.strip() == b"200", proc.stderr
        assert http_server.hits[-1][1] == f"/echo?k={SECRET}"
        proc = run_cli("call", "key_lookup", api=api[2])
        (record,) = json.loads(proc.stdout)          # cached since the calls above: TTL ≤ 60
        assert record["type"] == "A" and record["value"] == "127.0.0.1"
        assert 0 < record["ttl"] <= ZONE_TTL

        # rotation: new calls see the new value on every node within the short read cache
        rotated = "tok-rotated-5e5e5e5e"
        proc = run_cli("secret", "set", "api_key", "--for", "weather", api=api[0],
                       input_data=rotated.encode())
        assert proc.returncode == 0, proc.stderr
        from compute import values

        new = hashlib.sha256(rotated.encode()).hexdigest()
        for i in (1, 2):
            rpc = cluster.stub(i, taskworker_pb2_grpc.RPCServiceStub)
            seen = None
            for _ in range(40):
                try:
                    resp = await rpc.CallFunction(taskworker_pb2.FunctionCallRequest(
                        function_name="key_matches", args=values.to_list([new]), timeout=20),
                        timeout=25)
                    seen = values.from_value(resp.result)
                except grpc.aio.AioRpcError as exc:
                    seen = exc.details()
                if seen is True:
                    break
                await asyncio.sleep(0.25)
            assert seen is True, seen
    for path in sorted(tmp_path.rglob("*")):  # noqa: ASYNC240 - no plaintext in dirs or logs
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
            assert rotated.encode() not in path.read_bytes(), path

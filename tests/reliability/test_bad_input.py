"""Issue 10 (3, 5): bad input at every gRPC method of real nodes, junk on their ports.

Every method of the local API and of the peer service gets hypothesis-generated messages (with
path tricks and unicode in names; id fields mostly drawn from the ids of a real public file, a
private file, a document and its versions and a deployed function, so inputs get past input
validation into the handlers) and raw random bytes. The only acceptable answers are OK or a
deliberate status code; INTERNAL/UNKNOWN (an unhandled exception) or a hang fails the test, and
the nodes must keep serving afterwards. `make test` runs TW_FUZZ_EXAMPLES=40 per method;
`make reliability` runs 10,000.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.servicer import USER_ERROR_MD
from proto import compute_pb2, peer_pb2, proxy_pb2, taskworker_pb2, taskworker_pb2_grpc
from tests.support import protofuzz
from tests.support.nodes import ClusterInThread, NodeCluster, run_cli
from tests.support.protofuzz import messages

EXAMPLES = int(os.environ.get("TW_FUZZ_EXAMPLES", "40"))
DELIBERATE = protofuzz.DELIBERATE | {grpc.StatusCode.UNAUTHENTICATED}
PEER_DELIBERATE = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT,
                   grpc.StatusCode.DATA_LOSS}
API_METHODS = [m for proto in (taskworker_pb2, compute_pb2, proxy_pb2)
               for s in proto.DESCRIPTOR.services_by_name.values() for m in s.methods
               if m.name != "Leave"]          # Leave stops the node: covered by its own tests
# Handshake is protobuf; Call and Stream carry binary frames (mesh/channel/frames.py).
PEER_METHODS = [("Handshake", False), ("Call", False), ("Stream", True)]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    # Upstream DNS on a closed loopback port: lookups fail at once instead of timing out.
    extra = ["--sweep-interval", "0.5", "--resolver", "127.0.0.1:9"]
    with ClusterInThread(tmp_path_factory.mktemp("fuzz"), 3, extra) as c:
        yield c


MODULE = '''
from taskworker import TaskWorker

worker = TaskWorker("fuzz")

@worker.function("mix")
def mix(a, b=0):
    return {"sum": a + b}
'''


@pytest.fixture(scope="module")
def known(cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, tuple[str | bytes, ...]]:
    """Ids of objects that exist on node 0, by the request field that takes them."""
    ids: list[str] = []
    versions: list[str] = []
    with cluster.nodes[0].sync_channel() as ch:
        files = taskworker_pb2_grpc.FileServiceStub(ch)
        for public in (True, False):
            r = files.Push(taskworker_pb2.PushRequest(file_data=b"fuzz" * 500, public=public,
                                                      filename="f.txt"), timeout=60)
            ids += [r.cid, r.file_id]
        doc = files.Push(taskworker_pb2.PushRequest(file_data=b"v0", filename="doc"), timeout=60)
        ids += [doc.cid, doc.file_id]
        for i in range(2):
            rev = files.Revise(taskworker_pb2.ReviseRequest(file_id=doc.file_id,
                                                            file_data=b"v%d" % i), timeout=60)
            versions.append(rev.version)
        peers = taskworker_pb2_grpc.NodeServiceStub(ch).Peers(taskworker_pb2.PeersRequest())
    module = tmp_path_factory.mktemp("fuzzmod") / "fuzz_mod.py"
    module.write_text(MODULE)
    out = run_cli("deploy", str(module), api=cluster.nodes[0].api)
    assert out.returncode == 0, out.stderr
    return {"file_id": tuple(ids), "version": tuple(versions), "base_versions": tuple(versions),
            "user_id": ("default",), "grantee": ("default", *(p.node_id for p in peers.peers)),
            "function_name": ("mix",), "domain": ("localhost", "example.com"),
            "record_type": ("A", "AAAA", "TXT"),
            # ComputeService (Deploy/Functions/Name) and ProxyService (secrets)
            "function": ("mix",), "names": ("mix", "other"), "action": ("show", "release",
                                                                         "transfer"),
            "source": (MODULE.encode(), b"def f(:\n"), "filename": ("fuzz_mod.py",),
            "to_node_id": tuple(bytes.fromhex(p.node_id) for p in peers.peers),
            "name": ("api_key", "token")}


def _invoke(channel: grpc.Channel, method: Any, payload: bytes) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    timeout = 30
    if method.client_streaming and method.server_streaming:
        list(channel.stream_stream(path)(iter([payload]), timeout=timeout))
    elif method.client_streaming:
        channel.stream_unary(path)(iter([payload, payload]), timeout=timeout)
    elif method.server_streaming:
        list(channel.unary_stream(path)(payload, timeout=timeout))
    else:
        channel.unary_unary(path)(payload, timeout=timeout)


def _raised_by_user_code(exc: grpc.RpcError) -> bool:
    """The deployed function itself raised: UNKNOWN with a structured UserError, by contract
    (docs/compute.md); an unhandled exception in the node carries no such metadata."""
    metadata = exc.trailing_metadata() or ()  # type: ignore[attr-defined]
    return any(key == USER_ERROR_MD for key, _ in metadata)


def _assert_serving(cluster: NodeCluster) -> None:
    for node in cluster.nodes:
        assert node.alive, f"node died: {node.log_path.read_text()[-2000:]}"
        with node.sync_channel() as ch:
            taskworker_pb2_grpc.NodeServiceStub(ch).Peers(taskworker_pb2.PeersRequest(), timeout=10)


@pytest.mark.parametrize("method", API_METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_api_method_survives_fuzzing(cluster: NodeCluster,
                                     known: dict[str, tuple[str | bytes, ...]],
                                     method: Any) -> None:
    seen: dict[str, int] = {}
    with cluster.nodes[0].sync_channel() as channel:
        @FUZZ
        @given(payload=st.one_of(messages(method.input_type, known=known).map(
            lambda m: m.SerializeToString()), st.binary(max_size=512)))
        def run(payload: bytes) -> None:
            try:
                _invoke(channel, method, payload)
                seen["OK"] = seen.get("OK", 0) + 1
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                if code == grpc.StatusCode.UNKNOWN and _raised_by_user_code(exc):
                    seen["user error"] = seen.get("user error", 0) + 1
                    return
                seen[code.name] = seen.get(code.name, 0) + 1
                assert code in DELIBERATE, f"{code.name}: {exc.details()}"  # type: ignore[attr-defined]
                assert code != grpc.StatusCode.DEADLINE_EXCEEDED or "Deadline" not in (
                    exc.details() or ""), "the call hung until the client's deadline"  # type: ignore[attr-defined]
        run()
    print(f"fuzz {method.name}: {sum(seen.values())} inputs, {seen}")   # shown by pytest -rP
    assert sum(seen.values()) >= min(EXAMPLES, 10)
    _assert_serving(cluster)


@pytest.mark.parametrize(("name", "streaming"), PEER_METHODS, ids=[m[0] for m in PEER_METHODS])
def test_peer_service_refuses_garbage_without_a_session(cluster: NodeCluster, name: str,
                                                        streaming: bool) -> None:
    handshake = messages(peer_pb2.HandshakeRequest.DESCRIPTOR).map(lambda m: m.SerializeToString())
    frame_like = st.builds(lambda a, b: a + b, st.binary(min_size=61, max_size=61),
                           st.binary(max_size=256))
    path = f"/twmesh.peer.PeerChannel/{name}"
    seen: dict[str, int] = {}
    with grpc.insecure_channel(cluster.nodes[1].peer) as channel:
        @FUZZ
        @given(payload=st.one_of(handshake, frame_like, st.binary(max_size=512)))
        def run(payload: bytes) -> None:
            try:
                if streaming:
                    list(channel.stream_stream(path)(iter([payload]), timeout=30))
                else:
                    channel.unary_unary(path)(payload, timeout=30)
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                seen[code.name] = seen.get(code.name, 0) + 1
                assert code in PEER_DELIBERATE, exc.details()  # type: ignore[attr-defined]
                return
            seen["OK"] = seen.get("OK", 0) + 1
            # Only a well-formed handshake addressed to this node may succeed.
            assert name == "Handshake"
        run()
    print(f"fuzz peer {name}: {sum(seen.values())} inputs, {seen}")   # shown by pytest -rP
    assert sum(seen.values()) >= min(EXAMPLES, 10)
    _assert_serving(cluster)


def test_malformed_protobuf_is_invalid_argument(cluster: NodeCluster) -> None:
    with cluster.nodes[0].sync_channel() as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/taskworker.FileService/Get")(b"\xff\xff\xff\xff", timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "malformed" in (info.value.details() or "")  # type: ignore[attr-defined]


def test_oversized_message_refused(cluster: NodeCluster) -> None:
    big = taskworker_pb2.PushRequest(file_data=b"\0" * (65 * 2**20)).SerializeToString()
    with cluster.nodes[0].sync_channel(options=[
            ("grpc.max_send_message_length", 128 * 2**20)]) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/taskworker.FileService/Push")(big, timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    _assert_serving(cluster)


def test_junk_on_tcp_and_udp_ports(cluster: NodeCluster) -> None:
    rng = __import__("random").Random(1)
    node = cluster.nodes[2]
    for address in (node.api, node.peer):
        host, port = address.rsplit(":", 1)
        for size in (0, 1, 24, 100, 5000):
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[: size] + rng.randbytes(size))
    host, port = node.peer.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(500):
            udp.sendto(rng.randbytes(rng.randint(0, 1400)), (host, int(port)))
        udp.sendto(b"\x00" + b"\x00" * 20 + b"\x93\xa5store", (host, int(port)))  # rpcudp-shaped
    _assert_serving(cluster)
    with cluster.nodes[0].sync_channel() as ch:      # and membership still holds
        peers = taskworker_pb2_grpc.NodeServiceStub(ch).Peers(taskworker_pb2.PeersRequest())
        assert node.peer in {p.address for p in peers.peers}


def test_health_and_reflection(cluster: NodeCluster) -> None:
    # both answer without the API token (taskworker/api_auth.py EXEMPT_PREFIXES)
    with grpc.insecure_channel(cluster.nodes[0].api) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "taskworker.FileService", "taskworker.RPCService",
                        "taskworker.DNSService"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        reply = next(iter(stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)))
        names = {s.name for s in reply.list_services_response.service}
        assert {"taskworker.FileService", "taskworker.RPCService", "taskworker.DNSService",
                "taskworker.NodeService", "twmesh.compute.ComputeService",
                "twmesh.proxy.ProxyService", "grpc.health.v1.Health"} <= names


def test_local_api_refuses_non_loopback_unless_allowed(tmp_path: Path) -> None:
    out = run_cli("join", "--listen", "127.0.0.1:0", "--api", "0.0.0.0:0",
                  "--data-dir", str(tmp_path / "n"))
    assert out.returncode == 1
    assert b"loopback" in out.stderr and b"Traceback" not in out.stderr

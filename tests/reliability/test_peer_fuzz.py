"""Issue 10 (3): every peer method fuzzed *behind* the handshake, as any mesh member could.

test_bad_input.py throws garbage at the peer port, which never gets past the handshake. Here a
real client with its own key opens a sealed session to a node (any key may: membership is not a
secret) and calls each peer method with hypothesis-built protobufs (id fields mostly drawn from
a real file, so inputs reach the handlers) and raw bytes. The only acceptable answers are OK or
a deliberate status code: INTERNAL means a handler raised something unhandled. The node must
keep serving afterwards. `proxy.Http` is left out: a well-formed request to a public address
would leave loopback (its policy is tested in tests/compute/test_proxy*.py).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.channel import ChannelPool
from mesh.channel.client import PeerChannel
from mesh.errors import MeshError, PeerCallError
from mesh.identity import Identity
from proto import (
    compute_pb2,
    mesh_pb2,
    proxy_pb2,
    storage_pb2,
    taskworker_pb2,
    taskworker_pb2_grpc,
    versions_pb2,
)
from storage.versions.records import parse_file_id
from tests.support import protofuzz
from tests.support.nodes import ClusterInThread, NodeCluster
from tests.support.protofuzz import messages

T = TypeVar("T")
EXAMPLES = int(os.environ.get("TW_FUZZ_EXAMPLES", "40"))
DELIBERATE = protofuzz.DELIBERATE | {grpc.StatusCode.DATA_LOSS}
# method -> request message (None: the body is not a protobuf)
METHODS: dict[str, type[message.Message] | None] = {
    "storage.StoreFragment": storage_pb2.StoreFragmentRequest,
    "storage.FetchFragment": storage_pb2.FetchFragmentRequest,
    "storage.HasFragments": storage_pb2.HasFragmentsRequest,
    "storage.DeleteFragment": storage_pb2.DeleteFragmentRequest,
    "storage.StoreManifest": storage_pb2.StoreManifestRequest,
    "storage.FetchManifests": storage_pb2.FetchManifestsRequest,
    "storage.StoreDocument": storage_pb2.StoreDocumentRequest,
    "storage.FetchDocument": storage_pb2.FetchDocumentRequest,
    "storage.StoreBatch": None,
    "versions.Digest": versions_pb2.DigestRequest,
    "versions.Pull": versions_pb2.PullRequest,
    "versions.Push": versions_pb2.Bundle,
    "compute.Call": compute_pb2.CallRequest,
    "compute.StoreCode": compute_pb2.StoreCodeRequest,
    "compute.FetchCode": compute_pb2.FetchCodeRequest,
    "proxy.Resolve": proxy_pb2.ResolveRequest,
    "repair.Progress": mesh_pb2.StatusReply,
    "mesh.Status": None,
    "mesh.Ping": None,
}
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterInThread]:
    extra = ["--sweep-interval", "0.5", "--resolver", "127.0.0.1:9"]
    driver = ClusterInThread(tmp_path_factory.mktemp("peerfuzz"), 3, extra)
    with driver:
        yield driver


@pytest.fixture(scope="module")
def cluster(driver: ClusterInThread) -> NodeCluster:
    return driver.cluster


@pytest.fixture(scope="module")
def known(cluster: NodeCluster) -> dict[str, tuple[str | bytes, ...]]:
    """Ids of a real file on the fuzzed node, by the request field that takes them."""
    with cluster.nodes[0].sync_channel() as ch:
        files = taskworker_pb2_grpc.FileServiceStub(ch)
        r = files.Push(taskworker_pb2.PushRequest(file_data=b"peer fuzz" * 3000), timeout=60)
        inline = files.Push(taskworker_pb2.PushRequest(file_data=b"tiny"), timeout=60)
        peers = taskworker_pb2_grpc.NodeServiceStub(ch).Peers(taskworker_pb2.PeersRequest())
    file_ids = (r.file_id, inline.file_id)
    raw_ids = tuple(parse_file_id(f) for f in file_ids)  # versions.* take the 16 raw bytes
    return {"cid": (r.cid, inline.cid), "file": file_ids, "file_id": (*file_ids, *raw_ids),
            "function": ("nothing",), "domain": ("localhost",), "record_type": ("A", "TXT"),
            "json": (f'{{"cid": "{r.cid}"}}',), "node": (peers.self_id,)}


def _bodies(method: str, known: dict[str, tuple[str | bytes, ...]]
            ) -> st.SearchStrategy[bytes]:
    raw = st.binary(max_size=512)
    cls = METHODS[method]
    if cls is None:
        return raw
    return st.one_of(messages(cls.DESCRIPTOR, known=known).map(
        lambda m: m.SerializeToString()), raw)


@pytest.mark.parametrize("method", list(METHODS))
def test_peer_method_survives_fuzzing_behind_the_handshake(
        driver: ClusterInThread, known: dict[str, tuple[str | bytes, ...]], method: str) -> None:
    cluster = driver.cluster
    target = cluster.nodes[0]
    node_id = bytes.fromhex(str(known["node"][0]))
    seen: dict[str, int] = {}

    def on_loop(coro: Coroutine[Any, Any, T]) -> T:  # grpc.aio lives on the cluster's loop
        return asyncio.run_coroutine_threadsafe(coro, driver.loop).result(120)

    async def new_peer() -> tuple[ChannelPool, PeerChannel]:
        pool = ChannelPool(Identity.generate())  # a newcomer with its own key: any member could
        return pool, target.member(pool, node_id)

    pool, peer = on_loop(new_peer())
    try:

        async def call(body: bytes) -> None:
            try:
                await peer.unary(method, body, timeout=30)
                seen["OK"] = seen.get("OK", 0) + 1
            except PeerCallError as exc:
                seen[exc.code.name] = seen.get(exc.code.name, 0) + 1
                assert exc.code in DELIBERATE, f"{exc.code.name}: {exc}"
            except MeshError as exc:  # a channel-level refusal is deliberate too
                seen[type(exc).__name__] = seen.get(type(exc).__name__, 0) + 1

        @FUZZ
        @given(body=_bodies(method, known))
        def run(body: bytes) -> None:
            on_loop(call(body))

        run()
    finally:
        on_loop(pool.close())
    print(f"peer fuzz {method}: {sum(seen.values())} inputs, {seen}")  # pytest -rP
    assert sum(seen.values()) >= min(EXAMPLES, 10)
    assert "INTERNAL" not in seen
    assert target.alive, target.log_path.read_text()[-2000:]
    _assert_serving(cluster)


def _assert_serving(cluster: NodeCluster) -> None:
    for node in cluster.nodes:
        with node.sync_channel() as ch:
            taskworker_pb2_grpc.NodeServiceStub(ch).Peers(taskworker_pb2.PeersRequest(), timeout=10)


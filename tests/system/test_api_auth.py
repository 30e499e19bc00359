"""The local API's bearer token, attacked through real node processes and real gRPC.

Each node keeps a random token in DATA_DIR/api.token (0600) and, while it runs, a copy in
RUNTIME/api-PORT.token (0600, directory 0700) naming the node's process, which clients trust only
while that process runs (taskworker/api_runtime.py); every local-API method but health and
reflection refuses a call without that node's token with UNAUTHENTICATED, counted in the
node's Status (taskworker/api_auth.py, api_refusals.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proto import compute_pb2, proxy_pb2, taskworker_pb2
from taskworker.api_runtime import read_runtime_file, runtime_file
from taskworker.api_token import RUNTIME_ENV, TOKEN_ENV, TOKEN_FILE
from tests.support.nodes import NodeCluster, NodeProc, run_cli

API_METHODS = [m for proto in (taskworker_pb2, compute_pb2, proxy_pb2)
               for s in proto.DESCRIPTOR.services_by_name.values() for m in s.methods]
# Real requests for the methods that change something: if one got through, it would show.
REAL = {
    "Push": taskworker_pb2.PushRequest(file_data=b"stolen?", filename="x.txt"),
    "PushStream": taskworker_pb2.PushChunk(data=b"stolen?"),
    "SetSecret": proxy_pb2.SetSecretRequest(name="planted", value=b"v", allowed=["f"]),
    "Leave": taskworker_pb2.LeaveRequest(drain=False),
    "Deploy": compute_pb2.DeployRequest(source=b"def f():\n    return 1\n", filename="m.py"),
}


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


async def _call(channel: grpc.aio.Channel, method: Any, metadata: tuple[tuple[str, str], ...]
                ) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    real = REAL.get(method.name)
    payload = real.SerializeToString() if real is not None else b""
    if method.client_streaming and method.server_streaming:
        async for _ in channel.stream_stream(path)(iter([payload]), metadata=metadata, timeout=10):
            pass
    elif method.client_streaming:
        await channel.stream_unary(path)(iter([payload]), metadata=metadata, timeout=10)
    elif method.server_streaming:
        async for _ in channel.unary_stream(path)(payload, metadata=metadata, timeout=10):
            pass
    else:
        await channel.unary_unary(path)(payload, metadata=metadata, timeout=10)


async def test_every_api_method_refuses_a_call_without_this_nodes_token(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 2) as cluster:
        node, other = cluster.nodes
        token, other_token = node.token, other.token
        assert token != other_token
        attempts: dict[str, tuple[tuple[str, str], ...]] = {
            "no metadata": (),
            "another header": (("x-api-token", token),),
            "empty bearer": (("authorization", "Bearer"),),
            "no scheme": (("authorization", token),),
            "basic scheme": (("authorization", f"Basic {token}"),),
            "prefix of the token": (("authorization", f"Bearer {token[:-1]}"),),
            "token plus a byte": (("authorization", f"Bearer {token}x"),),
            "random token": (("authorization", "Bearer " + "A" * len(token)),),
            "the other node's token": (("authorization", f"Bearer {other_token}"),),
        }
        missing = {"no metadata", "another header"}
        malformed = {"empty bearer", "no scheme", "basic scheme"}
        async with grpc.aio.insecure_channel(node.api) as channel:
            for method in API_METHODS:
                # each refused call waits a little (api_refusals.REFUSAL_DELAY): all at once
                outcomes = await asyncio.gather(
                    *(_call(channel, method, metadata) for metadata in attempts.values()),
                    return_exceptions=True)
                for what, outcome in zip(attempts, outcomes, strict=True):
                    name = f"{method.containing_service.name}.{method.name} with {what}"
                    assert isinstance(outcome, grpc.aio.AioRpcError), f"{name}: {outcome!r}"
                    assert outcome.code() == grpc.StatusCode.UNAUTHENTICATED, \
                        f"{name}: {outcome.code()} {outcome.details()}"
                    details = outcome.details() or ""
                    assert f"{TOKEN_FILE}" in details and "authorization: Bearer" in details, name
                    assert ("requires a token" if what in missing else "wrong API token") \
                        in details, f"{name}: {details}"
            # health answers without a token (for load balancers and `grpc_health_probe`)
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="taskworker.FileService"), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            # the right token, any case of the scheme, works on the same channel
            peers = channel.unary_unary("/taskworker.NodeService/Peers",
                                        response_deserializer=taskworker_pb2.PeersResponse.FromString)
            for scheme in ("Bearer", "bearer"):
                reply = await peers(b"", metadata=(("authorization", f"{scheme} {token}"),),
                                    timeout=10)
                assert len(reply.peers) == 1
        # nothing the refused calls asked for happened: the node did not leave, stored
        # nothing, planted no secret, deployed nothing
        assert node.alive
        status = json.loads(run_cli("status", "--json", api=node.api).stdout)
        assert status["services"]["storage"]["pushes"] == 0
        assert status["services"]["storage"]["manifests"] == 0
        listing = json.loads(run_cli("secret", "list", "--json", api=node.api).stdout)
        assert listing == [], listing
        functions = json.loads(run_cli("functions", "f", "--json", api=node.api).stdout)
        assert functions["providers"] == [], functions
        # every refusal was counted by reason (Status read with the node's token), and logged
        n = len(API_METHODS)
        assert status["api_auth"]["refused"] == {
            "missing": n * len(missing), "malformed": n * len(malformed),
            "wrong": n * (len(attempts) - len(missing) - len(malformed))}
        assert "local API: refused 1 call(s)" in node.log_path.read_text()
        # the other node refused nothing
        other_status = json.loads(run_cli("status", "--json", api=other.api).stdout)
        assert other_status["api_auth"]["refused"] == dict.fromkeys(
            ("missing", "malformed", "wrong"), 0)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_token_files_are_private_and_the_runtime_copy_goes_on_clean_stop(
        tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 1) as cluster:
        node = cluster.nodes[0]
        token_file = node.data_dir / TOKEN_FILE
        published = runtime_file(_port(node.api))
        assert published.parent == Path(os.environ[RUNTIME_ENV])
        assert _mode(token_file) == 0o600 and _mode(published) == 0o600
        assert _mode(published.parent) == 0o700 and _mode(node.data_dir) == 0o700
        record = read_runtime_file(published)
        assert record.token == node.token and record.owner is not None
        assert node.proc is not None and record.owner.pid == node.proc.pid
        assert len(node.token) >= 43            # secrets.token_urlsafe(32)
        assert f"bearer token in {token_file.resolve()}" in node.log_path.read_text()
        assert node.terminate() == 0
        assert not published.exists()           # removed on a clean stop
        again = await cluster.restart(0)        # a new API port; the same token
        assert again.token == node.token
        assert read_runtime_file(runtime_file(_port(again.api))).token == node.token


class _Squatter(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Whatever listens on a dead node's port next: records the metadata of every call."""

    def __init__(self) -> None:
        self.seen: list[tuple[tuple[str, Any], ...]] = []

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails
                                ) -> Any:
        self.seen.append(tuple(details.invocation_metadata or ()))
        return await continuation(details)


async def test_a_killed_nodes_runtime_file_is_refused_and_its_token_never_sent(
        tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 1) as cluster:
        node = cluster.nodes[0]
        port = _port(node.api)
        published = runtime_file(port)
        node.kill()                                  # kill -9: no clean stop, the file stays
        assert read_runtime_file(published).token == node.token
        # a node starting on that port replaces the dead one's file with its own
        node.extra = [*node.extra, "--api", f"127.0.0.1:{port}"]
        again = await cluster.restart(0)
        assert again.api == node.api and again.proc is not None
        owner = read_runtime_file(published).owner
        assert owner is not None and owner.pid == again.proc.pid
        ok = await asyncio.to_thread(run_cli, "status", api=again.api, env={TOKEN_ENV: ""})
        assert ok.returncode == 0, ok.stderr
        again.kill()
        # another process (any uid's) takes the port; a client looks the token up by port
        squatter = _Squatter()
        server = grpc.aio.server(interceptors=[squatter])
        assert server.add_insecure_port(f"127.0.0.1:{port}") == port
        await server.start()
        try:
            out = await asyncio.to_thread(run_cli, "status", api=again.api, env={TOKEN_ENV: ""})
            err = out.stderr.decode()
            assert out.returncode == 1 and err.count("\n") == 1 and "Traceback" not in err, err
            assert f"the node that wrote {published} (pid {again.proc.pid}) is no longer " \
                "running" in err and "its token was not sent" in err, err
            assert "--api-token-file" in err and TOKEN_ENV in err
            assert not published.exists()            # the stale file is gone
            assert squatter.seen == []               # not a single call reached the port
            # (what the squatter would have got: a token given explicitly is sent as asked)
            out = await asyncio.to_thread(run_cli, "status", api=again.api,
                                          env={TOKEN_ENV: again.token})
            assert out.returncode == 1
            assert any(("authorization", f"Bearer {again.token}") in seen
                       for seen in squatter.seen)
        finally:
            await server.stop(0)


async def test_cli_finds_the_token_and_says_so_when_it_cannot(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 2) as cluster:
        node, other = cluster.nodes
        empty = tmp_path / "no-runtime-files"
        nowhere = {RUNTIME_ENV: str(empty)}

        def status(*extra: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
            out = run_cli("status", "--json", *extra, api=node.api,
                          env={TOKEN_ENV: "", **(env or {})})
            return out.returncode, out.stdout.decode(), out.stderr.decode()

        code, out, err = status()                               # the runtime file
        assert code == 0 and json.loads(out)["api"] == node.api, err
        code, out, err = status(env={**nowhere, TOKEN_ENV: node.token})
        assert code == 0, err
        code, _, err = status("--api-token-file", str(node.data_dir / TOKEN_FILE), env=nowhere)
        assert code == 0, err
        # --api-token-file before $TW_MESH_API_TOKEN before the runtime file
        code, _, err = status("--api-token-file", str(node.data_dir / TOKEN_FILE),
                              env={TOKEN_ENV: other.token})
        assert code == 0, err
        code, _, err = status(env={TOKEN_ENV: other.token})
        assert code == 1
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"refused the API token from ${TOKEN_ENV}" in err and "UNAUTHENTICATED" in err
        # none anywhere
        code, _, err = status(env=nowhere)
        assert code == 1 and err.count("\n") == 1
        assert "requires an API token and none was found" in err
        assert str(runtime_file(_port(node.api), nowhere)) in err and TOKEN_ENV in err
        # another node's token file
        code, _, err = status("--api-token-file", str(other.data_dir / TOKEN_FILE))
        assert code == 1 and "refused the API token from --api-token-file" in err
        # an unreadable token file is a one-line error, not a traceback
        code, _, err = status("--api-token-file", str(tmp_path / "absent"))
        assert code == 1 and err.count("\n") == 1 and "cannot read the API token file" in err
        # a down node still reads as down, token or not
        down = run_cli("peers", api="127.0.0.1:1", env=nowhere)
        assert down.returncode == 1 and b"no node answers" in down.stderr


async def test_remote_api_still_needs_the_token(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 1, extra=["--sweep-interval", "0.5", "--api", "0.0.0.0:0",
                                               "--allow-remote-api"]) as cluster:
        node: NodeProc = cluster.nodes[0]
        assert node.api.startswith("0.0.0.0:")
        address = f"127.0.0.1:{_port(node.api)}"
        async with grpc.aio.insecure_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary("/taskworker.NodeService/Status")(b"", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        out = run_cli("status", "--json", api=address)
        assert out.returncode == 0, out.stderr

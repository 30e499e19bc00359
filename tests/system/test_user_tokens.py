"""Per-user API tokens, attacked through real node processes and real gRPC.

Two users of one node, alice and bob, each hold only their own token
(DATA_DIR/users/NAME.token, made by `tw-mesh user create`). A user token acts as its user
only (an empty user_id means that user; naming another is PERMISSION_DENIED) and may call
only taskworker/api_auth.py's USER_METHODS; the node's own token stays the admin's.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest

from proto import taskworker_pb2 as pb
from proto import taskworker_pb2_grpc
from taskworker.api_auth import USER_METHODS, aio_channel
from taskworker.api_token import RUNTIME_ENV, TOKEN_ENV, user_token_file
from tests.support.nodes import NodeCluster, NodeProc, run_cli
from tests.system.test_api_auth import API_METHODS, _call

Stub = taskworker_pb2_grpc.FileServiceStub
Denied = grpc.StatusCode.PERMISSION_DENIED


def _make_user(node: NodeProc, name: str) -> tuple[str, str]:
    """(public key hex, token), as the node's operator makes them with the CLI."""
    made = run_cli("user", "create", name, "--data-dir", str(node.data_dir))
    assert made.returncode == 0, made.stderr
    shown = run_cli("user", "token", name, "--data-dir", str(node.data_dir))
    assert shown.returncode == 0, shown.stderr
    return made.stdout.decode().split()[1], shown.stdout.decode().strip()


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


async def _refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def _get_stream(stub: Stub, request: pb.GetRequest) -> bytes:
    return b"".join([c.data async for c in stub.GetStream(request, timeout=30)])


def _push_stream(header: pb.PushRequest, data: bytes) -> list[pb.PushChunk]:
    return [pb.PushChunk(header=header), pb.PushChunk(data=data)]


async def test_a_user_token_acts_as_its_user_only(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 3) as cluster:
        node = cluster.nodes[0]
        alice_key, alice_token = _make_user(node, "alice")
        bob_key, bob_token = _make_user(node, "bob")
        for name in ("alice", "bob"):
            assert stat.S_IMODE(user_token_file(node.data_dir, name).stat().st_mode) == 0o600
        assert len({alice_token, bob_token, node.token}) == 3
        admin = cluster.stub(0, Stub)
        alice_ch = aio_channel(node.api, alice_token)
        bob_ch = aio_channel(node.api, bob_token)
        try:
            alice, bob = Stub(alice_ch), Stub(bob_ch)
            secret = b"alice's diary " + os.urandom(16).hex().encode()
            # alice pushes with an empty user_id: the file is hers, not default's
            mine = await alice.Push(pb.PushRequest(file_data=secret, filename="diary.txt",
                                                   k=2, m=1), timeout=60)
            st = await admin.Stat(pb.StatRequest(file_id=mine.cid, user_id="alice"), timeout=30)
            assert st.owner == alice_key and st.filename == "diary.txt"
            assert not (node.data_dir / "users" / "default.key").exists()
            for ref in (mine.cid, mine.file_id):
                got = await alice.Get(pb.GetRequest(file_id=ref), timeout=30)
                assert got.file_data == secret
                assert await _get_stream(alice, pb.GetRequest(file_id=ref)) == secret

            # bob, as himself, cannot read, revise or grant alice's private file
            for ref in (mine.cid, mine.file_id):
                assert await _code(bob.Get(pb.GetRequest(file_id=ref), timeout=30)) == Denied
                assert await _code(_get_stream(bob, pb.GetRequest(file_id=ref))) == Denied
            assert await _code(bob.Revise(pb.ReviseRequest(
                file_id=mine.file_id, file_data=b"bob was here"), timeout=30)) == Denied
            for read in (True, False):
                assert await _code(bob.Grant(pb.GrantRequest(
                    file_id=mine.file_id, grantee="bob", read=read), timeout=30)) == Denied
            # Stat shows him only what any mesh member sees: no filename
            seen = await bob.Stat(pb.StatRequest(file_id=mine.cid), timeout=30)
            assert seen.owner == alice_key and seen.filename == ""

            # bob cannot name alice (or default, or anyone) on any FileService method
            for other in ("alice", "default", "carol"):
                attempts = {
                    "Push": bob.Push(pb.PushRequest(file_data=b"x", user_id=other), timeout=30),
                    "PushStream": bob.PushStream(iter(_push_stream(
                        pb.PushRequest(user_id=other), b"x")), timeout=30),
                    "Get": bob.Get(pb.GetRequest(file_id=mine.cid, user_id=other), timeout=30),
                    "GetStream": _get_stream(bob, pb.GetRequest(file_id=mine.file_id,
                                                                user_id=other)),
                    "Stat": bob.Stat(pb.StatRequest(file_id=mine.cid, user_id=other),
                                     timeout=30),
                    "Revise": bob.Revise(pb.ReviseRequest(file_id=mine.file_id, file_data=b"x",
                                                          user_id=other), timeout=30),
                    "Synchronous": bob.Synchronous(pb.SynchronousRequest(
                        file_id=mine.file_id, user_id=other), timeout=30),
                    "Log": bob.Log(pb.LogRequest(file_id=mine.file_id, user_id=other),
                                   timeout=30),
                    "Grant": bob.Grant(pb.GrantRequest(file_id=mine.file_id, user_id=other,
                                                       grantee="bob", read=True), timeout=30),
                    "Grant write": bob.Grant(pb.GrantRequest(
                        file_id=mine.file_id, user_id=other, grantee="bob"), timeout=30),
                }
                for what, call in attempts.items():
                    code, details = await _refusal(call)
                    assert code == Denied, (what, other, code, details)
                    assert f"this token belongs to bob; it cannot act as {other}" in details, \
                        (what, details)

            # bob's token may not call anything off the allow-list (real requests for
            # Leave, Deploy, SetSecret: if one got through, it would show below)
            admin_only = [m for m in API_METHODS
                          if f"/{m.containing_service.full_name}/{m.name}" not in USER_METHODS]
            assert {m.name for m in admin_only} >= {"Leave", "Deploy", "SetSecret",
                                                     "RevokeSecret", "ListSecrets"}
            meta = (("authorization", f"Bearer {bob_token}"),)
            async with grpc.aio.insecure_channel(node.api) as raw:
                for method in admin_only:
                    code, details = await _refusal(_call(raw, method, meta))
                    assert code == Denied, (method.name, code, details)
                    assert "the API token of user bob may not call" in details, details
                    assert "api.token" in details, details
            # ... but the read-only node views
            node_stub = taskworker_pb2_grpc.NodeServiceStub(bob_ch)
            assert len((await node_stub.Peers(pb.PeersRequest(), timeout=10)).peers) == 2
            status = json.loads((await node_stub.Status(pb.StatusRequest(), timeout=10)).json)
            assert status["node_id"]

            # bob with an empty user_id pushes as bob and reads his file back; alice cannot,
            # until he names her a reader (a public key through the keyring name is fine)
            his = await bob.Push(pb.PushRequest(file_data=b"bob's notes", k=2, m=1), timeout=60)
            assert (await admin.Stat(pb.StatRequest(file_id=his.cid), timeout=30)).owner \
                == bob_key
            assert (await bob.Get(pb.GetRequest(file_id=his.cid), timeout=30)).file_data \
                == b"bob's notes"
            streamed = await bob.PushStream(iter(_push_stream(
                pb.PushRequest(k=2, m=1, readers=["alice"]), b"for alice too")), timeout=60)
            assert await _code(alice.Get(pb.GetRequest(file_id=his.cid), timeout=30)) == Denied
            assert (await alice.Get(pb.GetRequest(file_id=streamed.cid), timeout=30)).file_data \
                == b"for alice too"
            # alice shares hers with bob (a read grant, as alice): now he reads it
            await alice.Grant(pb.GrantRequest(file_id=mine.cid, grantee="bob", read=True),
                              timeout=30)
            assert (await bob.Get(pb.GetRequest(file_id=mine.cid), timeout=30)).file_data \
                == secret
            # versions as alice (empty user_id): revise, log, sync her own file
            v2 = await alice.Revise(pb.ReviseRequest(file_id=mine.file_id, file_data=b"v2"),
                                    timeout=60)
            log = await alice.Log(pb.LogRequest(file_id=mine.file_id), timeout=30)
            assert v2.version in log.heads
            # the version records (ids, vectors, CIDs) are no secret from a mesh member: bob's
            # Log lists them as any node's would; the content stays sealed to its readers
            theirs = await bob.Log(pb.LogRequest(file_id=mine.file_id), timeout=30)
            assert list(theirs.heads) == list(log.heads)
            # now that versions exist Log and Synchronous need no key, yet naming alice is
            # still refused (the interceptor checks a unary request's user_id itself)
            for call in (bob.Log(pb.LogRequest(file_id=mine.file_id, user_id="alice"),
                                 timeout=30),
                         bob.Synchronous(pb.SynchronousRequest(file_id=mine.file_id,
                                                               user_id="alice"), timeout=30)):
                assert await _code(call) == Denied
            assert await _code(bob.Revise(pb.ReviseRequest(
                file_id=mine.file_id, file_data=b"bob was here"), timeout=30)) == Denied

            # the admin token still acts as anyone, and names users as before
            assert (await admin.Get(pb.GetRequest(file_id=mine.file_id, user_id="alice"),
                                    timeout=30)).file_data == b"v2"
            assert (await admin.Get(pb.GetRequest(file_id=his.cid, user_id="bob"),
                                    timeout=30)).file_data == b"bob's notes"
            await admin.Push(pb.PushRequest(file_data=b"default's", k=2, m=1), timeout=60)
            assert (node.data_dir / "users" / "default.key").exists()

            # a rotated token stops working at once; the new one works
            rotated = run_cli("user", "token", "alice", "--rotate", "--data-dir",
                              str(node.data_dir))
            assert rotated.returncode == 0, rotated.stderr
            new_token = rotated.stdout.decode().strip()
            assert new_token != alice_token and stat.S_IMODE(
                user_token_file(node.data_dir, "alice").stat().st_mode) == 0o600
            assert await _code(alice.Get(pb.GetRequest(file_id=mine.cid), timeout=30)) \
                == grpc.StatusCode.UNAUTHENTICATED
            async with aio_channel(node.api, new_token) as renewed:
                assert (await Stub(renewed).Get(pb.GetRequest(file_id=mine.cid),
                                                timeout=30)).file_data == secret
            # ... and one user's token is nothing on another node
            async with aio_channel(cluster.nodes[1].api, bob_token) as elsewhere:
                assert await _code(taskworker_pb2_grpc.NodeServiceStub(elsewhere).Peers(
                    pb.PeersRequest(), timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
        finally:
            await alice_ch.close()
            await bob_ch.close()

        # nothing bob's refused admin calls asked for happened
        assert node.alive
        listing = json.loads(run_cli("secret", "list", "--json", api=node.api).stdout)
        assert listing == [], listing
        functions = json.loads(run_cli("functions", "f", "--json", api=node.api).stdout)
        assert functions["providers"] == [], functions
        # a valid user token is not a failed authentication: of all the refusals above only
        # the rotated token counts (api_auth.refused, taskworker/api_refusals.py)
        status = json.loads(run_cli("status", "--json", api=node.api).stdout)
        assert status["api_auth"]["refused"] == {"missing": 0, "malformed": 0, "wrong": 1}
        # the admin token still leaves
        assert run_cli("leave", api=cluster.nodes[2].api).returncode == 0


async def test_cli_with_a_user_token(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 3) as cluster:
        node = cluster.nodes[0]
        _make_user(node, "alice")
        _, bob_token = _make_user(node, "bob")
        nowhere = {RUNTIME_ENV: str(tmp_path / "no-runtime-files")}
        as_bob = {**nowhere, TOKEN_ENV: bob_token}
        alice_file = user_token_file(node.data_dir, "alice")
        src = tmp_path / "notes.txt"
        src.write_bytes(b"bob's private notes")

        put = run_cli("put", str(src), "--k", "2", "--m", "1", api=node.api, env=as_bob)
        assert put.returncode == 0, put.stderr
        cid = put.stdout.decode().strip()
        got = run_cli("get", cid, "-q", api=node.api, env=as_bob)
        assert got.returncode == 0 and got.stdout == b"bob's private notes", got.stderr

        def one_line_error(out: Any) -> str:
            err: str = out.stderr.decode()
            assert out.returncode == 1 and err.count("\n") == 1, err
            assert "Traceback" not in err
            return err

        err = one_line_error(run_cli("get", cid, "--api-token-file", str(alice_file),
                                     api=node.api, env=nowhere))
        assert "PERMISSION_DENIED" in err
        err = one_line_error(run_cli("put", str(src), "--user", "alice", api=node.api,
                                     env=as_bob))
        assert "this token belongs to bob; it cannot act as alice" in err
        assert "PERMISSION_DENIED" in err
        err = one_line_error(run_cli("secret", "set", "planted", "--for", "f", api=node.api,
                                     env=as_bob, input_data=b"value"))
        assert "the API token of user bob may not call" in err and "PERMISSION_DENIED" in err
        err = one_line_error(run_cli("leave", api=node.api, env=as_bob))
        assert "may not call taskworker.NodeService/Leave" in err
        status = run_cli("status", "--json", api=node.api, env=as_bob)
        assert status.returncode == 0, status.stderr
        assert node.alive

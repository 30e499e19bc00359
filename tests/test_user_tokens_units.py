"""Unit tests of per-user API tokens: the token files (taskworker/api_token.py), the user
methods' allow-list (taskworker/api_auth.py) and the principal plumbing
(taskworker/api_principal.py, mesh/principal.py, storage.keyring.Keyring.user).
The same attacks on real nodes: tests/system/test_user_tokens.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesh.errors import InvalidArgumentError, PermissionDeniedError
from mesh.principal import API_USER, acting_user
from proto import compute_pb2, proxy_pb2, taskworker_pb2
from storage.keyring import DEFAULT_USER, Keyring
from taskworker import api_auth
from taskworker.api_auth import USER_METHODS, ApiTokenInterceptor, aio_channel
from taskworker.api_token import (
    TokenError,
    UserTokens,
    load_or_create_user_token,
    rotate_user_token,
    user_token_file,
)

API_PATHS = {f"/{s.full_name}/{m.name}"
             for proto in (taskworker_pb2, compute_pb2, proxy_pb2)
             for s in proto.DESCRIPTOR.services_by_name.values() for m in s.methods}
# Every local-API method a user token may NOT call. A new method fails
# test_every_api_method_is_classified until it is put here or in USER_METHODS.
ADMIN_ONLY = {
    "/taskworker.NodeService/Leave",
    "/taskworker.RPCService/CallFunction",
    "/taskworker.DNSService/ResolveDomain",
    "/twmesh.compute.ComputeService/Deploy",
    "/twmesh.compute.ComputeService/Functions",
    "/twmesh.compute.ComputeService/Name",
    "/twmesh.proxy.ProxyService/SetSecret",
    "/twmesh.proxy.ProxyService/ListSecrets",
    "/twmesh.proxy.ProxyService/RevokeSecret",
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the allow-list ----------------------------------------------------------------------

def test_every_api_method_is_classified() -> None:
    assert USER_METHODS <= API_PATHS, USER_METHODS - API_PATHS      # no stale names
    assert ADMIN_ONLY <= API_PATHS, ADMIN_ONLY - API_PATHS
    assert not USER_METHODS & ADMIN_ONLY
    assert USER_METHODS | ADMIN_ONLY == API_PATHS, API_PATHS - USER_METHODS - ADMIN_ONLY
    files = {p for p in API_PATHS if p.startswith("/taskworker.FileService/")}
    assert files <= USER_METHODS and len(files) == 9
    assert {"/taskworker.NodeService/Status", "/taskworker.NodeService/Peers"} <= USER_METHODS


# --- the principal -----------------------------------------------------------------------

def _as(principal: str | None, func: Any, *args: Any) -> Any:
    ctx = contextvars.copy_context()
    ctx.run(API_USER.set, principal)
    return ctx.run(func, *args)


def test_acting_user() -> None:
    assert API_USER.get() is None
    for user_id in ("", "default", "alice", "bob"):
        assert acting_user(user_id) == user_id                       # admin / no API call
    assert _as("alice", acting_user, "") == "alice"
    assert _as("alice", acting_user, "alice") == "alice"
    for other in ("bob", "default", "Alice", "alice ", "x" * 500, "\x00bob"):
        with pytest.raises(PermissionDeniedError) as info:
            _as("alice", acting_user, other)
        assert str(info.value).startswith("this token belongs to alice; it cannot act as "), \
            other
        assert len(str(info.value)) < 250
    with pytest.raises(PermissionDeniedError, match="belongs to alice; it cannot act as bob "):
        _as("alice", acting_user, "bob")


def test_keyring_user_is_the_choke_point(tmp_path: Path) -> None:
    ring = Keyring(tmp_path)
    alice, bob = ring.create("alice"), ring.create("bob")
    assert _as("alice", ring.user, "") == alice
    assert _as("alice", ring.user, "alice") == alice
    assert _as("bob", ring.user, "") == bob
    for principal, other in (("alice", "bob"), ("bob", "alice"), ("bob", DEFAULT_USER)):
        with pytest.raises(PermissionDeniedError):
            _as(principal, ring.user, other)
    assert not (tmp_path / "users" / f"{DEFAULT_USER}.key").exists()   # bob made no default
    # the admin (no principal) is unchanged: anyone, empty = default (auto-created)
    assert ring.user("bob") == bob and ring.user("alice") == alice
    assert ring.user("") == ring.get(DEFAULT_USER)
    # public keys (PushRequest.readers, Grant's grantee) stay readable under a user token
    assert _as("bob", ring.public_key, "alice") == bytes(alice.verify_key)


# --- token files -------------------------------------------------------------------------

def test_user_token_files_private_made_once_rotated(tmp_path: Path, open_umask: None) -> None:
    token = load_or_create_user_token(tmp_path, "alice")
    path = user_token_file(tmp_path, "alice")
    assert path == tmp_path / "users" / "alice.token"
    assert len(token) >= 43 and _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert load_or_create_user_token(tmp_path, "alice") == token
    assert load_or_create_user_token(tmp_path, "bob") != token
    new = rotate_user_token(tmp_path, "alice")
    assert new != token and _mode(path) == 0o600
    assert load_or_create_user_token(tmp_path, "alice") == new
    assert sorted(p.name for p in path.parent.iterdir()) == ["alice.token", "bob.token"]
    for bad in ("../api", ".hidden", "", "a/b", "x" * 65):
        with pytest.raises(TokenError, match="invalid user name"):
            user_token_file(tmp_path, bad)


def test_user_tokens_follow_the_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    users = UserTokens(tmp_path)
    assert users.match(b"anything-at-all-0123") is None             # no users dir yet
    alice = load_or_create_user_token(tmp_path, "alice").encode()
    bob = load_or_create_user_token(tmp_path, "bob").encode()
    assert users.match(alice) == "alice" and users.match(bob) == "bob"
    assert users.match(alice[:-1]) is None and users.match(alice + b"x") is None
    assert users.match(b"") is None
    new = rotate_user_token(tmp_path, "alice").encode()
    assert users.match(alice) is None and users.match(new) == "alice"  # rotation: at once
    (tmp_path / "users" / ".alice.token.123.tmp").write_text(alice.decode())
    (tmp_path / "users" / "carol.key").write_text("not a token")
    assert users.names() == ["alice", "bob"]
    bob_file = user_token_file(tmp_path, "bob")
    bob_file.chmod(0o640)                                            # unsafe: ignored
    with caplog.at_level(logging.WARNING, logger="tw-mesh"):
        assert users.match(bob) is None
    assert "ignoring user token file" in caplog.text and "chmod 600" in caplog.text
    bob_file.chmod(0o600)
    assert users.match(bob) == "bob"
    bob_file.unlink()
    assert users.match(bob) is None and users.names() == ["alice"]
    os.symlink(user_token_file(tmp_path, "alice"), bob_file)        # a symlink is refused
    assert users.match(new) == "alice" and users.names() == ["alice"]


def test_user_cli_makes_prints_and_rotates_tokens(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from taskworker.cli import main

    data = ["--data-dir", str(tmp_path)]
    assert main(["user", "create", "alice", *data]) == 0
    out = capsys.readouterr()
    assert len(out.out.split()) == 2 and "alice.token" in out.err
    path = user_token_file(tmp_path, "alice")
    assert _mode(path) == 0o600
    assert main(["user", "token", "alice", *data]) == 0
    token = capsys.readouterr().out.strip()
    assert token == path.read_text().strip()
    assert main(["user", "token", "alice", "--rotate", *data]) == 0
    out = capsys.readouterr()
    assert out.out.strip() != token and out.out.strip() == path.read_text().strip()
    assert "no longer works" in out.err
    assert main(["user", "token", "nobody", *data]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no user 'nobody'" in err
    assert not user_token_file(tmp_path, "nobody").exists()
    # a user made before tokens existed gets one on first `user token`
    Keyring(tmp_path).create("old")
    assert main(["user", "list", *data]) == 0
    assert "(no token)" in capsys.readouterr().out
    assert main(["user", "token", "old", "--json", *data]) == 0
    assert '"token_file"' in capsys.readouterr().out and user_token_file(tmp_path, "old").exists()


def test_keyring_create_and_name_rules_agree_with_token_files(tmp_path: Path) -> None:
    ring = Keyring(tmp_path)
    for name in ("a", "A_b.c-d", "0" * 64):
        ring.create(name)
        load_or_create_user_token(tmp_path, name)
    for bad in (".a", "-a", "a/b", "0" * 65):
        with pytest.raises(InvalidArgumentError):
            ring.create(bad)
        with pytest.raises(TokenError):
            user_token_file(tmp_path, bad)


# --- the interceptor on a real grpc.aio server ---------------------------------------------

_KINDS = ("UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream")


async def _who(tag: str) -> bytes:
    """What the handler sees, also from a task it starts and after an await."""
    await asyncio.sleep(0)
    inner = await asyncio.create_task(asyncio.sleep(0, API_USER.get()))
    return f"{tag}:{API_USER.get()}:{inner}".encode()


class _Who(grpc.GenericRpcHandler):
    """/t.S/<Kind> for each kind plus /t.S/Admin: each answers with the principal it saw."""

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        kind = details.method.rsplit("/", 1)[-1]

        async def uu(request: bytes, context: Any) -> bytes:
            return await _who("uu")

        async def us(request: bytes, context: Any) -> AsyncIterator[bytes]:
            yield await _who("us1")
            yield await _who("us2")

        async def su(requests: AsyncIterator[bytes], context: Any) -> bytes:
            async for _ in requests:
                pass
            return await _who("su")

        async def ss(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
            async for _ in requests:
                yield await _who("ss")

        return {"UnaryUnary": grpc.unary_unary_rpc_method_handler(uu),
                "Admin": grpc.unary_unary_rpc_method_handler(uu),
                "UnaryStream": grpc.unary_stream_rpc_method_handler(us),
                "StreamUnary": grpc.stream_unary_rpc_method_handler(su),
                "StreamStream": grpc.stream_stream_rpc_method_handler(ss)}.get(kind)


async def _call(channel: grpc.aio.Channel, kind: str) -> list[bytes]:
    path = f"/t.S/{kind}"
    if kind in ("UnaryUnary", "Admin"):
        return [await channel.unary_unary(path)(b"x", timeout=5)]
    if kind == "UnaryStream":
        return [r async for r in channel.unary_stream(path)(b"x", timeout=5)]
    if kind == "StreamUnary":
        return [await channel.stream_unary(path)(iter([b"x", b"y"]), timeout=5)]
    return [r async for r in channel.stream_stream(path)(iter([b"x", b"y"]), timeout=5)]


async def test_interceptor_runs_each_kind_of_handler_as_the_tokens_user(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_auth, "USER_METHODS",
                        frozenset(f"/t.S/{kind}" for kind in _KINDS))
    admin = "the-node-admin-token-0123456789"
    alice = load_or_create_user_token(tmp_path, "alice")
    bob = load_or_create_user_token(tmp_path, "bob")
    server = grpc.aio.server(interceptors=[
        ApiTokenInterceptor(admin, "DATA/api.token", UserTokens(tmp_path))])
    server.add_generic_rpc_handlers((_Who(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    expected = {"UnaryUnary": ["uu"], "UnaryStream": ["us1", "us2"], "StreamUnary": ["su"],
                "StreamStream": ["ss", "ss"]}
    try:
        async with aio_channel(target, admin) as as_admin, \
                aio_channel(target, alice) as as_alice, aio_channel(target, bob) as as_bob:
            for _ in range(2):          # the second round uses the cached wrapped handlers
                for kind, tags in expected.items():
                    for channel, who in ((as_admin, None), (as_alice, "alice"),
                                         (as_bob, "bob")):
                        got = await _call(channel, kind)
                        assert got == [f"{t}:{who}:{who}".encode() for t in tags], (kind, who)
            # interleaved streams of two users on one server keep their principals apart
            both = await asyncio.gather(*[_call(c, k) for k in _KINDS
                                          for c in (as_alice, as_bob)] * 3)
            for got in both:
                assert len({g.split(b":", 1)[1] for g in got}) == 1
            # off the allow-list: PERMISSION_DENIED for a user, fine for the admin
            assert await _call(as_admin, "Admin") == [b"uu:None:None"]
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _call(as_bob, "Admin")
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "user bob may not call t.S/Admin" in (info.value.details() or "")
            assert "DATA/api.token" in (info.value.details() or "")
            # a rotated token stops at once; the new one works
            new = rotate_user_token(tmp_path, "alice")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _call(as_alice, "UnaryUnary")
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            async with aio_channel(target, new) as again:
                assert await _call(again, "UnaryUnary") == [b"uu:alice:alice"]
    finally:
        await server.stop(0)
    assert API_USER.get() is None

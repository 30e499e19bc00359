"""Unit tests of taskworker/api_token.py and api_auth.py: token files, runtime files, lookup order, parsing."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from taskworker import api_token
from taskworker.api_auth import ApiTokenInterceptor, aio_channel, sync_channel
from taskworker.api_token import (
    RUNTIME_ENV,
    TOKEN_ENV,
    TOKEN_FILE,
    TokenError,
    find_token,
    load_or_create_token,
    remove_runtime_file,
    runtime_dir,
    runtime_file,
    write_runtime_file,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_token_is_created_private_once_and_kept(tmp_path: Path, open_umask: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real_link = os.link

    def link(src: Any, dst: Any) -> None:       # the file is private before it has its name
        seen.append(_mode(Path(src)))
        real_link(src, dst)

    monkeypatch.setattr(api_token.os, "link", link)
    data = tmp_path / "data"
    token = load_or_create_token(data)
    assert seen == [0o600]
    assert len(token) >= 43 and _mode(data / TOKEN_FILE) == 0o600 and _mode(data) == 0o700
    assert load_or_create_token(data) == token
    assert sorted(p.name for p in data.iterdir()) == [TOKEN_FILE]     # no temporary left
    other = load_or_create_token(tmp_path / "other")
    assert other != token


def test_an_existing_token_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / TOKEN_FILE
    api_token._write_private(path, "first-token-0123456789", replace=False)
    api_token._write_private(path, "second-token-0123456789", replace=False)   # lost the race
    assert load_or_create_token(tmp_path) == "first-token-0123456789"


def test_a_token_file_others_can_read_or_that_is_bad_is_refused(tmp_path: Path) -> None:
    load_or_create_token(tmp_path)
    path = tmp_path / TOKEN_FILE
    path.chmod(0o644)
    with pytest.raises(TokenError, match="chmod 600"):
        load_or_create_token(tmp_path)
    path.chmod(0o600)
    path.write_text("short\n")
    with pytest.raises(TokenError, match="not valid"):
        load_or_create_token(tmp_path)
    path.write_text("has spaces in the middle of it\n")
    with pytest.raises(TokenError, match="not valid"):
        load_or_create_token(tmp_path)
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        load_or_create_token(tmp_path)


def test_runtime_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert runtime_dir({}) == tmp_path / "home" / ".tw-mesh" / "run"
    assert runtime_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == Path("/run/user/7/tw-mesh")
    assert runtime_dir({"XDG_RUNTIME_DIR": "/run/user/7", RUNTIME_ENV: "/x"}) == Path("/x")
    assert runtime_file(50052, {RUNTIME_ENV: "/x"}) == Path("/x/api-50052.token")


def test_runtime_file_is_private_replaced_and_removed_only_if_ours(
        tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "home" / "run"
    monkeypatch.setenv(RUNTIME_ENV, str(run))
    path = write_runtime_file(4242, "token-one-0123456789")
    assert path == run / "api-4242.token"
    assert _mode(run) == 0o700 and _mode(path) == 0o600 and _mode(run.parent) == 0o700
    assert write_runtime_file(4242, "token-two-0123456789") == path     # a stale one: replaced
    remove_runtime_file(path, "token-one-0123456789")                   # not ours any more
    assert path.read_text().strip() == "token-two-0123456789"
    remove_runtime_file(path, "token-two-0123456789")
    assert not path.exists()
    run.chmod(0o755)                                                    # tightened again
    write_runtime_file(4243, "token-one-0123456789")
    assert _mode(run) == 0o700


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUNTIME_ENV, str(tmp_path / "run"))
    env = {RUNTIME_ENV: str(tmp_path / "run")}
    assert find_token(7, None, env)[0] is None
    assert str(tmp_path / "run" / "api-7.token") in find_token(7, None, env)[1]
    write_runtime_file(7, "from-runtime-file-0123")
    assert find_token(7, None, env) == ("from-runtime-file-0123",
                                        str(tmp_path / "run" / "api-7.token"))
    env[TOKEN_ENV] = " from-environment-0123 "
    assert find_token(7, None, env) == ("from-environment-0123", f"${TOKEN_ENV}")
    given = tmp_path / "given"
    given.write_text("from-the-flag-0123456\n")
    assert find_token(7, given, env) == ("from-the-flag-0123456", f"--api-token-file {given}")
    with pytest.raises(TokenError, match="cannot read"):
        find_token(7, tmp_path / "absent", env)
    env[TOKEN_ENV] = "bad"
    with pytest.raises(TokenError, match="not valid"):
        find_token(7, None, env)


def test_authorization_header_parsing() -> None:
    check = ApiTokenInterceptor("right-token-0123456789", "somewhere")._check
    assert check(()) is None and check(None) is None
    assert check((("x-other", "v"),)) is None
    assert check((("authorization", "Bearer right-token-0123456789"),)) is True
    assert check((("authorization", "bearer right-token-0123456789"),)) is True
    assert check((("authorization", "  Bearer   right-token-0123456789 "),)) is True
    for bad in ("Bearer right-token-012345678", "Bearer right-token-0123456789x", "Bearer",
                "right-token-0123456789", "Basic right-token-0123456789",
                "Bearer rïght-token-0123456789"):
        assert check((("authorization", bad),)) is False, bad
    assert check((("authorization", b"Bearer right-token-0123456789"),)) is False


# --- the client helpers against a protected server, every kind of call ---------------------

_KINDS = ("UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream")


class _Echo(grpc.GenericRpcHandler):
    """/t.S/<Kind> for each kind, and a stand-in health check; answers b"ok"."""

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        kind = details.method.rsplit("/", 1)[-1]

        async def uu(request: bytes, context: Any) -> bytes:
            return b"ok"

        async def us(request: bytes, context: Any) -> AsyncIterator[bytes]:
            yield b"ok"

        async def su(requests: AsyncIterator[bytes], context: Any) -> bytes:
            async for _ in requests:
                pass
            return b"ok"

        async def ss(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
            async for _ in requests:
                yield b"ok"

        return {"UnaryUnary": grpc.unary_unary_rpc_method_handler(uu),
                "Check": grpc.unary_unary_rpc_method_handler(uu),
                "UnaryStream": grpc.unary_stream_rpc_method_handler(us),
                "StreamUnary": grpc.stream_unary_rpc_method_handler(su),
                "StreamStream": grpc.stream_stream_rpc_method_handler(ss)}.get(kind)


async def _aio_call(channel: grpc.aio.Channel, kind: str) -> list[bytes]:
    path = f"/t.S/{kind}"
    if kind == "UnaryUnary":
        return [await channel.unary_unary(path)(b"x", timeout=5)]
    if kind == "UnaryStream":
        return [r async for r in channel.unary_stream(path)(b"x", timeout=5)]
    if kind == "StreamUnary":
        return [await channel.stream_unary(path)(iter([b"x", b"y"]), timeout=5)]
    return [r async for r in channel.stream_stream(path)(iter([b"x"]), timeout=5)]


def _sync_call(channel: grpc.Channel, kind: str) -> list[bytes]:
    path = f"/t.S/{kind}"
    if kind == "UnaryUnary":
        return [channel.unary_unary(path)(b"x", timeout=5)]
    if kind == "UnaryStream":
        return list(channel.unary_stream(path)(b"x", timeout=5))
    if kind == "StreamUnary":
        return [channel.stream_unary(path)(iter([b"x", b"y"]), timeout=5)]
    return list(channel.stream_stream(path)(iter([b"x"]), timeout=5))


async def test_client_helpers_send_the_token_on_every_kind_of_call() -> None:
    token = "the-right-token-0123456789"
    server = grpc.aio.server(interceptors=[ApiTokenInterceptor(token, "here")])
    server.add_generic_rpc_handlers((_Echo(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    try:
        async with aio_channel(target, token) as good, \
                aio_channel(target, "a-wrong-token-0123456789") as wrong, \
                grpc.aio.insecure_channel(target) as bare:
            for kind in _KINDS:
                assert await _aio_call(good, kind) == [b"ok"], kind
                for channel, words in ((wrong, "wrong API token"), (bare, "requires a token")):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await _aio_call(channel, kind)
                    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, kind
                    assert words in (info.value.details() or "") and "here" in (
                        info.value.details() or "")
            # exempt: health
            assert await bare.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5) == b"ok"

        def sync_side() -> None:
            with sync_channel(target, token) as good, sync_channel(target, None) as bare:
                for kind in _KINDS:
                    assert _sync_call(good, kind) == [b"ok"], kind
                    with pytest.raises(grpc.RpcError) as info:
                        _sync_call(bare, kind)
                    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        await asyncio.to_thread(sync_side)
    finally:
        await server.stop(0)

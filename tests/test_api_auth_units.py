"""Unit tests of taskworker/api_token.py and api_auth.py: token files, runtime files, lookup order, parsing, refused calls."""

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
from taskworker.api_refusals import REFUSAL_DELAY, Reason
from taskworker.api_runtime import (
    find_token,
    read_runtime_file,
    remove_runtime_file,
    runtime_dir,
    runtime_file,
    write_runtime_file,
)
from taskworker.api_token import (
    RUNTIME_ENV,
    TOKEN_ENV,
    TOKEN_FILE,
    TokenError,
    load_or_create_token,
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
    api_token.write_private(path, "first-token-0123456789", replace=False)
    api_token.write_private(path, "second-token-0123456789", replace=False)   # lost the race
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
    assert read_runtime_file(path).token == "token-two-0123456789"
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
    assert check(()) is Reason.MISSING and check(None) is Reason.MISSING
    assert check((("x-other", "v"),)) is Reason.MISSING
    assert check((("authorization", "Bearer right-token-0123456789"),)) is True
    assert check((("authorization", "bearer right-token-0123456789"),)) is True
    assert check((("authorization", "  Bearer   right-token-0123456789 "),)) is True
    for bad in ("Bearer right-token-012345678", "Bearer right-token-0123456789x",
                "Bearer rïght-token-0123456789"):
        assert check((("authorization", bad),)) is Reason.WRONG, bad
    for bad in ("Bearer", "Bearer   ", "right-token-0123456789", "Basic right-token-0123456789"):
        assert check((("authorization", bad),)) is Reason.MALFORMED, bad
    assert check((("authorization", b"Bearer right-token-0123456789"),)) is Reason.MALFORMED


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


# --- refused calls: delayed without holding others up, counted, reported -----------------

async def test_a_refused_call_waits_alone_and_is_counted_by_reason() -> None:
    """A refused call sleeps in its own handler: with an hour's delay, calls with the right
    token still answer at once, on the same connection, while the refused ones wait."""
    token = "the-right-token-0123456789"
    auth = ApiTokenInterceptor(token, "here", delay=3600)
    server = grpc.aio.server(interceptors=[auth])
    server.add_generic_rpc_handlers((_Echo(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    path = "/t.S/UnaryUnary"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(path)
            refused = [call(b"x", metadata=md, timeout=3600) for md in (     # (calls start now)
                (), (("authorization", "Basic x"),), (("authorization", "Bearer guess-0123456789"),),
                (("authorization", "Bearer guess-9876543210"),))]
            good = (("authorization", f"Bearer {token}"),)
            assert await call(b"x", metadata=good, timeout=30) == b"ok"
            while sum(auth.refusals.counts.values()) < len(refused):    # all four arrived
                assert await call(b"x", metadata=good, timeout=30) == b"ok"
            assert not any(pending.done() for pending in refused)
            assert auth.refusals.status() == {"refused": {"missing": 1, "malformed": 1,
                                                          "wrong": 2}}
            for pending in refused:
                pending.cancel()
    finally:
        await server.stop(0)
        auth.close()
    assert 0 < REFUSAL_DELAY <= 1 and ApiTokenInterceptor(token, "here")._delay == REFUSAL_DELAY


async def test_refusals_are_reported_at_most_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    from taskworker.api_refusals import Refusals

    now = [1000.0]
    refusals = Refusals(interval=10.0, clock=lambda: now[0])
    caplog.set_level("WARNING", logger="tw-mesh")

    def reports() -> list[str]:
        return [r.getMessage() for r in caplog.records if "local API: refused" in r.getMessage()]

    refusals.note(Reason.WRONG, "/t.S/A")               # the first: reported at once
    assert len(reports()) == 1 and "refused 1 call(s)" in reports()[0]
    assert "wrong 1" in reports()[0] and "/t.S/A" in reports()[0]
    for reason in (Reason.MISSING, Reason.WRONG, Reason.MALFORMED):
        now[0] += 3.0                                   # within the interval: held back
        refusals.note(reason, "/t.S/B")
    assert len(reports()) == 1
    refusals.report()                                   # what the interval's timer does
    assert len(reports()) == 2
    assert "refused 3 call(s)" in reports()[1] and "missing 1, malformed 1, wrong 1" in reports()[1]
    refusals.report()                                   # nothing new: nothing logged
    assert len(reports()) == 2
    assert refusals.status() == {"refused": {"missing": 1, "malformed": 1, "wrong": 2}}


async def test_the_interval_timer_reports_a_burst_that_stopped(
        caplog: pytest.LogCaptureFixture) -> None:
    from taskworker.api_refusals import Refusals

    refusals = Refusals(interval=0.01, clock=lambda: 5.0)   # the clock stands still
    caplog.set_level("WARNING", logger="tw-mesh")
    refusals.note(Reason.MISSING, "/t.S/A")             # reported at once
    fired = asyncio.Event()
    report = refusals.report

    def timer_report() -> None:
        report()
        fired.set()

    refusals.report = timer_report                      # type: ignore[method-assign]
    for _ in range(3):
        refusals.note(Reason.MISSING, "/t.S/A")
    await asyncio.wait_for(fired.wait(), 60)            # the timer's report, with no new call
    assert sum("local API: refused" in r.getMessage() for r in caplog.records) == 2
    last = [r.getMessage() for r in caplog.records][-1]
    assert "refused 3 call(s)" in last and "missing 3" in last
    refusals.close()

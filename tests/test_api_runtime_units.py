"""Unit tests of taskworker/api_runtime.py: a runtime file is trusted only while the process
that wrote it runs (pid, start time and boot id); a stale one is refused, removed, never used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskworker import api_runtime
from taskworker.api_runtime import (
    Owner,
    find_token,
    identify,
    parse_runtime_file,
    read_runtime_file,
    remove_runtime_file,
    runtime_file,
    this_process,
    write_runtime_file,
)
from taskworker.api_token import RUNTIME_ENV, TOKEN_ENV, TokenError, write_private

TOKEN = "the-nodes-token-0123456789"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv(RUNTIME_ENV, str(tmp_path / "run"))
    return {RUNTIME_ENV: str(tmp_path / "run")}


def _dead_process() -> Owner:
    """The identity a process had while it ran (it has exited and been reaped since)."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    owner = identify(child.pid)
    assert child.stdin is not None
    child.stdin.close()
    child.wait()
    assert owner is not None and owner.start is not None
    return owner


def test_the_file_names_its_writer_and_is_used_while_it_runs(env: dict[str, str]) -> None:
    path = write_runtime_file(7, TOKEN)
    lines = path.read_text().splitlines()
    assert lines[0] == TOKEN                                 # the token line comes first
    me = this_process()
    assert lines[1] == me.line() and me.pid == os.getpid()
    assert me.start is not None and me.boot is not None      # Linux: /proc is there
    assert read_runtime_file(path).owner == me
    assert find_token(7, None, env) == (TOKEN, str(path))


@pytest.mark.parametrize("what", ["dead pid", "start time", "boot id"])
def test_a_stale_file_is_refused_removed_and_its_token_not_returned(
        env: dict[str, str], what: str) -> None:
    me = this_process()
    owner = {"dead pid": _dead_process(),
             "start time": Owner(me.pid, str(int(me.start or 0) + 1), me.boot),   # pid reused
             "boot id": Owner(me.pid, me.start, "another-boot")}[what]           # rebooted
    path = write_runtime_file(7, TOKEN, owner)
    with pytest.raises(TokenError) as info:
        find_token(7, None, env)
    message = str(info.value)
    assert f"(pid {owner.pid}) is no longer running" in message
    assert "port 7 now is not that node and its token was not sent" in message
    assert "removed it" in message and "--api-token-file" in message and TOKEN_ENV in message
    assert not path.exists()
    assert find_token(7, None, env)[0] is None               # gone: nothing found, no error
    # an explicit token still comes first, stale file or not
    write_runtime_file(7, TOKEN, owner)
    assert find_token(7, None, {**env, TOKEN_ENV: "explicit-token-0123456"})[0] \
        == "explicit-token-0123456"


def test_a_zombie_is_not_running(env: dict[str, str]) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        owner = identify(child.pid)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)   # exited, not reaped yet
        assert owner is not None and identify(child.pid) is None
        write_runtime_file(7, TOKEN, owner)
        with pytest.raises(TokenError, match="no longer running"):
            find_token(7, None, env)
    finally:
        child.wait()


def test_a_node_starting_on_the_port_replaces_a_stale_file(env: dict[str, str]) -> None:
    path = write_runtime_file(7, "a-dead-nodes-token-0123", _dead_process())
    assert write_runtime_file(7, TOKEN) == path
    assert read_runtime_file(path) == api_runtime.RuntimeRecord(TOKEN, this_process())
    assert find_token(7, None, env) == (TOKEN, str(path))


def test_removal_is_left_to_the_writer(env: dict[str, str]) -> None:
    """A node's clean stop removes only the file it wrote: not one in another's name."""
    path = write_runtime_file(7, TOKEN, _dead_process())
    remove_runtime_file(path, TOKEN)
    assert path.exists()
    write_runtime_file(7, TOKEN)
    remove_runtime_file(path, TOKEN)
    assert not path.exists()


def test_a_stale_file_replaced_meanwhile_is_not_removed(env: dict[str, str]) -> None:
    path = write_runtime_file(7, TOKEN, _dead_process())
    _, seen = api_runtime.read_private_bytes(path)
    write_runtime_file(7, TOKEN)                             # a new node, just now
    assert not api_runtime._remove_stale(path, seen)
    assert find_token(7, None, env) == (TOKEN, str(path))


def test_a_file_without_an_owner_is_refused_and_kept(env: dict[str, str]) -> None:
    path = runtime_file(7, env)
    path.parent.mkdir(mode=0o700)
    write_private(path, TOKEN, replace=True)                 # as tw-mesh wrote it before
    with pytest.raises(TokenError) as info:
        find_token(7, None, env)
    assert "does not name the process that wrote it" in str(info.value)
    assert "was not sent" in str(info.value) and "--api-token-file" in str(info.value)
    assert path.exists()                                     # its node may still run


def test_parsing_is_tolerant_where_it_can_be() -> None:
    me = this_process()
    raw = f"  {TOKEN} \r\n\r\n{me.line()} later=1\r\nsomething new\n".encode()
    assert parse_runtime_file(raw, "f") == api_runtime.RuntimeRecord(TOKEN, me)
    assert parse_runtime_file(b"%s\nowner pid=12\n" % TOKEN.encode(), "f").owner == Owner(12)
    for bad, words in ((b"", "empty"), (b"short\n", "not valid"), (b"\xff" * 20, "not ASCII"),
                       (b"%s\nowner start=1\n" % TOKEN.encode(), "malformed owner"),
                       (b"%s\nowner pid=0\n" % TOKEN.encode(), "malformed owner"),
                       (b"%s\nowner pid=-1\n" % TOKEN.encode(), "malformed owner")):
        with pytest.raises(TokenError, match=words):
            parse_runtime_file(bad, "f")


def test_without_proc_the_pid_alone_is_checked(monkeypatch: pytest.MonkeyPatch,
                                               env: dict[str, str]) -> None:
    dead = _dead_process()
    monkeypatch.setattr(api_runtime, "_PROC", Path("/nonexistent-proc"))
    assert this_process() == Owner(os.getpid())
    assert identify(dead.pid) is None and identify(0) is None and identify(-1) is None
    path = write_runtime_file(7, TOKEN)
    assert path.read_text().splitlines()[1] == f"owner pid={os.getpid()}"
    assert find_token(7, None, env) == (TOKEN, str(path))
    write_runtime_file(7, TOKEN, Owner(dead.pid))
    with pytest.raises(TokenError, match="no longer running"):
        find_token(7, None, env)

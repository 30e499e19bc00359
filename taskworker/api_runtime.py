"""The runtime files through which clients that know only a node's API port find its token,
and the CLI's lookup order (the token files: taskworker/api_token.py).

A running node writes ``RUNTIME/api-<port>.token`` (mode 0600, in a directory of mode 0700;
``RUNTIME`` is ``$TW_MESH_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/tw-mesh``, else
``~/.tw-mesh/run``), as Jupyter's runtime files, and removes it on a clean stop. Two lines::

    TOKEN
    owner pid=PID start=TICKS boot=BOOT_ID

A node killed with kill -9 leaves its file behind, and a client trusting it would send the
token to whatever listens on that port next, perhaps another uid's process. So the second line
names the process that wrote the file (the node, which holds the port for as long as it runs):
its pid, that process's start time (field 22 of ``/proc/PID/stat``: a recycled pid has another)
and the kernel's boot id (``~/.tw-mesh/run`` survives a reboot; start times do not). A reader
accepts the file only while that very process runs (same pid, start and boot, not a zombie);
otherwise the file is stale: :func:`find_token` removes it and refuses with a TokenError, so
the token is never sent. A file without an owner line (a tw-mesh before this check) is refused
too, but left in place: its node may still run.

Without ``/proc`` (not Linux) the owner line holds the pid only, checked with ``kill(pid, 0)``:
a node that died is still caught, a pid recycled by another process of the same uid is not.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from taskworker.api_token import (
    RUNTIME_ENV,
    TOKEN_ENV,
    TOKEN_FILE,
    TokenError,
    check_token,
    read_private_bytes,
    write_private,
)

_PROC = Path("/proc")
_BOOT_ID = _PROC / "sys" / "kernel" / "random" / "boot_id"
_OWNER = "owner"


@dataclass(frozen=True)
class Owner:
    """One process, told apart from any later one that reuses its pid."""

    pid: int
    start: str | None = None     # field 22 of /proc/PID/stat (clock ticks after boot)
    boot: str | None = None      # /proc/sys/kernel/random/boot_id

    def line(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in (("start", self.start), ("boot", self.boot))
                        if v is not None)
        return f"{_OWNER} pid={self.pid}{extra}"


def _has_proc() -> bool:
    return (_PROC / "self" / "stat").exists()


def identify(pid: int) -> Owner | None:
    """The running process ``pid`` as an :class:`Owner`, or None if none runs (or a zombie)."""
    if pid <= 0:                             # kill() would read 0 and -1 as groups
        return None
    if not _has_proc():
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):   # PermissionError: another uid's
            return None
        return Owner(pid)
    try:
        raw = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:                          # no such process (or one exiting right now)
        return None
    # comm (field 2) is in parentheses and may hold spaces: count fields after the last ")"
    fields = raw[raw.rfind(")") + 1:].split()
    if len(fields) < 20 or fields[0] in ("Z", "X", "x"):    # state (3): dead or a zombie
        return None
    return Owner(pid, fields[19], _boot_id())    # starttime is field 22


def _boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def this_process() -> Owner:
    me = identify(os.getpid())
    return me if me is not None else Owner(os.getpid())


@dataclass(frozen=True)
class RuntimeRecord:
    token: str
    owner: Owner | None                  # None: a file without an owner line


def parse_runtime_file(raw: bytes, where: str) -> RuntimeRecord:
    """The token (first line) and owner (``owner pid=N [start=T] [boot=B]``); other lines and
    unknown keys are ignored, so a later tw-mesh may add some."""
    try:
        lines = [line.strip() for line in raw.decode("ascii").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise TokenError(f"the runtime file {where} is not ASCII") from None
    if not lines:
        raise TokenError(f"the runtime file {where} is empty")
    token = check_token(lines[0], where)
    for line in lines[1:]:
        word, _, rest = line.partition(" ")
        if word != _OWNER:
            continue
        fields = {key: value for key, _, value in (part.partition("=") for part in rest.split())}
        try:
            pid = int(fields["pid"])
            if pid <= 0:
                raise ValueError(pid)
        except (KeyError, ValueError):
            raise TokenError(f"the runtime file {where} has a malformed owner line") from None
        return RuntimeRecord(token, Owner(pid, fields.get("start"), fields.get("boot")))
    return RuntimeRecord(token, None)


def runtime_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where running nodes leave ``api-<port>.token`` for clients of this uid."""
    env = os.environ if env is None else env
    if env.get(RUNTIME_ENV):
        return Path(env[RUNTIME_ENV])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "tw-mesh"
    return Path.home() / ".tw-mesh" / "run"


def runtime_file(port: int, env: Mapping[str, str] | None = None) -> Path:
    return runtime_dir(env) / f"api-{port}.token"


def _private_dir(path: Path) -> None:
    """``path`` exists, is ours, and only we can enter it (0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.mkdir(exist_ok=True, mode=0o700)
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise TokenError(f"{path} is not a directory")
    if info.st_uid != os.geteuid():
        raise TokenError(f"runtime directory {path} belongs to uid {info.st_uid}, not to "
                         f"this process's uid {os.geteuid()} (set {RUNTIME_ENV})")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)


def write_runtime_file(port: int, token: str, owner: Owner | None = None) -> Path:
    """Publish ``token`` for clients of this uid that know only the API port, as long as
    ``owner`` (default: this process, which must be the one holding the port) runs. A file
    some earlier node left there is replaced."""
    path = runtime_file(port)
    _private_dir(path.parent)
    write_private(path, f"{token}\n{(owner or this_process()).line()}", replace=True)
    return path


def read_runtime_file(path: Path) -> RuntimeRecord:
    raw, _ = read_private_bytes(path)
    return parse_runtime_file(raw, str(path))


def remove_runtime_file(path: Path, token: str) -> None:
    """Remove ``path`` if this process wrote it with ``token`` (a later node may own the port
    by now)."""
    try:
        record = read_runtime_file(path)
        if record.token == token and record.owner == this_process():
            path.unlink()
    except (OSError, TokenError):
        pass


def _remove_stale(path: Path, seen: os.stat_result) -> bool:
    """Unlink ``path`` if it is still the file read (a new node may have just replaced it)."""
    try:
        now = os.stat(path, follow_symlinks=False)
        if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
            return False
        path.unlink()
        return True
    except OSError:
        return False


def runtime_token(port: int, path: Path) -> str:
    """The token in ``port``'s runtime file ``path`` if the node that wrote it still runs;
    else a TokenError saying so (a stale file is removed first)."""
    raw, info = read_private_bytes(path)
    record = parse_runtime_file(raw, str(path))
    explicit = (f"pass the node's token explicitly: --api-token-file DATA_DIR/{TOKEN_FILE} or "
                f"${TOKEN_ENV}")
    if record.owner is None:
        raise TokenError(
            f"the runtime file {path} does not name the process that wrote it (an older "
            f"tw-mesh?), so whoever listens on port {port} may not be that node and its token "
            f"was not sent; restart the node (or remove the file if none runs), or {explicit}")
    if identify(record.owner.pid) != record.owner:
        removed = "removed it" if _remove_stale(path, info) else "could not remove it"
        raise TokenError(
            f"the node that wrote {path} (pid {record.owner.pid}) is no longer running, so "
            f"whatever listens on port {port} now is not that node and its token was not sent "
            f"({removed}); start the node again, or {explicit}")
    return record.token


def find_token(port: int, token_file: Path | None = None,
               env: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """(token or None, where it came from / where it was looked for), in the CLI's order:
    ``token_file``, ``$TW_MESH_API_TOKEN``, the runtime file of ``port`` (if its node runs)."""
    env = os.environ if env is None else env
    if token_file is not None:
        try:
            raw = token_file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"cannot read the API token file {token_file}: {exc}") from None
        return check_token(raw, str(token_file)), f"--api-token-file {token_file}"
    if env.get(TOKEN_ENV, "").strip():
        return check_token(env[TOKEN_ENV], f"${TOKEN_ENV}"), f"${TOKEN_ENV}"
    try:
        path = runtime_file(port, env)
    except RuntimeError:                     # no home directory
        return None, f"--api-token-file or ${TOKEN_ENV} (no runtime directory)"
    try:
        return runtime_token(port, path), str(path)
    except FileNotFoundError:
        return None, f"--api-token-file, ${TOKEN_ENV} or {path}"

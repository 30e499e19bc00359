"""The local API's bearer tokens on disk: the node's token file and the users' token files
(the runtime files clients find a running node's token by, and the CLI's lookup order:
taskworker/api_runtime.py; the checks themselves: taskworker/api_auth.py).

Every node has one API token: 32 random bytes (``secrets.token_urlsafe(32)``) kept in
``DATA_DIR/api.token`` (mode 0600, created on first start, kept across restarts).

Each keyring user may also have a *user token* (same form) in ``DATA_DIR/users/NAME.token``
(0600, beside the user's key), made by ``tw-mesh user create NAME`` or ``tw-mesh user token
NAME`` and replaced by ``tw-mesh user token NAME --rotate``. A call with it acts only as that
user and may call only the methods taskworker/api_auth.py allows users; a running node notices
a new, rotated or removed user token file on the next call (:class:`UserTokens`).
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import stat
from pathlib import Path

from mesh.errors import MeshError

TOKEN_FILE = "api.token"
TOKEN_ENV = "TW_MESH_API_TOKEN"
RUNTIME_ENV = "TW_MESH_RUNTIME_DIR"
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")
MIN_TOKEN_LENGTH = 16
USERS_DIR = "users"                  # storage/keyring.py keeps users/NAME.key there
USER_TOKEN_SUFFIX = ".token"
# storage.keyring's user names (taskworker must not need storage to read a token file)
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")

log = logging.getLogger("tw-mesh")


class TokenError(MeshError):
    """A token file, the runtime directory or a runtime file is unusable (mode, owner,
    content), or a runtime file is stale (the node that wrote it is gone)."""


def check_token(token: str, where: str) -> str:
    """``token`` stripped, if it can travel in an HTTP/2 header and is long enough."""
    token = token.strip()
    if len(token) < MIN_TOKEN_LENGTH or not set(token) <= _TOKEN_CHARS:
        raise TokenError(f"the API token in {where} is not valid (want at least "
                         f"{MIN_TOKEN_LENGTH} characters of A-Z a-z 0-9 - . _ ~ + / =)")
    return token


def read_private_bytes(path: Path) -> tuple[bytes, os.stat_result]:
    """The start of ``path`` and its stat; refuses a file others may read or another uid owns."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise TokenError(f"API token file {path} has mode {mode:04o}; it must not be "
                             f"readable by others (fix with: chmod 600 {path})")
        if info.st_uid != os.geteuid():
            raise TokenError(f"API token file {path} belongs to uid {info.st_uid}, not to "
                             f"this process's uid {os.geteuid()}")
        return fh.read(4096), info


def read_private(path: Path) -> str:
    """The token in ``path`` (a private file, see :func:`read_private_bytes`)."""
    raw, _ = read_private_bytes(path)
    try:
        return check_token(raw.decode("ascii"), str(path))
    except UnicodeDecodeError:
        raise TokenError(f"the API token in {path} is not ASCII") from None


def write_private(path: Path, text: str, *, replace: bool) -> None:
    """Write ``text`` (and a newline) to ``path`` mode 0600 without the file ever being readable by others
    or half-written: a private temporary file, then link (only if absent) or rename over."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)        # whatever the umask
            fh.write(text.encode("ascii") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)               # atomic; fails if another start won the race
            except FileExistsError:
                pass
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _load_or_create(path: Path) -> str:
    """The token in ``path``, made first (0600, atomically, never overwritten) if absent."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return read_private(path)
    except FileNotFoundError:
        pass
    write_private(path, secrets.token_urlsafe(32), replace=False)
    return read_private(path)            # whoever won a race to create it


def load_or_create_token(data_dir: Path) -> str:
    """The node's API token from ``DATA_DIR/api.token``, created (mode 0600) if absent."""
    return _load_or_create(data_dir / TOKEN_FILE)


# --- user tokens -------------------------------------------------------------------------

def user_token_file(data_dir: Path, name: str) -> Path:
    """``DATA_DIR/users/NAME.token``: where user ``name``'s API token lives."""
    if not _USER_NAME.fullmatch(name):
        raise TokenError(f"invalid user name {name!r:.80}")
    return data_dir / USERS_DIR / f"{name}{USER_TOKEN_SUFFIX}"


def load_or_create_user_token(data_dir: Path, name: str) -> str:
    """User ``name``'s API token, created (0600, atomically, never overwritten) if absent."""
    return _load_or_create(user_token_file(data_dir, name))


def rotate_user_token(data_dir: Path, name: str) -> str:
    """Replace user ``name``'s API token with a new one (the old one stops working at once)."""
    path = user_token_file(data_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, secrets.token_urlsafe(32), replace=True)
    return read_private(path)


class UserTokens:
    """The user tokens of one node (``DATA_DIR/users/*.token``), as the API interceptor sees
    them: the directory is listed on each lookup and a file re-read only when its inode, size,
    times, mode or owner changed (a rotation renames a new file over the old one: a new
    inode), so a token made, rotated or removed while the node runs counts from the next call. A file that
    is unsafe (readable by others, another owner, a symlink) or malformed is ignored, with a
    warning in the node's log."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / USERS_DIR
        self._files: dict[str, tuple[tuple[int, ...], bytes | None]] = {}

    def _refresh(self) -> None:
        seen: dict[str, tuple[tuple[int, ...], bytes | None]] = {}
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            name = entry.name[:-len(USER_TOKEN_SUFFIX)]
            if not entry.name.endswith(USER_TOKEN_SUFFIX) or not _USER_NAME.fullmatch(name):
                continue                                   # keys, temporaries (".x.tmp")
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
                   info.st_mode, info.st_uid)
            known = self._files.get(name)
            if known is not None and known[0] == key:
                seen[name] = known
                continue
            try:
                token: bytes | None = read_private(Path(entry.path)).encode("ascii")
            except FileNotFoundError:
                continue
            except (OSError, TokenError) as exc:
                log.warning("ignoring user token file %s: %s", entry.path, exc)
                token = None
            seen[name] = (key, token)
        self._files = seen

    def match(self, given: bytes) -> str | None:
        """The user whose token ``given`` is, else None (compared in constant time, each)."""
        self._refresh()
        found: str | None = None
        for name, (_, token) in sorted(self._files.items()):
            if token is not None and hmac.compare_digest(given, token) and found is None:
                found = name
        return found

    def names(self) -> list[str]:
        self._refresh()
        return sorted(name for name, (_, token) in self._files.items() if token is not None)

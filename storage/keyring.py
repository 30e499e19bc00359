"""Users: a local keyring of Ed25519 keys in the node's data dir (``users/NAME.key``, 0600).

``user_id`` in the API is a keyring name. A Push without one uses ``default``, created on
first use; a call made with a user's own API token (``users/NAME.token``,
taskworker/api_token.py) acts only as that user (:meth:`Keyring.user`, mesh/principal.py).
Owners sign manifests and document records with their key; file keys are sealed to their
public key (storage/crypto converts Ed25519 to X25519).
"""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

import nacl.signing

from mesh.errors import InvalidArgumentError, MeshError, NotFoundError
from mesh.principal import acting_user

DEFAULT_USER = "default"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_MAGIC = b"tw-mesh-user-ed25519-v1\n"


class KeyringError(MeshError):
    """A user key file is corrupt or readable by others."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"invalid user name {name!r:.80}: use 1-64 of A-Z a-z 0-9 _ . - (not starting with . or -)")
    return name


class Keyring:
    """The users of one node; keys are read from disk once and cached."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir) / "users"
        self._cache: dict[str, nacl.signing.SigningKey] = {}
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.key"

    def create(self, name: str) -> nacl.signing.SigningKey:
        """Create a user; InvalidArgumentError if it exists already."""
        path = self._path(name)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = nacl.signing.SigningKey.generate()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise InvalidArgumentError(f"user {name!r} already exists") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(_MAGIC + bytes(key).hex().encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        with self._lock:
            self._cache[name] = key
        return key

    def get(self, name: str) -> nacl.signing.SigningKey:
        """The user's signing key; NotFoundError if there is no such user."""
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None:
            return cached
        path = self._path(name)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            raw = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no user {name!r} in this node's keyring "
                                f"(create it with `tw-mesh user create {name}`)") from None
        if mode & 0o077:
            raise KeyringError(f"user key {path} has mode {mode:04o}; run chmod 600 {path}")
        try:
            if not raw.startswith(_MAGIC):
                raise ValueError("missing header")
            seed = bytes.fromhex(raw[len(_MAGIC):].decode("ascii").strip())
            key = nacl.signing.SigningKey(seed)
        except (ValueError, UnicodeDecodeError, TypeError) as exc:
            raise KeyringError(f"user key {path} is corrupt: {exc}") from exc
        with self._lock:
            self._cache[name] = key
        return key

    def get_or_create(self, name: str) -> nacl.signing.SigningKey:
        try:
            return self.get(name)
        except NotFoundError:
            try:
                return self.create(name)
            except InvalidArgumentError:        # raced with another creator
                return self.get(name)

    def user(self, name: str) -> nacl.signing.SigningKey:
        """Key for an API user_id: empty means the default user (auto-created).

        Inside a local-API call made with a user token (mesh/principal.py) the name must be
        that user's or empty (which then means that user); another is PermissionDeniedError.
        """
        name = acting_user(name)
        if not name or name == DEFAULT_USER:
            return self.get_or_create(DEFAULT_USER)
        return self.get(name)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.key") if _NAME.fullmatch(p.stem))

    def public_key(self, name: str) -> bytes:
        return bytes(self.get(name).verify_key)

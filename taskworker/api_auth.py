"""Bearer-token authentication of the node's local gRPC API.

Every node has one API token: 32 random bytes (``secrets.token_urlsafe(32)``) kept in
``DATA_DIR/api.token`` (mode 0600, created on first start, kept across restarts). Every local-API
call must carry the metadata ``authorization: Bearer <token>``; the standard health check
(``grpc.health.v1.Health``) and server reflection answer without it. A call without the token, or
with another one, is answered UNAUTHENTICATED with a message saying where the token lives.

So that a client which only knows the API address finds the token (as Jupyter's runtime files
do), a running node also writes a copy to its *runtime file*, ``RUNTIME/api-<port>.token``
(mode 0600, in a directory of mode 0700), and removes it on a clean stop. ``RUNTIME`` is
``$TW_MESH_RUNTIME_DIR`` if set, else ``$XDG_RUNTIME_DIR/tw-mesh``, else ``~/.tw-mesh/run``.

The CLI looks for a token in this order: ``--api-token-file FILE``, ``$TW_MESH_API_TOKEN``,
then the runtime file for the ``--api`` port (:func:`find_token`). ``TaskWorker`` reads its
embedded node's token directly. grpcurl: ``-H "authorization: Bearer $(cat DATA_DIR/api.token)"``.

What this does not stop: a process of the same uid (or root) can read the token files, and
the token stands for every user in the node's keyring (there are no per-user tokens).
"""

from __future__ import annotations

import collections
import hmac
import logging
import os
import secrets
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc

from mesh.errors import MeshError

log = logging.getLogger("tw-mesh")

TOKEN_FILE = "api.token"
TOKEN_ENV = "TW_MESH_API_TOKEN"
RUNTIME_ENV = "TW_MESH_RUNTIME_DIR"
HEADER = "authorization"
# Methods under these prefixes answer without a token (they reveal no user data).
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                   "/grpc.reflection.v1.ServerReflection/")
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")
MIN_TOKEN_LENGTH = 16

Context = grpc.aio.ServicerContext[Any, Any]
Handler = Any   # grpc.RpcMethodHandler[Any, Any]


class TokenError(MeshError):
    """A token file or the runtime directory is unusable (mode, owner, content)."""


# --- files -------------------------------------------------------------------------------

def check_token(token: str, where: str) -> str:
    """``token`` stripped, if it can travel in an HTTP/2 header and is long enough."""
    token = token.strip()
    if len(token) < MIN_TOKEN_LENGTH or not set(token) <= _TOKEN_CHARS:
        raise TokenError(f"the API token in {where} is not valid (want at least "
                         f"{MIN_TOKEN_LENGTH} characters of A-Z a-z 0-9 - . _ ~ + / =)")
    return token


def _read_private(path: Path) -> str:
    """The token in ``path``; refuses a file others may read or that another uid owns."""
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
        raw = fh.read(4096)
    try:
        return check_token(raw.decode("ascii"), str(path))
    except UnicodeDecodeError:
        raise TokenError(f"the API token in {path} is not ASCII") from None


def _write_private(path: Path, token: str, *, replace: bool) -> None:
    """Write ``token`` to ``path`` mode 0600 without the file ever being readable by others
    or half-written: a private temporary file, then link (only if absent) or rename over."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)        # whatever the umask
            fh.write(token.encode("ascii") + b"\n")
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


def load_or_create_token(data_dir: Path) -> str:
    """The node's API token from ``DATA_DIR/api.token``, created (mode 0600) if absent."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / TOKEN_FILE
    try:
        return _read_private(path)
    except FileNotFoundError:
        pass
    _write_private(path, secrets.token_urlsafe(32), replace=False)
    return _read_private(path)


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


def write_runtime_file(port: int, token: str) -> Path:
    """Publish ``token`` for clients of this uid that know only the API port."""
    path = runtime_file(port)
    _private_dir(path.parent)
    _write_private(path, token, replace=True)
    return path


def remove_runtime_file(path: Path, token: str) -> None:
    """Remove ``path`` if it still holds ``token`` (a later node may own the port by now)."""
    try:
        if _read_private(path) == token:
            path.unlink()
    except (OSError, TokenError):
        pass


def find_token(port: int, token_file: Path | None = None,
               env: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """(token or None, where it came from / where it was looked for), in the CLI's order:
    ``token_file``, ``$TW_MESH_API_TOKEN``, the runtime file of ``port``."""
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
        return _read_private(path), str(path)
    except FileNotFoundError:
        return None, f"--api-token-file, ${TOKEN_ENV} or {path}"


# --- server side -------------------------------------------------------------------------

def _deny_handlers(message: str) -> dict[str, Handler]:
    async def unary_unary(request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield None                                          # pragma: no cover

    async def stream_unary(requests: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def stream_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield None                                          # pragma: no cover

    return {"uu": grpc.unary_unary_rpc_method_handler(unary_unary),
            "us": grpc.unary_stream_rpc_method_handler(unary_stream),
            "su": grpc.stream_unary_rpc_method_handler(stream_unary),
            "ss": grpc.stream_stream_rpc_method_handler(stream_stream)}


def _kind(handler: Handler) -> str:
    if handler is None or handler.unary_unary is not None:
        return "uu"
    if handler.unary_stream is not None:
        return "us"
    return "su" if handler.stream_unary is not None else "ss"


class ApiTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Requires ``authorization: Bearer <token>`` on every method but health and reflection."""

    def __init__(self, token: str, where: str) -> None:
        self._token = token.encode("ascii")
        self._missing: dict[str, Handler] = {}
        self._wrong: dict[str, Handler] = {}
        self.set_where(where)

    def set_where(self, where: str) -> None:
        """Say in refusals where the token can be read (``where``: file paths)."""
        how = (f"send the metadata '{HEADER}: Bearer TOKEN'; the token is in {where} "
               f"(tw-mesh finds it itself; or pass --api-token-file / set {TOKEN_ENV})")
        self._missing = _deny_handlers(f"this node's API requires a token: {how}")
        self._wrong = _deny_handlers(f"wrong API token for this node: {how}")

    def _check(self, metadata: Any) -> bool | None:
        """True: the right token; False: another one; None: none at all."""
        for key, value in metadata or ():
            if key != HEADER:
                continue
            if isinstance(value, bytes):
                return False
            scheme, _, given = value.strip().partition(" ")
            if scheme.lower() != "bearer":
                return False
            return hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._token)
        return None

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
            handler_call_details: grpc.HandlerCallDetails) -> Handler:
        method = handler_call_details.method
        if method.startswith(EXEMPT_PREFIXES):
            return await continuation(handler_call_details)
        verdict = self._check(handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        if verdict:
            return handler
        refusals = self._missing if verdict is None else self._wrong
        return refusals[_kind(handler)]


# --- client side -------------------------------------------------------------------------

def bearer(token: str) -> tuple[str, str]:
    return (HEADER, f"Bearer {token}")


class _SyncDetails(collections.namedtuple(
        "_SyncDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                         "compression")), grpc.ClientCallDetails):
    pass


# (grpc-stubs' interceptor generics are not subscriptable at runtime: bases left bare)
class BearerToken(grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg,misc]
                  grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
                  grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
                  grpc.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    """Adds the token to every call of a synchronous channel (``grpc.intercept_channel``)."""

    def __init__(self, token: str) -> None:
        self._header = bearer(token)

    def _details(self, details: Any) -> _SyncDetails:
        return _SyncDetails(details.method, details.timeout,
                            [*(details.metadata or ()), self._header], details.credentials,
                            getattr(details, "wait_for_ready", None),
                            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any,
                               request_iterator: Iterator[Any]) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, details: Any,
                                request_iterator: Iterator[Any]) -> Any:
        return continuation(self._details(details), request_iterator)


class _AioBearer:
    def __init__(self, token: str) -> None:
        self._header = bearer(token)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._header)
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                          details.credentials, details.wait_for_ready)


# grpc.aio files an interceptor under the FIRST of the four kinds it is an instance of
# (grpc/aio/_channel.py), so each kind needs an object of its own.
class _AioUnaryUnary(_AioBearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg,misc]
    async def intercept_unary_unary(self, continuation: Any,
                                    client_call_details: grpc.aio.ClientCallDetails,
                                    request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _AioUnaryStream(_AioBearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg,misc]
    async def intercept_unary_stream(self, continuation: Any,
                                     client_call_details: grpc.aio.ClientCallDetails,
                                     request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _AioStreamUnary(_AioBearer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg,misc]
    async def intercept_stream_unary(self, continuation: Any,
                                     client_call_details: grpc.aio.ClientCallDetails,
                                     request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _AioStreamStream(_AioBearer, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg,misc]
    async def intercept_stream_stream(self, continuation: Any,
                                      client_call_details: grpc.aio.ClientCallDetails,
                                      request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def aio_interceptors(token: str) -> list[Any]:
    """Client interceptors that add ``token`` to every kind of call of a grpc.aio channel."""
    return [kind(token) for kind in (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary,
                                     _AioStreamStream)]


def aio_channel(target: str, token: str,
                options: list[tuple[str, Any]] | None = None) -> grpc.aio.Channel:
    """A grpc.aio channel to a node's local API that sends ``token`` on every call."""
    return grpc.aio.insecure_channel(target, options=options,
                                     interceptors=aio_interceptors(token))


def sync_channel(target: str, token: str | None,
                 options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """A synchronous channel to a node's local API (with ``token`` on every call if given)."""
    channel = grpc.insecure_channel(target, options=options)
    return grpc.intercept_channel(channel, BearerToken(token)) if token else channel

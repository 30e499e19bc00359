"""Bearer-token authentication of the node's local gRPC API (the token files:
taskworker/api_token.py).

Every local-API call must carry the metadata ``authorization: Bearer <token>``; the standard
health check (``grpc.health.v1.Health``) and server reflection answer without it. A call without
a token, or with one the node does not know, is answered UNAUTHENTICATED with a message saying
where the token lives, after a short delay, counted in the node's Status and reported in its log
(taskworker/api_refusals.py). grpcurl: ``-H "authorization: Bearer $(cat DATA_DIR/api.token)"``.

Two kinds of token are accepted:

* the node's token (``DATA_DIR/api.token``): the admin. It may call every method and act as
  any keyring user (``user_id`` names one; empty means ``default``).
* a user token (``DATA_DIR/users/NAME.token``): the principal is user NAME. It may call only
  the methods in :data:`USER_METHODS` (what a storage user needs, and read-only node info);
  every other method answers PERMISSION_DENIED. Its calls act as NAME only: the interceptor
  runs the handler with ``mesh.principal.API_USER`` set to NAME (taskworker/api_principal.py
  wraps the handler's behaviour, so the variable is set in whatever context grpc runs it
  in), an empty ``user_id``
  means NAME, and a ``user_id`` naming anyone else answers PERMISSION_DENIED (checked here for
  unary requests, and again where any handler turns a user_id into a key,
  ``storage.keyring.Keyring.user``).

What this does not stop: a process of the same uid (or root) can read the token files.
"""

from __future__ import annotations

import collections
import hmac
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal

import grpc

from taskworker.api_principal import as_user
from taskworker.api_refusals import REFUSAL_DELAY, Handler, Reason, Refusals, deny_handlers, kind
from taskworker.api_token import TOKEN_ENV, UserTokens

HEADER = "authorization"
# Methods under these prefixes answer without a token (they reveal no user data).
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                   "/grpc.reflection.v1.ServerReflection/")

# What a user token may call (exact method paths; anything else is PERMISSION_DENIED).
# FileService: all of it; every method acts as the token's user only. NodeService: the
# read-only views (the same peer list and counters any mesh member sees over the peer
# channel's status call). Not: NodeService.Leave (stops the node), ComputeService (Deploy,
# name release/transfer, the function list), ProxyService (secrets), RPCService.CallFunction
# and DNSService.ResolveDomain (run code and lookups with the node's identity and secrets).
USER_METHODS = frozenset({
    "/taskworker.FileService/Push",
    "/taskworker.FileService/PushStream",
    "/taskworker.FileService/Get",
    "/taskworker.FileService/GetStream",
    "/taskworker.FileService/Stat",
    "/taskworker.FileService/Revise",
    "/taskworker.FileService/Synchronous",
    "/taskworker.FileService/Log",
    "/taskworker.FileService/Grant",
    "/taskworker.NodeService/Status",
    "/taskworker.NodeService/Peers",
    "/taskworker.NodeService/Closest",
})

# --- server side -------------------------------------------------------------------------

class ApiTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Requires ``authorization: Bearer <token>`` on every method but health and reflection:
    the node's token (everything, as any user) or a user token (USER_METHODS, as that user)."""

    def __init__(self, token: str, where: str, users: UserTokens | None = None,
                 delay: float = REFUSAL_DELAY) -> None:
        self._token = token.encode("ascii")
        self._users = users
        self._delay = delay
        self.refusals = Refusals()           # counted in the node's Status, warned in its log
        self._refuse: dict[Reason, dict[str, Handler]] = {}
        self._where = where
        # (method, user) -> (the server's handler, its as_user copy), built once
        self._as_user: dict[tuple[str, str], tuple[Handler, Handler]] = {}
        self.set_where(where)

    def set_where(self, where: str) -> None:
        """Say in refusals where the token can be read (``where``: file paths)."""
        self._where = where
        how = (f"send the metadata '{HEADER}: Bearer TOKEN'; the token is in {where} "
               f"(tw-mesh finds it itself; or pass --api-token-file / set {TOKEN_ENV})")
        wrong = deny_handlers(f"wrong API token for this node: {how}", delay=self._delay)
        self._refuse = {Reason.MISSING: deny_handlers(f"this node's API requires a token: {how}",
                                                      delay=self._delay),
                        Reason.MALFORMED: wrong, Reason.WRONG: wrong}

    def _check(self, metadata: Any) -> Literal[True] | str | Reason:
        """True: the node's token; a user's name: that user's token; else why the call is
        refused."""
        for key, value in metadata or ():
            if key != HEADER:
                continue
            if isinstance(value, bytes):
                return Reason.MALFORMED
            scheme, _, given = value.strip().partition(" ")
            raw = given.strip().encode("utf-8", "replace")
            if scheme.lower() != "bearer" or not raw:
                return Reason.MALFORMED
            if hmac.compare_digest(raw, self._token):
                return True
            name = self._users.match(raw) if self._users is not None else None
            return name if name is not None else Reason.WRONG
        return Reason.MISSING

    def _user_handler(self, method: str, handler: Handler, name: str) -> Handler:
        if method not in USER_METHODS or handler is None:
            return deny_handlers(
                f"the API token of user {name} may not call {method.lstrip('/')}: that takes "
                f"the node's own token ({self._where}); a user token may call FileService "
                "and NodeService Status, Peers and Closest",
                grpc.StatusCode.PERMISSION_DENIED)[kind(handler)]
        known = self._as_user.get((method, name))
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = as_user(handler, name)
        self._as_user[(method, name)] = (handler, wrapped)
        return wrapped

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
            handler_call_details: grpc.HandlerCallDetails) -> Handler:
        method = handler_call_details.method
        if method.startswith(EXEMPT_PREFIXES):
            return await continuation(handler_call_details)
        verdict = self._check(handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        if verdict is True:              # (never delayed: the check above is all it costs)
            return handler
        if isinstance(verdict, Reason):
            self.refusals.note(verdict, method)
            return self._refuse[verdict][kind(handler)]
        return self._user_handler(method, handler, verdict)

    def close(self) -> None:
        """Report refusals still unreported (and drop the report's timer)."""
        self.refusals.report()


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

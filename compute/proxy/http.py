"""Outbound HTTP for sandboxed functions, performed by the node with httpx.

Every hop (the first request and each redirect) is checked before any connection: scheme
http/https, host on the worker's allow-list, every resolved address public (or explicitly
allowed). The connection then goes to the checked address itself (the URL carries the IP, the
Host header and TLS SNI/verification carry the name), so a second DNS answer cannot swap in
another address (DNS rebinding). Responses are streamed and capped; the whole exchange,
redirects included, has one deadline. Secret values substituted into headers are removed from
every error and from the response handed back (exchange.py: the request and response).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from mesh.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    PeerCallError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
)

from .exchange import Request, Response, redact
from .policy import IPAddress, ProxyPolicy, host_allowed

REDIRECTS = (301, 302, 303, 307, 308)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Headers dropped when a redirect leaves the origin (with any header that carried a secret).
CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")
HOP_HEADERS = ("host", "content-length", "transfer-encoding", "connection")

ResolveIPs = Callable[[str], Awaitable[list[str]]]
# httpx logs every request URL at INFO; a function may put a secret it read in a query string.
logging.getLogger("httpx").setLevel(logging.WARNING)

__all__ = ["CREDENTIAL_HEADERS", "HOP_HEADERS", "METHODS", "REDIRECTS", "HttpProxy", "Request",
           "ResolveIPs", "Response", "redact"]


class HttpProxy:
    def __init__(self, policy: ProxyPolicy, resolve_ips: ResolveIPs, *,
                 max_clients: int = 64, ssl_context: ssl.SSLContext | None = None) -> None:
        self.policy = policy
        self.resolve_ips = resolve_ips
        self._ssl = ssl_context or ssl.create_default_context()
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()   # evicted clients' aclose, awaited in close
        self.max_clients = max_clients
        self.connections_attempted = 0     # requests actually sent (tests assert refusals)
        self.stats = {"requests": 0, "refused": 0, "failures": 0, "redirects": 0}

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.aclose()
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _client(self, hostname: str) -> httpx.AsyncClient:
        """One client (connection pool) per host name, so a pooled TLS connection is only
        reused for the name its certificate was checked against."""
        client = self._clients.get(hostname)
        if client is None:
            client = httpx.AsyncClient(verify=self._ssl, trust_env=False, follow_redirects=False,
                                       limits=httpx.Limits(max_connections=16,
                                                           max_keepalive_connections=4))
            self._clients[hostname] = client
            while len(self._clients) > self.max_clients:
                _, old = self._clients.popitem(last=False)
                closing = asyncio.get_running_loop().create_task(old.aclose())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        self._clients.move_to_end(hostname)
        return client

    async def _pin(self, host: str) -> IPAddress:
        """The checked address to connect to for ``host``; refuses before any connection."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                names = await self.resolve_ips(host)
            except NotFoundError:
                raise UnavailableError(f"cannot resolve {host}") from None
            addresses = [ipaddress.ip_address(a) for a in names]
            if not addresses:
                raise UnavailableError(f"{host} has no address")
        for ip in addresses:
            reason = self.policy.address_allowed(ip)
            if reason is not None:
                raise PermissionDeniedError(
                    f"{host} resolves to a {reason} address ({ip}); refused by the proxy")
        return addresses[0]

    def _check(self, url: httpx.URL, allowed: list[str]) -> None:
        if url.scheme not in ("http", "https"):
            raise PermissionDeniedError(f"scheme {url.scheme!r} is not allowed (http/https only)")
        if not url.host:
            raise InvalidArgumentError("URL has no host")
        if url.userinfo:
            raise InvalidArgumentError("credentials in the URL are not allowed")
        if not host_allowed(url.host, allowed):
            raise PermissionDeniedError(f"host {url.host} is not on this function's allow-list")

    async def fetch(self, req: Request) -> Response:
        self.stats["requests"] += 1
        try:
            return await self._fetch(req)
        except PeerCallError as exc:
            if isinstance(exc, PermissionDeniedError):
                self.stats["refused"] += 1
            else:
                self.stats["failures"] += 1
            raise type(exc)(redact(str(exc), req.secrets)) from None

    async def _fetch(self, req: Request) -> Response:
        method = req.method.upper()
        if method not in METHODS:
            raise InvalidArgumentError(f"method {req.method[:16]!r} is not allowed")
        timeout = self.policy.max_timeout_s
        if math.isfinite(req.timeout) and req.timeout > 0:
            timeout = min(req.timeout, timeout)
        max_bytes = min(req.max_bytes, self.policy.max_response_bytes)
        try:
            url = httpx.URL(req.url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise InvalidArgumentError("malformed URL") from None
        headers = {k: v for k, v in req.headers.items() if k.lower() not in HOP_HEADERS}
        if not any(k.lower() == "accept-encoding" for k in headers):
            headers["Accept-Encoding"] = "identity"   # the cap counts what the caller gets
        body = req.body
        try:
            async with asyncio.timeout(timeout):
                for _hop in range(self.policy.max_redirects + 1):
                    response = await self._one(url, method, headers, body, timeout, max_bytes,
                                               req.allowed_hosts)
                    location = dict((k.lower(), v) for k, v in response.headers).get("location")
                    if response.status not in REDIRECTS or not location:
                        return response
                    self.stats["redirects"] += 1
                    try:
                        target = url.join(location)
                    except (httpx.InvalidURL, ValueError):
                        raise UnavailableError("redirect to a malformed URL") from None
                    if (target.scheme, target.host, target.port) != (url.scheme, url.host,
                                                                     url.port):
                        headers = {k: v for k, v in headers.items()
                                   if k.lower() not in CREDENTIAL_HEADERS
                                   and k.lower() not in req.secret_headers}
                    if response.status == 303 or (response.status in (301, 302)
                                                  and method == "POST"):
                        method, body = ("GET" if method != "HEAD" else "HEAD"), None
                    url = target
                raise UnavailableError(f"more than {self.policy.max_redirects} redirects")
        except TimeoutError:
            raise DeadlineExceededError(f"external call exceeded {timeout:g}s") from None

    async def _one(self, url: httpx.URL, method: str, headers: dict[str, str],
                   body: bytes | None, timeout: float, max_bytes: int,
                   allowed: list[str]) -> Response:
        self._check(url, allowed)
        host = url.host
        ip = await self._pin(host)
        ip_host = f"[{ip}]" if ip.version == 6 else str(ip)
        pinned = url.copy_with(host=ip_host.strip("[]"))
        default_port = 443 if url.scheme == "https" else 80
        host_header = host if url.port in (None, default_port) else f"{host}:{url.port}"
        extensions: dict[str, Any] = {"timeout": {"connect": timeout, "read": timeout,
                                                  "write": timeout, "pool": timeout}}
        if url.scheme == "https":
            extensions["sni_hostname"] = host
        client = self._client(host)
        request = client.build_request(method, pinned, headers={**headers, "Host": host_header},
                                       content=body, extensions=extensions)
        self.connections_attempted += 1
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UnavailableError(f"{method} {url.scheme}://{host_header}/... failed: "
                                   f"{type(exc).__name__}") from None
        try:
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise ResourceExhaustedError(
                    f"response of {declared} bytes exceeds the cap of {max_bytes}")
            chunks: list[bytes] = []
            size = 0
            try:
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if size > max_bytes:
                        raise ResourceExhaustedError(
                            f"response exceeds the cap of {max_bytes} bytes")
                    chunks.append(chunk)
            except httpx.HTTPError as exc:
                raise UnavailableError(f"reading the response failed: {type(exc).__name__}") \
                    from None
        finally:
            await response.aclose()
        return Response(response.status_code, list(response.headers.multi_items()),
                        b"".join(chunks), str(url))

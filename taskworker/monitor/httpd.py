"""A tiny read-only HTTP/1.1 server on asyncio: GET /, /metrics, /api/status, /healthz.

Deliberately small: one request per connection (``Connection: close``), request head capped at
8 KiB and 10 s, only GET and HEAD, no query handling, no files. The Host header must name a
loopback address (or the configured host) so a DNS-rebinding page cannot read the monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_HEAD = 8192
HEAD_TIMEOUT = 10.0
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 500: "Internal Server Error"}
SECURITY_HEADERS = ("X-Content-Type-Options: nosniff\r\n"
                    "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
                    "img-src data:\r\nX-Frame-Options: DENY\r\nCache-Control: no-store\r\n")


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[], Response]


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class HttpServer:
    def __init__(self, host: str, port: int, routes: dict[str, Route]) -> None:
        self.host = host
        self.port = port
        self.routes = routes
        self.server: asyncio.Server | None = None
        self.requests = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.host, self.port,
                                                 limit=MAX_HEAD)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            self.server = None

    def _allowed_host(self, value: str) -> bool:
        name = value.strip().lower()
        if name.startswith("["):
            name = name[: name.find("]") + 1]
        else:
            name = name.rsplit(":", 1)[0]
        return name in LOOPBACK_NAMES or name.startswith("127.") or name == self.host.lower()

    def handle(self, head: bytes) -> tuple[Response, bool]:
        """The response to a request head, and whether to send the body (False for HEAD)."""
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
        except ValueError:
            return Response(400, b"bad request\n"), True
        if not version.startswith("HTTP/1."):
            return Response(400, b"bad request\n"), True
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            return Response(405, b"only GET\n"), True
        if not self._allowed_host(headers.get("host", self.host)):
            return Response(403, b"host not allowed\n"), method == "GET"
        path = target.split("?", 1)[0]
        route = self.routes.get(path)
        if route is None:
            return Response(404, b"not found\n"), method == "GET"
        try:
            return route(), method == "GET"
        except Exception:
            log.exception("monitor page %s failed", path)
            return Response(500, b"internal error\n"), method == "GET"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
                response, send_body = self.handle(head[:-4])
            except TimeoutError:
                response, send_body = Response(408, b"timeout\n"), True
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, ValueError):
                response, send_body = Response(400, b"bad request\n"), True
            self.requests += 1
            reason = REASONS.get(response.status, "OK")
            writer.write((f"HTTP/1.1 {response.status} {reason}\r\n"
                          f"Content-Type: {response.content_type}\r\n"
                          f"Content-Length: {len(response.body)}\r\n"
                          f"{SECURITY_HEADERS}Connection: close\r\n\r\n").encode("latin-1"))
            if send_body:
                writer.write(response.body)
            await asyncio.wait_for(writer.drain(), 30.0)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

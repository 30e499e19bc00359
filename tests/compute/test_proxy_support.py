"""Real loopback servers for the proxy tests: dnsmasq with a zone the test writes, and a small
threaded HTTP server. Both bind 127.0.0.1 on free ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

DNSMASQ = shutil.which("dnsmasq") or (
    "/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None)
ZONE_TTL = 60


def free_udp_tcp_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port: int = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


class Dnsmasq:
    def __init__(self, folder: Path, hosts: dict[str, str], txt: dict[str, str]) -> None:
        if DNSMASQ is None:
            pytest.skip("dnsmasq is not installed (tools/system_deps.sh installs it as root: "
                        "apt-get install dnsmasq)")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts").write_text("".join(f"{ip} {name}\n" for name, ip in hosts.items()))
        os.chmod(folder, 0o755)
        os.chmod(folder / "hosts", 0o644)
        self.port = free_udp_tcp_port()
        args = [DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts", "-C", "/dev/null",
                f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                f"--addn-hosts={folder / 'hosts'}", f"--local-ttl={ZONE_TTL}",
                "--pid-file=", "--local=/test/", "--cache-size=0",
                "--address=/wild.test/127.0.0.1"]      # any <x>.wild.test: fresh names
        args += [f"--txt-record={name},{value}" for name, value in txt.items()]
        if os.geteuid() == 0:
            args.append("--user=root")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()

    def _wait_ready(self) -> None:
        query = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                 b"\x05probe\x04test\x00\x00\x01\x00\x01")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                pytest.skip(f"dnsmasq could not start here: {err.strip()[:300]}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.2)
                try:
                    s.sendto(query, ("127.0.0.1", self.port))
                    s.recvfrom(512)
                    return
                except OSError:
                    continue
        raise RuntimeError("dnsmasq did not answer")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


ZONE_HOSTS = {"api.test": "127.0.0.1", "other.test": "127.0.0.1",
              "internal.test": "10.1.2.3", "router.test": "192.168.1.1"}
ZONE_TXT = {"txt.test": "hello world"}


class _Handler(BaseHTTPRequestHandler):
    server: HttpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        return

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.hits.append((self.command, self.path, dict(self.headers.items())))
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/echo":
            self._send(200, json.dumps({"method": self.command, "path": self.path,
                                        "headers": dict(self.headers.items())}).encode(),
                       {"Content-Type": "application/json"})
        elif url.path == "/redirect":
            self._send(int(query.get("code", ["302"])[0]), b"",
                       {"Location": query["to"][0]})
        elif url.path == "/big":
            self._send(200, b"x" * int(query.get("n", ["2000000"])[0]))
        elif url.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"8000\r\n" + b"y" * 0x8000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/slow":
            time.sleep(float(query.get("s", ["3"])[0]))
            self._send(200, b"late")
        else:
            self._send(404, b"not found")

    do_POST = do_GET
    do_HEAD = do_GET


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: list[tuple[str, str, dict[str, str]]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        return        # a client that gave up (size/time limit tests) is expected

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module", name="dnsmasq")
def dnsmasq_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path_factory.mktemp("dns"), ZONE_HOSTS, ZONE_TXT)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", name="http_server")
def http_server_fixture() -> Iterator[HttpServer]:
    server = HttpServer()
    try:
        yield server
    finally:
        server.stop()

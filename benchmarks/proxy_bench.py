"""Proxy latency: ``python -m benchmarks.proxy_bench [--n 300]``.

In one run, against a dnsmasq and an http.server on 127.0.0.1 started here:
- a direct aiodns query (the floor for an uncached lookup),
- DNS through the node: the DNSService over the local gRPC API, uncached (cache flushed before
  each query) and cached, and the in-process resolver cached/uncached (no gRPC),
- a direct httpx request (pooled client), an external call through the proxy (the
  HostServices a sandboxed function gets: allow-list, SSRF check, pinned connection, capped
  read), and the same call served by another peer over the sealed channel.
Prints a Markdown section (append it to benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiodns
import httpx

from compute.proxy.service import ProxyService
from proto import taskworker_pb2, taskworker_pb2_grpc
from taskworker.api_auth import aio_channel
from taskworker.node import Node, NodeConfig


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


_fresh = iter(range(10**9))


def fresh() -> str:
    """A name no cache has seen (dnsmasq answers every <x>.wild.test); c-ares keeps its own
    TTL-bounded query cache, so "uncached" rows must not repeat a name."""
    return f"n{next(_fresh)}.wild.test"


async def _time(n: int, op: Callable[[], Awaitable[Any]],
                before: Callable[[], None] | None = None) -> list[float]:
    for _ in range(min(20, n)):                 # warm up
        if before:
            before()
        await op()
    out = []
    for _ in range(n):
        if before:
            before()
        t0 = time.perf_counter()
        await op()
        out.append(time.perf_counter() - t0)
    return out


async def _interleaved(n: int, ops: dict[str, Callable[[], Awaitable[Any]]]
                       ) -> dict[str, list[float]]:
    """Round-robin over the ops so load changes on a shared machine hit all rows alike."""
    out: dict[str, list[float]] = {name: [] for name in ops}
    for i in range(n + 20):
        for name, op in ops.items():
            t0 = time.perf_counter()
            await op()
            if i >= 20:
                out[name].append(time.perf_counter() - t0)
    return out


async def run(n: int) -> str:
    from tests.compute.test_proxy_support import ZONE_HOSTS, ZONE_TXT, Dnsmasq, HttpServer

    tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    dns = Dnsmasq(tmp / "dns", ZONE_HOSTS, ZONE_TXT)
    web = HttpServer()
    settings = {"proxy_resolvers": [dns.address], "proxy_allow_networks": ["127.0.0.1/32"],
                "proxy_http_allow": ["bench=api.test"]}
    nodes: list[Node] = []
    rows: list[tuple[str, list[float]]] = []
    try:
        for i, extra in enumerate(({}, {"proxy_via_peers": True})):
            boot = [("127.0.0.1", nodes[0].port)] if nodes else []
            node = Node(NodeConfig(data_dir=tmp / f"n{i}", listen=("127.0.0.1", 0),
                                   api=("127.0.0.1", 0), bootstrap=boot,
                                   settings={**settings, **extra}))
            await node.start()
            nodes.append(node)
        for _ in range(400):
            if all(n.membership and n.membership.live_peers() for n in nodes):
                break
            await asyncio.sleep(0.05)
        assert nodes[0].ctx is not None and nodes[1].ctx is not None
        proxy: ProxyService = nodes[0].ctx.registry["proxy"]
        far: ProxyService = nodes[1].ctx.registry["proxy"]

        direct = aiodns.DNSResolver(nameservers=[dns.address])
        rows.append(("direct aiodns query (dnsmasq), fresh name",
                     await _time(n, lambda: direct.query_dns(fresh(), "A"))))
        rows.append(("direct aiodns query, repeated name (c-ares cache)",
                     await _time(n, lambda: direct.query_dns("api.test", "A"))))
        await direct.close()

        channel = aio_channel(f"127.0.0.1:{nodes[0].api_port}", nodes[0].api_token)
        stub = taskworker_pb2_grpc.DNSServiceStub(channel)
        request = taskworker_pb2.DNSRequest(domain="api.test", record_type="A")
        rows.append(("node resolver in-process, uncached (fresh name)",
                     await _time(n, lambda: proxy.resolver.resolve(fresh()))))
        rows.append(("node resolver in-process, cached",
                     await _time(n, lambda: proxy.resolver.resolve("api.test"))))
        rows.append(("DNSService over local gRPC, uncached (fresh name)",
                     await _time(n, lambda: stub.ResolveDomain(
                         taskworker_pb2.DNSRequest(domain=fresh(), record_type="A")))))
        rows.append(("DNSService over local gRPC, cached",
                     await _time(n, lambda: stub.ResolveDomain(request))))
        rows.append(("resolve through a peer (sealed channel), uncached (fresh name)",
                     await _time(n, lambda: far.resolve(fresh(), "A", "bench/x"))))
        rows.append(("resolve through a peer (sealed channel), cached there",
                     await _time(n, lambda: far.resolve("api.test", "A", "bench/x"))))
        await channel.close()

        url = f"http://api.test:{web.port}/echo"
        ip_url = f"http://127.0.0.1:{web.port}/echo"
        host = proxy.host_for("bench", "x")
        far_host = far.host_for("bench", "x")
        async with httpx.AsyncClient(trust_env=False) as client:
            http_ops: dict[str, Callable[[], Awaitable[Any]]] = {
                "direct httpx GET (pooled client)":
                    lambda: client.get(ip_url, headers={"Host": "api.test"}),
                "call_external_api through the node proxy":
                    lambda: host.call_external_api(url, "GET", None, None, 5),
                "call_external_api served by a peer (sealed channel)":
                    lambda: far_host.call_external_api(url, "GET", None, None, 5),
            }
            rows += list((await _interleaved(n, http_ops)).items())
    finally:
        for node in reversed(nodes):
            await node.stop(grace=0.1)
        web.stop()
        dns.stop()

    base_dns = statistics.median(rows[0][1])
    base_http = statistics.median(next(v for k, v in rows if k.startswith("direct httpx")))
    load = os.getloadavg()
    lines = [f"### Proxy latency, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"`{platform.machine()}`, nproc {os.cpu_count()}, Python "
             f"{platform.python_version()}, {n} sequential ops per row, load average "
             f"{load[0]:.1f}; dnsmasq and http.server on 127.0.0.1; HTTP rows interleaved; ratio = p50 / the direct "
             "baseline of the same kind (aiodns for DNS rows, httpx for HTTP rows).", "",
             "| path | p50 | p99 | ops/s | × direct |", "|---|---|---|---|---|"]
    for name, values in rows:
        p50 = statistics.median(values)
        base = base_http if "http" in name or "call_external" in name else base_dns
        lines.append(f"| {name} | {p50 * 1e3:.3f} ms | {_pct(values, 0.99) * 1e3:.3f} ms | "
                     f"{1 / statistics.mean(values):.0f} | {p50 / base:.2f}× |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    sys.stdout.write(asyncio.run(run(args.n)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

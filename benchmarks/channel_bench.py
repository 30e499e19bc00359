"""Sealed channel (on both its transports) vs plaintext gRPC between the same two processes,
in the same run.

    python -m benchmarks.channel_bench [--rounds 3000] [--mib 64] [--no-malloc-tune] [--no-append]

A server subprocess serves a plain gRPC echo/sink (bytes in, bytes out, no protobuf work) and
the sealed PeerChannel with the same handlers, over gRPC and over its TCP transport
(mesh/channel/tcp_server.py); this process measures all three, interleaved.
Goal (issue 3): sealed ≥ 70% of plaintext throughput and ≤ 1.5× plaintext latency.

Both processes run with the allocator settings the channel applies to every node
(mesh/channel/allocator.py), which serve plaintext and sealed alike; ``--no-malloc-tune``
measures both with glibc's defaults instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from benchmarks.report import append_results, machine_line
from mesh.channel import Caller, ChannelPool, ChannelServer
from mesh.channel.tcp_server import TcpListener
from mesh.identity import Identity

OPTS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
CHUNK = 1 << 20


async def _serve(seed: bytes) -> None:
    identity = Identity.from_seed(seed)
    server = grpc.aio.server(options=OPTS)
    channel = ChannelServer(identity)

    async def echo(caller: Caller, body: bytes) -> bytes:
        return body

    async def sink(caller: Caller, header: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        total = 0
        async for chunk in chunks:
            total += len(chunk)
        yield total.to_bytes(8, "big")

    async def raw_echo(request: bytes, context: Any) -> bytes:
        return request

    async def raw_sink(requests: AsyncIterator[bytes], context: Any) -> bytes:
        total = 0
        async for chunk in requests:
            total += len(chunk)
        return total.to_bytes(8, "big")

    channel.handle("bench.Echo", echo)
    channel.handle_stream("bench.Sink", sink)
    channel.add_to(server)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Raw", {
        "Echo": grpc.unary_unary_rpc_method_handler(raw_echo),
        "Sink": grpc.stream_unary_rpc_method_handler(raw_sink)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    tcp_port = await TcpListener(channel).start("127.0.0.1")
    print(port, tcp_port, flush=True)
    await server.wait_for_termination()


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


KINDS = ("plain", "sealed", "tcp")


async def _measure(port: int, tcp_port: int, seed: bytes, rounds: int, mib: int,
                   server_pid: int) -> dict[str, dict[str, float]]:
    target = f"127.0.0.1:{port}"
    pool = ChannelPool(Identity.generate())
    peer = pool.peer(Identity.from_seed(seed).node_id, target)
    tcp = pool.peer(Identity.from_seed(seed).node_id, target, tcp_port)
    raw = grpc.aio.insecure_channel(target, options=OPTS)
    raw_echo = raw.unary_unary("/bench.Raw/Echo")
    raw_sink = raw.stream_unary("/bench.Raw/Sink")
    payload = os.urandom(1024)
    await peer.unary("bench.Echo", payload)           # handshake outside the timings
    await tcp.unary("bench.Echo", payload)
    await raw_echo(payload)
    lat: dict[str, list[float]] = {k: [] for k in KINDS}
    for _ in range(rounds):                            # interleaved, so load hits both alike
        t = time.perf_counter()
        await raw_echo(payload)
        lat["plain"].append(time.perf_counter() - t)
        t = time.perf_counter()
        await peer.unary("bench.Echo", payload)
        lat["sealed"].append(time.perf_counter() - t)
        t = time.perf_counter()
        await tcp.unary("bench.Echo", payload)
        lat["tcp"].append(time.perf_counter() - t)
    blob = os.urandom(CHUNK)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(mib):
            yield blob

    thr: dict[str, list[float]] = {k: [] for k in KINDS}
    cpu: dict[str, list[float]] = {k: [] for k in KINDS}   # ms of CPU per MiB, both sides

    def cpu_now() -> float:
        return time.process_time() + _proc_cpu(server_pid)

    for _ in range(3):
        t, c = time.perf_counter(), cpu_now()
        await raw_sink(chunks())
        thr["plain"].append(mib / (time.perf_counter() - t))
        cpu["plain"].append((cpu_now() - c) / mib * 1e3)
        t, c = time.perf_counter(), cpu_now()
        _ = [r async for r in peer.stream("bench.Sink", b"", chunks())]
        thr["sealed"].append(mib / (time.perf_counter() - t))
        cpu["sealed"].append((cpu_now() - c) / mib * 1e3)
        t, c = time.perf_counter(), cpu_now()
        _ = [r async for r in tcp.stream("bench.Sink", b"", chunks())]
        thr["tcp"].append(mib / (time.perf_counter() - t))
        cpu["tcp"].append((cpu_now() - c) / mib * 1e3)
    await raw.close()
    await pool.close()
    out: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        out[kind] = {"p50_ms": statistics.median(lat[kind]) * 1e3,
                     "p99_ms": _pct(lat[kind], 0.99) * 1e3,
                     "rtt_per_s": 1 / statistics.mean(lat[kind]),
                     "mb_per_s": statistics.median(thr[kind]) * 1.048576,
                     "cpu_ms_per_mib": statistics.median(cpu[kind])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3000, help="1 KiB round trips per kind")
    parser.add_argument("--mib", type=int, default=64, help="size of the bulk transfer, MiB")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--no-append", action="store_true", help="don't write RESULTS.md")
    parser.add_argument("--no-malloc-tune", action="store_true",
                        help="glibc's default malloc settings in both processes")
    args = parser.parse_args()
    if args.no_malloc_tune:
        os.environ["TW_MESH_MALLOC_TUNE"] = "0"         # inherited by the server process
    if args.serve:
        asyncio.run(_serve(bytes.fromhex(args.serve)))
        return
    seed = os.urandom(16)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.channel_bench", "--serve",
                             seed.hex()], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port, tcp_port = map(int, proc.stdout.readline().split())
        res = asyncio.run(_measure(port, tcp_port, seed, args.rounds, args.mib, proc.pid))
    finally:
        proc.kill()
        proc.wait()
    p = res["plain"]

    def cols(key: str, fmt: str, ratio: str, invert: bool = False) -> str:
        out = [format(p[key], fmt)]
        for kind in ("sealed", "tcp"):
            out.append(format(res[kind][key], fmt))
        for kind in ("sealed", "tcp"):
            r = p[key] / res[kind][key] if invert else res[kind][key] / p[key]
            out.append(format(r, ratio))
        return " | ".join(out)

    rows = [
        "| metric | plaintext gRPC | sealed channel, gRPC | sealed channel, TCP "
        "| gRPC / plain | TCP / plain |",
        "|---|---|---|---|---|---|",
        f"| 1 KiB round trip p50 (ms) | {cols('p50_ms', '.3f', '.2f')} |",
        f"| 1 KiB round trip p99 (ms) | {cols('p99_ms', '.3f', '.2f')} |",
        f"| 1 KiB round trips/s (sequential) | {cols('rtt_per_s', '.0f', '.0%')} |",
        f"| {args.mib} MiB stream (MB/s) | {cols('mb_per_s', '.0f', '.0%')} |",
        f"| stream CPU, both processes (ms per MiB) | {cols('cpu_ms_per_mib', '.2f', '.2f')} |",
        f"| CPU-bound throughput (plain CPU / sealed CPU) | | | | "
        f"{p['cpu_ms_per_mib'] / res['sealed']['cpu_ms_per_mib']:.0%} | "
        f"{p['cpu_ms_per_mib'] / res['tcp']['cpu_ms_per_mib']:.0%} |",
    ]
    text = "\n".join(rows)
    print(text)
    if not args.no_append:
        append_results("Channel: sealed (gRPC and TCP transports) vs plaintext gRPC "
                       "(benchmarks/channel_bench.py)",
                       f"{machine_line()}; {args.rounds} interleaved 1 KiB round trips, "
                       f"{args.mib} MiB streamed in 1 MiB chunks, median of 3; malloc settings "
                       f"{'glibc defaults' if args.no_malloc_tune else 'tuned (allocator.py)'}; "
                       "load average "
                       f"{os.getloadavg()[0]:.1f} (wall-clock figures suffer under load, CPU per "
                       "MiB does not).\n"
                       "Goal: sealed ≥ 70% of plaintext throughput, ≤ 1.5× plaintext latency.",
                       text)


if __name__ == "__main__":
    main()

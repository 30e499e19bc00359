"""Delay links in user space: the stand-in for ``tc netem delay`` where the kernel has no netem.

Why: the sandbox kernels this suite runs on ship no ``sch_netem`` (nor ``sch_fq``/``etf``, so
EDT timestamps set by a BPF program would be ignored too); only pfifo/htb/tbf and clsact exist.
So a delay link is built from two TAP devices joined by this process:

    node namespace            hub namespace
    eth0 (TAP e<i>) ==fd==> [this process: queue, release at t + delay ± jitter] ==fd==> TAP v<i>
                                                                                      in br0/br1

``Topology(n, delay_links=True)`` (tests/support/netns.py) starts one ``python -m
tests.support.delaylink N`` inside the hub namespace: it creates ``e0..eN-1`` and ``v0..vN-1``,
prints ``ready``, and the topology moves ``e<i>`` into node i's namespace as its ``eth0``. Every
Ethernet frame either way (ARP, kademlia UDP, gRPC TCP) waits ``delay ± jitter`` here, so a
path between nodes a and b is delayed once per link: d_a + d_b one way. Frames keep their order
(the release time never goes backwards; netem with jitter would reorder), a queue holds at most
QUEUE_LIMIT frames per direction (more are dropped and counted, like netem's ``limit``).
Commands on stdin, each answered by one line: ``delay I MS JITTER_MS`` -> ``ok``;
``stats`` -> ``stats <json>``. EOF on stdin (the test process is gone) ends it.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import json
import os
import random
import signal
import struct
import subprocess
import sys

from tests.support.nodes import ROOT

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
QUEUE_LIMIT = 10_000


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def unavailable_reason() -> str | None:
    """Why delay links can't be built here (None if they can)."""
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as exc:
        return f"TAP devices unavailable (/dev/net/tun: {exc.strerror})"
    return None


class Link:
    """One node's link: its delay and jitter (seconds) and counters for both directions."""

    def __init__(self) -> None:
        self.delay = self.jitter = 0.0
        self.forwarded = self.dropped = 0
        self.rng = random.Random()

    def sample(self) -> float:
        return max(0.0, self.delay + self.rng.uniform(-self.jitter, self.jitter))


class Pipe:
    """Frames read from ``src`` are written to ``dst`` once their release time has come."""

    def __init__(self, src: int, dst: int, link: Link) -> None:
        self.src, self.dst, self.link = src, dst, link
        self.loop = asyncio.get_running_loop()
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.last_due = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.loop.add_reader(src, self.readable)

    def readable(self) -> None:
        now = self.loop.time()
        for _ in range(64):
            try:
                frame = os.read(self.src, 65536)
            except (BlockingIOError, InterruptedError):
                break
            if len(self.queue) >= QUEUE_LIMIT:
                self.link.dropped += 1
                continue
            self.last_due = max(self.last_due, now + self.link.sample())
            self.queue.append((self.last_due, frame))
            if self.timer is None:
                self.timer = self.loop.call_at(self.last_due, self.release)

    def release(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            frame = self.queue.popleft()[1]
            try:
                os.write(self.dst, frame)
                self.link.forwarded += 1
            except OSError:               # device down or its queue full: the frame is lost
                self.link.dropped += 1
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self.release)


async def serve(n: int) -> None:
    links = [Link() for _ in range(n)]
    pipes = []
    for i in range(n):
        inner, outer = open_tap(f"e{i}"), open_tap(f"v{i}")
        pipes += [Pipe(inner, outer, links[i]), Pipe(outer, inner, links[i])]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = line.decode().split()
        if cmd[:1] == ["delay"]:
            link = links[int(cmd[1])]
            link.delay, link.jitter = float(cmd[2]) / 1000, float(cmd[3]) / 1000
            print("ok", flush=True)
        elif cmd[:1] == ["stats"]:
            stats = [{"forwarded": k.forwarded, "dropped": k.dropped} for k in links]
            print("stats", json.dumps(stats), flush=True)


class DelayLinks:
    """The test-side handle: start the forwarder in ``hub``, set delays, read counters."""

    def __init__(self, hub: str, n: int) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", hub, sys.executable, "-m", "tests.support.delaylink", str(n)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        if self._line() != "ready":
            self.close()
            raise RuntimeError("delay link forwarder did not start (TAP devices not permitted?)")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().decode().strip()

    def _ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self._line()

    def set(self, i: int, ms: float, jitter_ms: float = 0) -> None:
        if self._ask(f"delay {i} {ms} {jitter_ms}") != "ok":
            raise RuntimeError("delay link forwarder is gone")

    def stats(self) -> list[dict[str, int]]:
        answer = self._ask("stats")
        if not answer.startswith("stats "):
            raise RuntimeError("delay link forwarder is gone")
        stats: list[dict[str, int]] = json.loads(answer[6:])
        return stats

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.support.delaylink N   (inside the hub namespace)")
    asyncio.run(serve(int(sys.argv[1])))

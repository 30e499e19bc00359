"""A raw-socket capture of loopback traffic (AF_PACKET on lo; needs root), filtered by port.

Payloads are concatenated per (src, sport, dst, dport) flow so that a marker split across TCP
segments is still found. Used to prove that only ciphertext crosses the peer ports.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections import defaultdict

ETH_P_ALL = 0x0003
Flow = tuple[str, int, str, int, int]       # src, sport, dst, dport, proto


class LoopbackCapture:
    def __init__(self, ports: set[int]) -> None:
        self.ports = ports
        self.flows: dict[Flow, bytearray] = defaultdict(bytearray)
        self.packets = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoopbackCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.1)
            if not ready:
                continue
            frame, addr = self._sock.recvfrom(262144)
            if addr[2] == socket.PACKET_OUTGOING:   # each loopback packet shows up twice
                continue
            self._parse(frame)

    def _parse(self, frame: bytes) -> None:
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":          # IPv4 only
            return
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        proto = ip[9]
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        total = struct.unpack("!H", ip[2:4])[0]
        body = ip[ihl:total]
        if proto == 6 and len(body) >= 20:
            sport, dport = struct.unpack("!HH", body[:4])
            payload = body[(body[12] >> 4) * 4:]
        elif proto == 17 and len(body) >= 8:
            sport, dport = struct.unpack("!HH", body[:4])
            payload = body[8:]
        else:
            return
        if sport in self.ports or dport in self.ports:
            self.packets += 1
            self.flows[(src, sport, dst, dport, proto)].extend(payload)

    def total_bytes(self) -> int:
        return sum(len(v) for v in self.flows.values())

    def contains(self, needle: bytes, ports: set[int] | None = None) -> bool:
        """Whether any flow (touching ``ports``, default all captured) carries ``needle``."""
        return any(needle in data for flow, data in self.flows.items()
                   if ports is None or flow[1] in ports or flow[3] in ports)

    def bytes_on(self, ports: set[int]) -> int:
        return sum(len(d) for f, d in self.flows.items() if f[1] in ports or f[3] in ports)


def can_capture() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)).close()
    except (PermissionError, OSError, AttributeError):
        return False
    return True

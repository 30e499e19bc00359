"""What handshakes may cost a server, per source address (docs/channel.md, "Denial of service").

A handshake costs the server ~0.19 ms of CPU (a signature check, a signature and a DH) against
~0.05 ms for the client, and a request stays valid for the 120 s clock-skew window. So before
any signature work a request is charged to its source address (a token bucket per address,
``AdmissionPolicy.handshake_burst`` / ``handshake_rate``) and looked up in a cache of requests
already answered (a copy is refused: an honest client signs a fresh request each time). Over
TCP the source address is proven by the TCP handshake, so it cannot be spoofed to drain an
honest peer's budget. An IPv6 source is charged per /64, the block one host usually holds.

Sessions live in ``SessionCache`` (sessions.py), which evicts from the source holding most.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass

from mesh.channel.handshake import MAX_CLOCK_SKEW_S, check_request, request_digest
from mesh.errors import HandshakeError
from mesh.identity import Identity
from proto import peer_pb2

HANDSHAKE_BURST = 64        # a whole mesh's peers re-keying at once from one (NAT) address
HANDSHAKE_RATE = 50.0       # per second per address: ≤ 1% of a core (50 x 0.19 ms)
MAX_SOURCES = 4096          # addresses with a bucket; the least recently seen goes first
# Larger than one address can fill while a request stays valid (64 + 50/s x 240 s = 12,064),
# so an address cannot flush its own request out of the cache to replay it.
REPLAY_CACHE = 16384
MAX_SESSIONS = 4096


@dataclass(frozen=True)
class AdmissionPolicy:
    handshake_burst: int = HANDSHAKE_BURST
    handshake_rate: float = HANDSHAKE_RATE
    max_sources: int = MAX_SOURCES
    replay_cache: int = REPLAY_CACHE
    max_sessions: int = MAX_SESSIONS


def source_of(host: str) -> str:
    """The address a handshake is charged to: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def grpc_peer_host(peer: str) -> str:
    """The host in grpc's ``context.peer()`` ("ipv4:1.2.3.4:5", "ipv6:[::1]:5", "ipv6:%5B::1%5D:5")."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = rest.rsplit(":", 1)[0].replace("%5B", "[").replace("%5D", "]")
    return host.strip("[]")


class HandshakeBudget:
    """A token bucket per source, in a bounded LRU table."""

    def __init__(self, policy: AdmissionPolicy) -> None:
        self.policy = policy
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, source: str, now: float | None = None) -> bool:
        """Charge one handshake to ``source``; False when its budget is spent."""
        t = time.monotonic() if now is None else now
        burst = float(self.policy.handshake_burst)
        tokens, then = self._buckets.pop(source, (burst, t))
        tokens = min(burst, tokens + (t - then) * self.policy.handshake_rate)
        ok = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if ok else tokens, t)
        while len(self._buckets) > self.policy.max_sources:
            self._buckets.popitem(last=False)
        if not ok:
            self.refused += 1
        return ok


class ReplayCache:
    """Digests of the requests answered while they are still valid (handshake.request_digest)."""

    def __init__(self, policy: AdmissionPolicy) -> None:
        self.policy = policy
        self._seen: OrderedDict[bytes, float] = OrderedDict()   # digest -> valid until
        self.refused = 0

    def __len__(self) -> int:
        return len(self._seen)

    def replayed(self, digest: bytes, now: float | None = None) -> bool:
        t = time.time() if now is None else now
        while self._seen and next(iter(self._seen.values())) < t:
            self._seen.popitem(last=False)
        if digest in self._seen:
            self.refused += 1
            return True
        return False

    def add(self, digest: bytes, timestamp_ms: int) -> None:
        self._seen[digest] = timestamp_ms / 1000 + MAX_CLOCK_SKEW_S
        while len(self._seen) > self.policy.replay_cache:
            self._seen.popitem(last=False)


class Throttled(Exception):
    """The source's handshake budget is spent (answered RESOURCE_EXHAUSTED: retry later)."""


class HandshakeGate:
    """The checks a request passes before the server does any signature work for it."""

    def __init__(self, policy: AdmissionPolicy) -> None:
        self.budget = HandshakeBudget(policy)
        self.replays = ReplayCache(policy)

    def admit(self, identity: Identity, request: peer_pb2.HandshakeRequest,
              host: str) -> tuple[str, bytes]:
        """The source the request is charged to and its digest (for ``answered``); raises
        HandshakeError (malformed, stale, replayed) or Throttled."""
        check_request(identity, request)
        source = source_of(host)
        if not self.budget.take(source):
            raise Throttled(f"too many handshakes from {source}: retry later")
        digest = request_digest(request)
        if self.replays.replayed(digest):
            raise HandshakeError("replayed handshake request")
        return source, digest

    def answered(self, digest: bytes, request: peer_pb2.HandshakeRequest) -> None:
        self.replays.add(digest, request.timestamp_ms)

"""Proxy policy: who may resolve what, which hosts a worker may call, which addresses are off
limits (SSRF), and the size/time caps. Built from `tw-mesh join` flags (settings)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MAX_BYTES = 1 * 2**20
DEFAULT_TIMEOUT_S = 10.0
MAX_REDIRECTS = 5


def normalize_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def suffix_match(name: str, pattern: str) -> bool:
    """``pattern`` "example.com" or "*.example.com" or ".example.com" matches the name itself
    (except the "*." form) and every subdomain; "*" matches everything."""
    name, pattern = normalize_name(name), pattern.strip().lower().rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    pattern = pattern.lstrip(".")
    return name == pattern or name.endswith("." + pattern)


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why an address is refused by default (None: a public address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return forbidden_reason(ip.ipv4_mapped)
    if isinstance(ip, ipaddress.IPv6Address) and ip.sixtofour is not None:
        # ipaddress calls 2002::/16 global, but a 6to4 relay delivers to the IPv4 address it
        # embeds (NAT64, IPv4-compatible and Teredo forms are already reserved or private)
        inner = forbidden_reason(ip.sixtofour)
        return None if inner is None else f"6to4-embedded {inner}"
    checks = (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
              ("private", ip.is_private), ("multicast", ip.is_multicast),
              ("unspecified", ip.is_unspecified), ("reserved", ip.is_reserved))
    for reason, hit in checks:
        if hit:
            return reason
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "shared (CGNAT)"
    return None


@dataclass
class ProxyPolicy:
    # DNS: a name is refused when it matches a deny pattern, or when allow patterns exist and
    # none matches.
    dns_allow: list[str] = field(default_factory=list)
    dns_deny: list[str] = field(default_factory=list)
    # HTTP: worker id / function name (or "*") -> host patterns it may call.
    http_allow: dict[str, list[str]] = field(default_factory=dict)
    # Networks that are normally refused but explicitly allowed (e.g. 127.0.0.1/32 in tests).
    allow_networks: list[IPNetwork] = field(default_factory=list)
    max_response_bytes: int = DEFAULT_MAX_BYTES
    max_timeout_s: float = DEFAULT_TIMEOUT_S
    max_redirects: int = MAX_REDIRECTS
    # Serve this node's sandboxes' DNS/HTTP through peers instead of locally.
    via_peers: bool = False
    # Serve proxy.Resolve / proxy.Http for peers.
    serve_peers: bool = True
    secret_cache_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> ProxyPolicy:
        http_allow: dict[str, list[str]] = {}
        for entry in settings.get("proxy_http_allow", []):
            principal, _, hosts = str(entry).partition("=")
            if not hosts:
                raise ValueError(f"--http-allow expects WORKER=HOST[,HOST...], got {entry!r}")
            http_allow.setdefault(principal.strip(), []).extend(
                h.strip() for h in hosts.split(",") if h.strip())
        return cls(
            dns_allow=list(settings.get("proxy_dns_allow", [])),
            dns_deny=list(settings.get("proxy_dns_deny", [])),
            http_allow=http_allow,
            allow_networks=[ipaddress.ip_network(str(n), strict=False)
                            for n in settings.get("proxy_allow_networks", [])],
            max_response_bytes=int(settings.get("proxy_max_bytes", DEFAULT_MAX_BYTES)),
            max_timeout_s=float(settings.get("proxy_max_timeout", DEFAULT_TIMEOUT_S)),
            via_peers=bool(settings.get("proxy_via_peers", False)),
            serve_peers=not bool(settings.get("proxy_no_serve_peers", False)),
            secret_cache_s=float(settings.get("proxy_secret_cache", 2.0)),
        )

    # -- DNS ---------------------------------------------------------------------------------
    def dns_allowed(self, domain: str) -> bool:
        if any(suffix_match(domain, p) for p in self.dns_deny):
            return False
        return not self.dns_allow or any(suffix_match(domain, p) for p in self.dns_allow)

    # -- HTTP --------------------------------------------------------------------------------
    def hosts_for(self, worker_id: str, function: str) -> list[str]:
        hosts: list[str] = []
        for principal in dict.fromkeys((worker_id, function, "*")):
            if principal:               # a call without an identity gets the "*" entries
                hosts.extend(self.http_allow.get(principal, []))
        return hosts

    def address_allowed(self, ip: IPAddress) -> str | None:
        """None when the node may connect to ``ip``; else the reason it may not."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allow_networks):
            return None
        return forbidden_reason(ip)


def host_allowed(host: str, patterns: list[str]) -> bool:
    return any(suffix_match(host, p) for p in patterns)

"""DNS through aiodns on the node: a TTL-honouring cache with negative caching, allow/deny
policy, in-flight de-duplication, and a hook for names inside the mesh (``*.mesh``)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiodns
import pycares

from mesh.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)

from .policy import ProxyPolicy, normalize_name

RECORD_TYPES = ("A", "AAAA", "CAA", "CNAME", "MX", "NAPTR", "NS", "PTR", "SOA", "SRV", "TXT")
_TYPE_NAMES = {getattr(pycares, f"QUERY_TYPE_{t}"): t for t in RECORD_TYPES}
MESH_SUFFIX = ".mesh"
MAX_NAME = 253


@dataclass(frozen=True)
class Record:
    type: str
    value: str
    ttl: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "value": self.value, "ttl": self.ttl}


@dataclass(frozen=True)
class Answer:
    records: list[Record]
    cached: bool
    source: str            # "upstream" | "cache" | "mesh" | "peer:<id>"


@dataclass
class _Entry:
    stored: float
    expires: float
    records: list[Record]
    nxdomain: bool


MeshLookup = Callable[[str, str], Awaitable[list[Record]]]


def _format(rtype: str, data: Any) -> str:
    if rtype in ("A", "AAAA"):
        return str(data.addr)
    if rtype == "CNAME":
        return str(data.cname)
    if rtype == "MX":
        return f"{data.priority} {data.exchange}"
    if rtype == "TXT":
        raw = data.data
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    if rtype == "NS":
        return str(data.nsdname)
    if rtype == "PTR":
        return str(data.dname)
    if rtype == "SRV":
        return f"{data.priority} {data.weight} {data.port} {data.target}"
    if rtype == "SOA":
        return (f"{data.mname} {data.rname} {data.serial} {data.refresh} {data.retry} "
                f"{data.expire} {data.minimum}")
    if rtype == "CAA":
        return f"{data.critical} {data.tag} {data.value}"
    if rtype == "NAPTR":
        return (f"{data.order} {data.preference} {data.flags} {data.service} "
                f"{data.regexp} {data.replacement}")
    return str(data)


def check_query(domain: str, record_type: str) -> tuple[str, str]:
    name = normalize_name(domain)
    rtype = (record_type or "A").strip().upper()
    if not name or len(name) > MAX_NAME or any(not 0 < len(label) <= 63
                                                for label in name.split(".")):
        raise InvalidArgumentError(f"invalid domain name {domain[:80]!r}")
    if any(c.isspace() or ord(c) < 33 or ord(c) > 126 for c in name):
        raise InvalidArgumentError(f"invalid domain name {domain[:80]!r}")
    if rtype not in RECORD_TYPES:
        raise InvalidArgumentError(f"unsupported record type {record_type[:16]!r} "
                                   f"(one of {', '.join(RECORD_TYPES)})")
    return name, rtype


class Resolver:
    """Resolve names for the node: ``.mesh`` names through ``mesh_lookup``, the rest through
    aiodns pointed at ``nameservers`` ("host:port" allowed; None = the system's)."""

    def __init__(self, policy: ProxyPolicy, nameservers: list[str] | None = None, *,
                 mesh_lookup: MeshLookup | None = None, negative_ttl: float = 30.0,
                 max_ttl: float = 3600.0, max_entries: int = 4096, timeout: float = 2.0,
                 tries: int = 2) -> None:
        self.policy = policy
        self.nameservers = nameservers or None
        self.mesh_lookup = mesh_lookup
        self.negative_ttl = negative_ttl
        self.max_ttl = max_ttl
        self.max_entries = max_entries
        self.timeout = timeout
        self.tries = tries
        self._resolver: aiodns.DNSResolver | None = None
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Future[_Entry]] = {}
        self.stats = {"queries": 0, "cache_hits": 0, "negative_hits": 0, "upstream": 0,
                      "mesh": 0, "refused": 0, "failures": 0}

    def _aiodns(self) -> aiodns.DNSResolver:
        if self._resolver is None:
            kwargs: dict[str, Any] = {"timeout": self.timeout, "tries": self.tries}
            self._resolver = aiodns.DNSResolver(nameservers=self.nameservers, **kwargs)
        return self._resolver

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

    def flush(self) -> None:
        self._cache.clear()

    async def resolve(self, domain: str, record_type: str = "A") -> Answer:
        name, rtype = check_query(domain, record_type)
        self.stats["queries"] += 1
        if name == MESH_SUFFIX[1:] or name.endswith(MESH_SUFFIX):
            if self.mesh_lookup is None:
                raise NotFoundError(f"{name} is not served by this node")
            records = await self.mesh_lookup(name, rtype)
            self.stats["mesh"] += 1
            if not records:
                raise NotFoundError(f"no mesh peer serves {name}")
            return Answer(records, False, "mesh")
        if not self.policy.dns_allowed(name):
            self.stats["refused"] += 1
            raise PermissionDeniedError(f"resolving {name} is not allowed by this node's policy")
        key = (name, rtype)
        entry = self._cached(key)
        cached = entry is not None
        if entry is None:
            entry = await self._fetch(key)
        return self._answer(name, entry, cached)

    def _cached(self, key: tuple[str, str]) -> _Entry | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.expires <= time.monotonic():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        self.stats["cache_hits"] += 1
        if entry.nxdomain or not entry.records:
            self.stats["negative_hits"] += 1
        return entry

    def _answer(self, name: str, entry: _Entry, cached: bool) -> Answer:
        if entry.nxdomain:
            raise NotFoundError(f"{name}: no such domain")
        age = int(time.monotonic() - entry.stored) if cached else 0
        records = [Record(r.type, r.value, max(0, r.ttl - age)) for r in entry.records]
        return Answer(records, cached, "cache" if cached else "upstream")

    async def _fetch(self, key: tuple[str, str]) -> _Entry:
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            entry = await self._query(*key)
            future.set_result(entry)
            return entry
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()    # retrieved: waiters re-raise it, nobody logs it
            raise
        finally:
            del self._inflight[key]

    async def _query(self, name: str, rtype: str) -> _Entry:
        self.stats["upstream"] += 1
        now = time.monotonic()
        try:
            result = await self._aiodns().query_dns(name, rtype)
        except aiodns.error.DNSError as exc:
            code = exc.args[0] if exc.args else None
            if code in (aiodns.error.ARES_ENOTFOUND,):
                return self._store((name, rtype), now, [], nxdomain=True)
            if code in (aiodns.error.ARES_ENODATA,):
                return self._store((name, rtype), now, [], nxdomain=False)
            self.stats["failures"] += 1
            message = exc.args[1] if len(exc.args) > 1 else str(exc)
            raise UnavailableError(f"resolving {name} {rtype} failed: {message}") from None
        records = [Record(_TYPE_NAMES.get(rr.type, str(rr.type)), _format(
                   _TYPE_NAMES.get(rr.type, ""), rr.data), int(rr.ttl)) for rr in result.answer]
        return self._store((name, rtype), now, records, nxdomain=False)

    def _store(self, key: tuple[str, str], now: float, records: list[Record],
               nxdomain: bool) -> _Entry:
        ttl = min((r.ttl for r in records), default=self.negative_ttl)
        ttl = min(float(ttl), self.max_ttl)
        entry = _Entry(now, now + ttl, records, nxdomain)
        if ttl > 0:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return entry

    def status(self) -> dict[str, Any]:
        return {**self.stats, "cache_entries": len(self._cache),
                "nameservers": ",".join(self.nameservers or ["system"])}

"""Per-call limits and the host-side policy hook for requests coming out of the sandbox."""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

JSON = Any  # a JSON-compatible value: None, bool, int, float, str, list, dict[str, JSON]
_OWNER = re.compile(r"[0-9a-f]{16,40}|[0-9a-f]{64}")


def check_owner(owner: object) -> str | None:
    """``get_secret``'s ``owner`` (None: not named), lower-cased: a node id (40 hex digits), a
    prefix of one of at least 16 (what ``tw-mesh status`` prints), or a 64-hex public key.
    Checked where it enters (the sandbox pipe, TaskWorker, the reader), so a typo is an
    error rather than a secret silently not found."""
    if owner is None:
        return None
    if not isinstance(owner, str) or not _OWNER.fullmatch(owner.lower()):
        raise ValueError(f"owner must be a node id (40 hex digits, or a prefix of at least 16) "
                         f"or a 64-hex public key, not {str(owner)[:80]!r}")
    return owner.lower()


@dataclass(frozen=True)
class Limits:
    """Resource limits for one call. Every field is enforced; see docs/sandbox.md."""

    wall_time_s: float = 5.0  # host SIGKILLs the worker after this (includes host requests)
    cpu_time_s: float = 5.0  # RLIMIT_CPU (soft -> TimeLimit, hard = soft + 1 -> SIGKILL)
    memory_bytes: int = 256 * 2**20  # RLIMIT_AS
    output_bytes: int = 1 * 2**20  # cap on any single frame sent to the host
    max_open_files: int = 32  # RLIMIT_NOFILE
    file_size_bytes: int = 0  # RLIMIT_FSIZE
    max_host_requests: int = 64  # get_secret / call_external_api / resolve per call
    source_bytes: int = 1 * 2**20  # cap on user source size

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"Limits.{f.name} must be a non-negative number")
        if self.wall_time_s <= 0 or self.cpu_time_s <= 0:
            raise ValueError("time limits must be positive")
        if self.memory_bytes < 32 * 2**20:
            raise ValueError("memory_bytes below 32 MiB cannot start Python")
        if self.max_open_files < 4:
            raise ValueError("max_open_files must be at least 4")

    @functools.cached_property
    def _wire(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    def to_wire(self) -> dict[str, float | int]:
        """The limits as the worker receives them; built once per (frozen) Limits, so the
        dict is shared: serialize it, do not change it."""
        return self._wire


@runtime_checkable
class HostServices(Protocol):
    """Policy hook: serves the requests a sandboxed function sends up its pipe.

    Raise PermissionError to refuse (the user sees a PermissionError), ValueError for a bad
    argument (a ValueError); any other exception reaches the user as a RuntimeError with the
    exception's message. ``get_secret`` gets ``owner`` (checked by ``check_owner``) only
    when the function named one: a hook without the parameter serves the one-argument form.
    """

    async def get_secret(self, name: str, owner: str | None = None) -> str: ...

    async def call_external_api(
        self,
        url: str,
        method: str,
        headers: dict[str, str] | None,
        body: str | bytes | None,
        timeout: float,
    ) -> dict[str, Any]: ...

    async def resolve(self, domain: str, record_type: str) -> list[dict[str, Any]]: ...


class DenyAllHost:
    """Default HostServices: every request is refused."""

    async def get_secret(self, name: str, owner: str | None = None) -> str:
        raise PermissionError(f"no secret {name!r} is available to this function")

    async def call_external_api(
        self,
        url: str,
        method: str,
        headers: dict[str, str] | None,
        body: str | bytes | None,
        timeout: float,
    ) -> dict[str, Any]:
        raise PermissionError("external API calls are not allowed for this function")

    async def resolve(self, domain: str, record_type: str) -> list[dict[str, Any]]:
        raise PermissionError("DNS lookups are not allowed for this function")

"""compute.sandbox: run user functions in single-use, hardened worker processes.

Exports are loaded lazily so the zygote (which imports compute.sandbox.zygote with a bare
``python -I -S``) never pulls in grpc or asyncio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        BadArguments,
        EntryNotFound,
        LimitExceeded,
        MemoryLimit,
        OutputLimit,
        PolicyViolation,
        SandboxError,
        SandboxUnavailable,
        TimeLimit,
        UserCodeError,
    )
    from .limits import DenyAllHost, HostServices, Limits
    from .pool import SandboxPool

_EXPORTS = {
    "BadArguments": "errors", "EntryNotFound": "errors", "LimitExceeded": "errors",
    "MemoryLimit": "errors", "OutputLimit": "errors", "PolicyViolation": "errors",
    "SandboxError": "errors", "SandboxUnavailable": "errors", "TimeLimit": "errors",
    "UserCodeError": "errors", "DenyAllHost": "limits", "HostServices": "limits",
    "Limits": "limits", "SandboxPool": "pool",
}
__all__ = [
    "BadArguments", "DenyAllHost", "EntryNotFound", "HostServices", "LimitExceeded", "Limits",
    "MemoryLimit", "OutputLimit", "PolicyViolation", "SandboxError", "SandboxPool",
    "SandboxUnavailable", "TimeLimit", "UserCodeError",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)

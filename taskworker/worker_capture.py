"""What a TaskWorker registers: a function's source, captured for the sandbox.

Registered functions never run in the worker's process: their module's source (or the
function's own, for a nested one) is captured at registration and prepared for the sandbox
(compute/prepare.py), then every call runs it in the node's sandbox pool.
"""

from __future__ import annotations

import inspect
import os
import textwrap
from collections.abc import Callable
from typing import Any

from compute.prepare import sandbox_source


class TaskWorkerError(Exception):
    """A TaskWorker could not do what was asked (bad registration, not started, ...)."""


def capture(func: Callable[..., Any]) -> tuple[str, str, str]:
    """(source, entry, filename) with which the sandbox runs ``func``."""
    if not callable(func) or not hasattr(func, "__code__"):
        raise TaskWorkerError(f"{func!r} is not a Python function")
    entry = func.__name__
    if not entry.isidentifier() or entry == "<lambda>":
        raise TaskWorkerError("lambdas cannot be registered: define the function with def")
    module = inspect.getmodule(func)
    filename = os.path.basename(getattr(module, "__file__", None) or "<taskworker>")
    try:
        # (at decoration time the module is still executing: its global is not bound yet)
        if module is not None and "." not in func.__qualname__ and \
                func.__qualname__ == entry:
            return sandbox_source(inspect.getsource(module)), entry, filename
        return sandbox_source(textwrap.dedent(inspect.getsource(func))), entry, filename
    except (OSError, TypeError) as exc:
        raise TaskWorkerError(
            f"cannot read the source of {entry!r} ({exc}); functions must be defined in a "
            "file so they can run in the sandbox") from None

"""Session-wide test setup.

Nodes (subprocesses and in-process) leave their API token's runtime file in
``$TW_MESH_RUNTIME_DIR`` (taskworker/api_runtime.py); the suite points it at a private directory
of its own, so tests never write to or read from the user's ~/.tw-mesh/run or
$XDG_RUNTIME_DIR/tw-mesh, and the CLI runs of `run_cli` find tokens the way a user's do.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from taskworker.api_token import RUNTIME_ENV

_RUNTIME = tempfile.mkdtemp(prefix="tw-mesh-test-run-")      # mode 0700
_PREVIOUS = os.environ.get(RUNTIME_ENV)
os.environ[RUNTIME_ENV] = _RUNTIME


def pytest_unconfigure(config: pytest.Config) -> None:
    if _PREVIOUS is None:
        os.environ.pop(RUNTIME_ENV, None)
    else:
        os.environ[RUNTIME_ENV] = _PREVIOUS
    shutil.rmtree(_RUNTIME, ignore_errors=True)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask, for tests that files still come out private."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)

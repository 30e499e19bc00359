"""Session-wide test setup.

Nodes (subprocesses and in-process) leave their API token's runtime file in
``$TW_MESH_RUNTIME_DIR`` (taskworker/api_runtime.py); the suite points it at a private directory
of its own, so tests never write to or read from the user's ~/.tw-mesh/run or
$XDG_RUNTIME_DIR/tw-mesh, and the CLI runs of `run_cli` find tokens the way a user's do.
It also sets ``$TW_MESH_RESERVED_SPACE`` to 0 (reason below).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from storage.capacity import RESERVE_ENV
from taskworker.api_token import RUNTIME_ENV

_RUNTIME = tempfile.mkdtemp(prefix="tw-mesh-test-run-")      # mode 0700
_PREVIOUS = os.environ.get(RUNTIME_ENV)
os.environ[RUNTIME_ENV] = _RUNTIME
# Every node of the suite shares this machine's volume, and a CI disk was once seen with under
# 300 MB free: with the default 1 GiB reserve every node would refuse every store. Tests of the
# reserve (storage/capacity.py) set it themselves.
os.environ.setdefault(RESERVE_ENV, "0")


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

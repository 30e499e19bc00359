"""A small tmpfs the test mounts itself (root only): a disk that fills up on purpose."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def small_tmpfs(parent: Path, size: str) -> Iterator[Path]:
    """Mount a ``size`` tmpfs under ``parent`` for the duration (skips the test if it can't)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = parent / f"small-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {out.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)

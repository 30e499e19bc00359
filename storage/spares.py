"""Empty files made ahead of time, so a fragment write never allocates an inode while a Push
waits for it.

Why: on this machine's filesystem (ext4 without a journal) creating a file costs ~0.87 ms of
CPU, against ~24 µs for a rename and ~9 µs to open and truncate an existing file: without a
journal, ext4 skips every free inode whose owner was deleted in the last few seconds and reads
its inode-table block to find out (``find_inode_bit``/``recently_deleted``). A 1 MiB Push made
a dozen files over its six holders; a profile of a storage peer showed a quarter of its CPU
there. A background thread (niced, so it yields to requests) keeps a pool of empty files in
``.spare/``; a write takes one as its temp file and renames it into place as before.

Spares are never trusted across a restart: they are unlinked when the pool opens (unlinking a
name never touches the data of another name of the same inode).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_MIN_TARGET, _MAX_TARGET = 16, 512


class SparePool:
    """A pool of empty files in ``directory``; ``take()`` never blocks on the filesystem."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(exist_ok=True)
        for stale in self.dir.iterdir():
            with contextlib.suppress(OSError):
                stale.unlink()
        self._free: list[Path] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._target = _MIN_TARGET
        self._taken = 0  # since the last refill: how fast spares go decides the next target
        self._serial = 0
        self._thread: threading.Thread | None = None

    def take(self) -> Path | None:
        """An empty file to write and rename, or None (then the caller makes its own)."""
        with self._lock:
            if self._thread is None and not self._stop:
                self._thread = threading.Thread(target=self._refill_loop, daemon=True,
                                                name="spare-files")
                self._thread.start()
            self._taken += 1
            spare = self._free.pop() if self._free else None
            if len(self._free) < self._target // 2:
                self._wake.set()
        return spare

    def close(self) -> None:
        with self._lock:
            self._stop = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join()

    def __len__(self) -> int:
        with self._lock:
            return len(self._free)

    def _refill_loop(self) -> None:
        with contextlib.suppress(OSError):  # below the node's request threads
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                if self._stop:
                    return
                # a burst that emptied half the pool doubles it (a 64 MiB Push takes ~20)
                self._target = max(_MIN_TARGET, min(_MAX_TARGET, max(self._target,
                                                                      2 * self._taken)))
                self._taken = 0
                want = self._target - len(self._free)
            for _ in range(want):
                path = self._make()
                if path is None:
                    break
                with self._lock:
                    if self._stop:
                        return
                    self._free.append(path)

    def _make(self) -> Path | None:
        self._serial += 1
        path = self.dir / f"{os.getpid()}-{self._serial}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
        except OSError as exc:  # a full disk or a removed directory: writes make their own
            log.debug("no spare file: %s", exc)
            return None
        return path

"""User modules compiled once, in the zygote, and inherited by every later worker.

The zygote only *compiles* (never executes) user source; the code runs in single-use
workers. Compiling a 250-line module costs ~2.5 ms, more than the rest of a call, so a
deployed module should not be compiled per call. The cache is small (it is copied into
every fork's page tables) and keyed by a hash of filename and source, so a key can only
ever name the exact source it was computed from. Stdlib only.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from types import CodeType

MAX_SOURCE = 128 * 1024  # per module
MAX_TOTAL = 1024 * 1024  # all cached sources together


def cache_key(source: str, filename: str) -> str:
    return hashlib.sha256(f"{filename}\0{source}".encode()).hexdigest()


class CodeCache:
    def __init__(self, max_total: int = MAX_TOTAL) -> None:
        self.max_total = max_total
        self.entries: OrderedDict[str, tuple[CodeType, int]] = OrderedDict()
        self.total = 0

    def add(self, source: str, filename: str) -> bool:
        """Compile and keep; False if too large or not compilable (the worker then compiles
        it itself and reports the SyntaxError to the user)."""
        size = len(source)
        if size > MAX_SOURCE:
            return False
        key = cache_key(source, filename)
        if key in self.entries:
            self.entries.move_to_end(key)
            return True
        try:
            code = compile(source, filename, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
            return False
        self.entries[key] = (code, size)
        self.total += size
        while self.total > self.max_total:
            _, (_, old) = self.entries.popitem(last=False)
            self.total -= old
        return True

    def get(self, key: object) -> CodeType | None:
        entry = self.entries.get(key) if isinstance(key, str) else None
        return entry[0] if entry else None

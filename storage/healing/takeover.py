"""Leader takeover: who may rebuild a file when its repair leader seems slow or gone.

Apart from the repair loop (repair.py) because it is a small protocol between repairers:
the m+1 manifest holders of a file are ranked by closeness to ``manifest_key(cid)`` and the
first is the file's repair leader. Holder r rebuilds only when every holder ranked before it
is down or has not checked the file for about two of its passes, asked with the sealed peer
call ``repair.Progress`` (answered by ``Repairer.progress``). So a slow, rate-limited leader keeps
its files, a dead or wedged one loses them, and two repairers never rebuild the same fragment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from mesh.errors import MeshError

# (peer, cid) -> the peer's Repairer.progress(cid) (the sealed call repair.Progress)
AskProgress = Callable[[bytes, str], Awaitable[dict[str, Any]]]


async def someone_ahead_is_on_it(ask: AskProgress | None, cid: str, ahead: list[bytes],
                                 interval: float) -> bool:
    """True if a manifest holder ranked before this node is up and checking the file."""
    for peer in ahead:
        if ask is None:
            return False
        try:
            doc = await asyncio.wait_for(ask(peer, cid), 10.0)
        except (MeshError, TimeoutError, ValueError):
            continue
        age = doc.get("age_s")
        fresh = isinstance(age, int | float) and age < 2 * (
            float(doc.get("interval_s", interval)) + float(doc.get("pass_s", 0))) + 5
        if doc.get("busy") or fresh:
            return True
    return False

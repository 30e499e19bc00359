"""Test-only: this node keeps its fragments and says so, but serves none of them.

Put this directory and the checkout on a node's PYTHONPATH (tests/system/test_audit.py does)
to make it a holder that answers HasFragments truthfully and every FetchFragment with an
instant "busy" (UNAVAILABLE): no single audit can tell it from a loaded holder, the
repeated ones must.
"""

import sys

from mesh.errors import UnavailableError
from storage.fragment_handlers import FragmentHandlers


async def _busy_fetch_fragment(self: FragmentHandlers, body: bytes) -> list[bytes]:
    raise UnavailableError("busy, try later")


FragmentHandlers.fetch_fragment = _busy_fetch_fragment  # type: ignore[method-assign,assignment]
print(f"WITHHOLDER: FetchFragment answers busy ({FragmentHandlers.__module__} from "
      f"{sys.modules[FragmentHandlers.__module__].__file__})", file=sys.stderr, flush=True)

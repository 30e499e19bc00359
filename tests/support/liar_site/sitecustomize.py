"""Test-only: this node lies in storage.HasFragments, answering "present" for every hash.

Put this directory and the checkout on a node's PYTHONPATH (tests/system/test_audit.py does)
to make it a holder that dropped its fragments but says it keeps them. Only HasFragments is
patched: FetchFragment still answers honestly (NOT_FOUND for what is gone), which is what an
audit by retrieval must catch.
"""

import sys

from proto import storage_pb2
from storage.fragment_handlers import FragmentHandlers


async def _lying_has_fragments(self: FragmentHandlers, body: bytes) -> bytes:
    req = storage_pb2.HasFragmentsRequest.FromString(body)
    return storage_pb2.HasFragmentsReply(present=[True] * len(req.hashes)).SerializeToString()


FragmentHandlers.has_fragments = _lying_has_fragments  # type: ignore[method-assign]
print(f"LIAR: HasFragments answers present for every hash ({FragmentHandlers.__module__} "
      f"from {sys.modules[FragmentHandlers.__module__].__file__})", file=sys.stderr, flush=True)

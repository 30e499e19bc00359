"""Storage peer calls: handlers a node serves over the sealed channel, and a typed client.

Methods (all unary; a fragment is one stripe / k bytes, at most MAX_FRAGMENT_BYTES, far below
the channel's 64 MiB frame):
    storage.StoreFragment   StoreFragmentRequest  -> StoreFragmentReply
    storage.FetchFragment   FetchFragmentRequest  -> FetchFragmentReply
    storage.HasFragments    HasFragmentsRequest   -> HasFragmentsReply
    storage.DeleteFragment  DeleteFragmentRequest -> DeleteFragmentReply
    storage.StoreManifest   StoreManifestRequest  -> StoreManifestReply
    storage.FetchManifests  FetchManifestsRequest -> FetchManifestsReply
    storage.StoreDocument   StoreDocumentRequest  -> StoreDocumentReply
    storage.FetchDocument   FetchDocumentRequest  -> FetchDocumentReply
    storage.StoreBatch      several StoreFragment/StoreManifest/StoreDocument requests in one
                            call (framing: storage/peer_wire.py), each answered on its own

StoreBatch exists because a small Push sends a fragment and its manifest/document records to
the same peers (in a five-node mesh every peer): one sealed call per peer instead of two or
three, each channel call costing far more CPU than a 256 KiB fragment's checks.

The handlers are storage/peer_handlers.py (method table and dispatch) over
storage/fragment_handlers.py and storage/record_handlers.py, the client storage/peer_client.py,
what both share (limits, parsing, framing) storage/peer_wire.py; every name is importable from
here.
"""

from storage.fragment_handlers import MAX_BATCH
from storage.peer_client import FETCH_TIMEOUT_S, STORE_BATCH_SHARE, StorageClient, Transport
from storage.peer_handlers import MAX_STORE_BATCH_BYTES, StorageHandlers
from storage.peer_wire import (
    MAX_FRAGMENT_BYTES,
    MAX_STORE_BATCH_ITEMS,
    FragmentItem,
    StoreItem,
)
from storage.peer_wire import _with_data as _with_data  # tests/storage/test_inline.py

__all__ = ["FETCH_TIMEOUT_S", "MAX_BATCH", "MAX_FRAGMENT_BYTES", "MAX_STORE_BATCH_BYTES",
           "MAX_STORE_BATCH_ITEMS", "STORE_BATCH_SHARE", "FragmentItem", "StorageClient",
           "StorageHandlers", "StoreItem", "Transport"]

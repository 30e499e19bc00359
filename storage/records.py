"""A Push's two signed records in one round: its manifest and its document record.

The manifest goes to the m+1 XOR-closest peers of ``manifest_key(cid)``, the document record
(file_id -> CID, storage/documents.py) to the closest peers of ``document_key(file_id)``. The
two sets are drawn independently, so they overlap (3 of 5 each in a five-node mesh share ~2
peers): a peer in both gets one StoreManifest call carrying both records, the others one call
each, all at once. The Push is acknowledged after every call has answered, i.e. after the
records are durable (storage/records_db.py) on every peer that accepted them.
"""

from __future__ import annotations

import asyncio
import logging

from mesh.errors import MeshError
from proto import storage_pb2
from storage.documents import document_key
from storage.manifest import manifest_key
from storage.placement import Network

log = logging.getLogger(__name__)


async def store_records(network: Network, signed: storage_pb2.SignedManifest, cid: str,
                        replicas: int, document: storage_pb2.SignedDocument | None,
                        file_id: str, doc_replicas: int) -> tuple[int, int]:
    """(manifest replicas stored, document replicas stored); the record is sent if given."""
    mpeers = await network.closest(manifest_key(cid), replicas)
    dpeers = await network.closest(document_key(file_id), doc_replicas) if document else []

    async def manifest_to(node_id: bytes) -> tuple[bool, bool]:
        extra = document if node_id in dpeers else None
        try:
            doc = await (await network.client(node_id)).store_manifest(signed, extra)
        except MeshError as exc:
            log.warning("manifest of %s not stored on %s: %s", cid, node_id.hex()[:16], exc)
            return False, False
        return True, doc

    async def document_to(node_id: bytes) -> tuple[bool, bool]:
        assert document is not None
        try:
            await (await network.client(node_id)).store_document(document)
        except MeshError as exc:
            log.info("document %s not stored on %s: %s", file_id, node_id.hex()[:16], exc)
            return False, False
        return False, True

    done = await asyncio.gather(*(manifest_to(p) for p in mpeers),
                                *(document_to(p) for p in dpeers if p not in mpeers))
    return sum(m for m, _ in done), sum(d for _, d in done)

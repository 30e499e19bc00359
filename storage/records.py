"""A Push's two signed records in one round: its manifest and its document record.

The manifest goes to the m+1 XOR-closest peers of ``manifest_key(cid)``, the document record
(file_id -> CID, storage/documents.py) to the closest peers of ``document_key(file_id)``. The
two sets are drawn independently, so they overlap (3 of 5 each in a five-node mesh share ~2
peers): a peer in both gets one StoreManifest call carrying both records, the others one call
each, all at once. A replica that fails, or leaves its store unanswered past the Push's tail
delay while a spare is left (storage/tail.py), is replaced by the next-closest peer, where
readers look once it is gone. The Push is acknowledged after every call has answered, i.e.
after the records are durable (storage/records_db.py) on every peer that accepted them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from mesh.errors import MeshError
from proto import storage_pb2
from storage.documents import document_key
from storage.manifest import manifest_key
from storage.placement import Network
from storage.tail import Tail, on_spare

log = logging.getLogger(__name__)
SPARE_REPLICAS = 2       # next-closest peers drawn beside the replicas, to replace failed ones


@dataclass
class RecordPeers:
    """Where a file's manifest and document record go: replicas first, then spares."""

    manifests: list[bytes]
    documents: list[bytes]
    manifest_spares: list[bytes] = field(default_factory=list)
    document_spares: list[bytes] = field(default_factory=list)


async def record_peers(network: Network, cid: str, replicas: int, file_id: str | None,
                       doc_replicas: int, tail: Tail) -> RecordPeers:
    """The closest live peers for the records, skipping those this Push gave up on."""
    async def ranked(key: bytes, n: int) -> tuple[list[bytes], list[bytes]]:
        found = [p for p in await network.closest(key, n + SPARE_REPLICAS) if p not in tail.stuck]
        return found[:n], found[n:]

    mpeers, mspares = await ranked(manifest_key(cid), replicas)
    dpeers, dspares = (await ranked(document_key(file_id), doc_replicas)
                       if file_id is not None else ([], []))
    return RecordPeers(mpeers, dpeers, mspares, dspares)


async def manifest_to_spare(network: Network, peers: RecordPeers, tail: Tail,
                            signed: storage_pb2.SignedManifest, cid: str) -> bool:
    async def store(peer: bytes) -> bool:
        return await (await network.client(peer)).store_manifest(signed)
    return await on_spare(peers.manifest_spares, tail, store, f"manifest of {cid}") is not None


async def document_to_spare(network: Network, peers: RecordPeers, tail: Tail,
                            document: storage_pb2.SignedDocument, file_id: str) -> bool:
    async def store(peer: bytes) -> None:
        await (await network.client(peer)).store_document(document)
    return await on_spare(peers.document_spares, tail, store,
                          f"document record of {file_id}") is not None


async def store_records(network: Network, signed: storage_pb2.SignedManifest, cid: str,
                        replicas: int, document: storage_pb2.SignedDocument | None,
                        file_id: str, doc_replicas: int,
                        tail: Tail | None = None) -> tuple[int, int]:
    """(manifest replicas stored, document replicas stored); the record is sent if given."""
    tail = tail or Tail()
    peers = await record_peers(network, cid, replicas, file_id if document else None,
                               doc_replicas, tail)

    async def manifest_to(node_id: bytes) -> tuple[bool, bool]:
        extra = document if node_id in peers.documents else None
        try:
            client = await network.client(node_id)
            spare = bool(peers.manifest_spares) and (extra is None or bool(peers.document_spares))
            doc = await tail.call(node_id, lambda: client.store_manifest(signed, extra), spare)
        except MeshError as exc:
            log.warning("manifest of %s not stored on %s: %s", cid, node_id.hex()[:16], exc)
            m = await manifest_to_spare(network, peers, tail, signed, cid)
            d = extra is not None and await document_to_spare(network, peers, tail, extra, file_id)
            return m, d
        return True, doc

    async def document_to(node_id: bytes) -> tuple[bool, bool]:
        assert document is not None
        try:
            client = await network.client(node_id)
            await tail.call(node_id, lambda: client.store_document(document),
                            bool(peers.document_spares))
        except MeshError as exc:
            log.info("document %s not stored on %s: %s", file_id, node_id.hex()[:16], exc)
            return False, await document_to_spare(network, peers, tail, document, file_id)
        return False, True

    done = await asyncio.gather(*(manifest_to(p) for p in peers.manifests),
                                *(document_to(p) for p in peers.documents
                                  if p not in peers.manifests))
    return sum(m for m, _ in done), sum(d for _, d in done)

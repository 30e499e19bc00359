"""Where a Push's bytes go: fragments to their holders (spares when one fails), the manifest
and document record to their replicas; one StoreBatch call per peer for a one-stripe Push.

The choice of holders is per upload (``Placer``): once a holder fails, the stripes after it
go straight to its replacement. A holder or replica that leaves a store unanswered past the
Push's tail delay counts as failed (storage/tail.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging

import nacl.signing

from mesh.errors import MeshError, UnavailableError
from proto import storage_pb2
from storage.codec import Codec
from storage.documents import Documents, sign_document
from storage.late_stores import LateStores
from storage.peer import StoreItem
from storage.placement import Network, assign
from storage.records import (
    RecordPeers,
    document_to_spare,
    manifest_to_spare,
    record_peers,
    store_records,
)
from storage.results import PushOptions
from storage.tail import Tail

log = logging.getLogger(__name__)


class Placer:
    """Holder choice for one upload: primaries by index, spares for failed holders."""

    def __init__(self, ranked: list[bytes], n: int) -> None:
        self.current = assign(ranked[:n], n)
        self.spares = ranked[n:]
        self.failed: set[bytes] = set()
        self.holders: list[bytes] = []
        self._slot: dict[bytes, int] = {}

    def slot(self, node_id: bytes) -> int:
        if node_id not in self._slot:
            self._slot[node_id] = len(self.holders)
            self.holders.append(node_id)
        return self._slot[node_id]

    def has_spare(self) -> bool:
        """A peer holding nothing of this upload is left to take over a failed holder's share."""
        return any(s not in self.failed for s in self.spares)

    def replace(self, index: int, bad: bytes) -> bytes | None:
        self.failed.add(bad)
        if self.current[index] != bad and self.current[index] not in self.failed:
            return self.current[index]          # another stripe already replaced it
        while self.spares:
            spare = self.spares.pop(0)
            if spare not in self.failed:
                self.current[index] = spare
                return spare
        others = [h for h in dict.fromkeys(self.current) if h not in self.failed]
        if others:
            self.current[index] = others[index % len(others)]
            return self.current[index]
        return None


class Uploader:
    """Stores a Push's fragments and records over the network; counts fragment failures."""

    def __init__(self, network: Network, documents: Documents,
                 counters: dict[str, int]) -> None:
        self.network = network
        self.documents = documents
        self.counters = counters

    async def store_records(self, signed: storage_pb2.SignedManifest,
                            owner: nacl.signing.SigningKey, opts: PushOptions,
                            nonce: bytes, tail: Tail | None = None) -> tuple[int, int]:
        """Manifest and (unless opts.document is off) document record, one concurrent round;
        returns (manifest replicas, document replicas) stored (storage/records.py)."""
        body = storage_pb2.ManifestBody.FromString(signed.body)
        doc = sign_document(body.file_id, nonce, body.cid, owner) if opts.document else None
        tail = tail or Tail(self.counters, on_stuck=self.network.suspect)
        replicas, docs = await store_records(self.network, signed, body.cid, body.m + 1, doc,
                                             body.file_id, self.documents.replicas, tail)
        return replicas, docs if opts.document else 1

    def _fragment_failed(self, i: int, index: int, holder: bytes, exc: MeshError) -> None:
        self.counters["fragment_failures"] += 1
        log.warning("storing fragment %d of stripe %d on %s failed: %s", i, index,
                    holder.hex()[:16], exc)

    async def place(self, file_id: str, index: int, i: int, frags: list[memoryview],
                    stripe: storage_pb2.Stripe, placer: Placer, holder: bytes | None,
                    tail: Tail, late: LateStores) -> bool:
        """Store fragment i of stripe ``index`` on holder, else on spares; True if stored.
        A store the tail gives up may still land: ``late`` remembers it."""
        while holder is not None:
            try:
                client = await self.network.client(holder)
                digest = stripe.fragments[i].hash
                store = functools.partial(client.store_fragment, file_id, index * 256 + i,
                                          frags[i], digest, hashed=True)
                await tail.call(holder, late.watch(holder, file_id, [digest], store),
                                placer.has_spare())
            except MeshError as exc:
                self._fragment_failed(i, index, holder, exc)
                holder = placer.replace(i, holder)
                continue
            stripe.fragments[i].holder = placer.slot(holder)
            return True
        return False

    async def send_stripe(self, file_id: str, index: int, frags: list[memoryview],
                          stripe: storage_pb2.Stripe, placer: Placer, codec: Codec,
                          tail: Tail, late: LateStores) -> int:
        placed = sum(await asyncio.gather(*(
            self.place(file_id, index, i, frags, stripe, placer, placer.current[i], tail, late)
            for i in range(codec.n))))
        if placed < codec.k:
            raise UnavailableError(f"stripe {index}: only {placed} of {codec.n} fragments could "
                                   f"be stored (need at least k={codec.k})")
        return placed

    async def store_small(self, cid: str, file_id: str, frags: list[memoryview],
                          stripe: storage_pb2.Stripe, placer: Placer, codec: Codec,
                          signed: storage_pb2.SignedManifest, owner: nacl.signing.SigningKey,
                          opts: PushOptions, nonce: bytes, tail: Tail,
                          late: LateStores) -> tuple[int, int, int]:
        """A one-stripe Push's fragments, manifest and document record in one round: one
        StoreBatch call per peer carrying whatever that peer keeps (its fragments; the
        manifest if it is a manifest replica, the record if a document replica; the same
        peers as send_stripe and storage/records.py choose). A fragment whose holder failed
        then goes to spares as in send_stripe. Returns (fragments placed, manifest replicas,
        document replicas); acknowledged only after every call has answered, i.e. after all
        of it is durable where it was accepted. A peer given up on (failed, or past the tail
        delay) has its fragments placed on spares and its records stored on spare replicas.
        """
        doc = sign_document(file_id, nonce, cid, owner) if opts.document else None
        peers = await record_peers(self.network, cid, codec.m + 1,
                                   file_id if doc is not None else None,
                                   self.documents.replicas, tail)
        mpeers, dpeers = peers.manifests, peers.documents
        plan: dict[bytes, list[tuple[str, int]]] = {}
        for i, holder in enumerate(placer.current):
            plan.setdefault(holder, []).append(("fragment", i))
        for p in mpeers:
            plan.setdefault(p, []).append(("manifest", 0))
        for p in dpeers:
            if p not in mpeers:
                plan.setdefault(p, []).append(("document", 0))
        failed: list[tuple[int, bytes]] = []
        stored = {"fragment": 0, "manifest": 0, "document": 0}

        async def to_peer(peer: bytes, what: list[tuple[str, int]]) -> None:
            items = [StoreItem.of_fragment(file_id, i, frags[i], stripe.fragments[i].hash)
                     if kind == "fragment" else
                     StoreItem.of_records(signed if kind == "manifest" else None,
                                          doc if peer in dpeers else None)
                     for kind, i in what]
            results: list[bytes | MeshError]
            kinds = {kind for kind, _ in what}
            give_up = ("fragment" not in kinds or placer.has_spare()) and \
                ("manifest" not in kinds or bool(peers.manifest_spares)) and \
                (peer not in dpeers or bool(peers.document_spares))
            try:
                client = await self.network.client(peer)
                hashes = [stripe.fragments[i].hash for kind, i in what if kind == "fragment"]
                results = await tail.call(peer, late.watch(
                    peer, file_id, hashes, lambda: client.store_batch(items)), give_up)
            except MeshError as exc:
                results = [exc] * len(items)
            for (kind, i), r in zip(what, results, strict=True):
                if isinstance(r, MeshError):
                    if kind == "fragment":
                        self._fragment_failed(i, 0, peer, r)
                        failed.append((i, peer))
                    else:
                        log.warning("%s of %s not stored on %s: %s", kind, cid, peer.hex()[:16], r)
                        await self._records_to_spares(kind, peer, peers, tail, signed, doc,
                                                      cid, file_id, stored)
                    continue
                stored[kind] += 1
                if kind == "fragment":
                    stripe.fragments[i].holder = placer.slot(peer)
                elif kind == "manifest" and peer in dpeers and storage_pb2.StoreManifestReply \
                        .FromString(r).document_stored:
                    stored["document"] += 1

        await asyncio.gather(*(to_peer(p, w) for p, w in plan.items()))
        retried = await asyncio.gather(*(
            self.place(file_id, 0, i, frags, stripe, placer, placer.replace(i, bad), tail, late)
            for i, bad in failed))
        placed = stored["fragment"] + sum(retried)
        if placed < codec.k:
            raise UnavailableError(f"stripe 0: only {placed} of {codec.n} fragments could "
                                   f"be stored (need at least k={codec.k})")
        return placed, stored["manifest"], stored["document"] if doc is not None else 1

    async def _records_to_spares(self, kind: str, peer: bytes, peers: RecordPeers, tail: Tail,
                                 signed: storage_pb2.SignedManifest,
                                 doc: storage_pb2.SignedDocument | None, cid: str, file_id: str,
                                 stored: dict[str, int]) -> None:
        """A failed peer's records go to spare replicas (one StoreBatch item carried both)."""
        if kind == "manifest" and await manifest_to_spare(self.network, peers, tail, signed, cid):
            stored["manifest"] += 1
        if doc is not None and peer in peers.documents and await document_to_spare(
                self.network, peers, tail, doc, file_id):
            stored["document"] += 1

    async def store_manifest(self, cid: str, signed: storage_pb2.SignedManifest,
                             replicas: int, tail: Tail | None = None) -> int:
        """A (new) manifest on the m+1 closest peers, failed or stuck ones replaced by spares."""
        tail = tail or Tail(self.counters, on_stuck=self.network.suspect)
        peers = await record_peers(self.network, cid, replicas, None, 0, tail)

        async def one(node_id: bytes) -> bool:
            try:
                client = await self.network.client(node_id)
                await tail.call(node_id, lambda: client.store_manifest(signed),
                                bool(peers.manifest_spares))
            except MeshError as exc:
                log.warning("manifest of %s not stored on %s: %s", cid, node_id.hex()[:16], exc)
                return await manifest_to_spare(self.network, peers, tail, signed, cid)
            return True

        return sum(await asyncio.gather(*(one(p) for p in peers.manifests)))

"""Local DHT storage that holds only signed records (Kademlia section 2.5: <key, value> pairs).

A key holds a ``RecordSet``: records from several owners (e.g. several providers of one
function), newest per owner. Every record is verified on the way in, must live at
``record_key(kind, owner_key, name)``, may not be older than what is held for the same owner,
and is dropped at its ``expires_ms``. The encoded set stays under ``MAX_SET_BYTES`` so that it
fits one kademlia (rpcudp) datagram.

Any key can sign a record (a fresh key costs nothing) and choose its expiry, so what a storing
node keeps is bounded and first come, first served:

* a key's space is never taken from a held record: a record that does not fit its key's set
  is refused (before, the records expiring soonest were evicted, so records with a far expiry
  pushed out a function name's owner claim or its providers);
* a record may live at most ``MAX_TTL_S`` (the longest any record needs: deploys and secrets,
  7 days), so whatever a flood left behind goes away;
* all keys together hold at most ``MAX_STORED_BYTES`` of records; past it a new key (or a
  growing set) is refused until records expire (before, each key named by a STORE took memory
  for good);
* a STORE from a peer is charged to an account (quota.py): one account holds at most 4 records
  of a key and 1/8 of the budget, so a key's slots or the budget need many admitted peers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from google.protobuf.message import DecodeError
from kademlia.storage import IStorage

from mesh.dht.quota import Ledger, account_for
from mesh.errors import RecordError
from mesh.records import check_store, now_ms, record_key, verify_record
from proto import mesh_pb2

MAX_SET_BYTES = 7000
MAX_RECORDS_PER_KEY = 32
MAX_TTL_S = 8 * 86400.0              # deploy claims and secrets live 7 days; some slack
MAX_STORED_BYTES = 32 * 2**20        # every key's records together (encoded)
PURGE_INTERVAL_S = 1.0               # full sweeps for expired records, at most this often

_Ident = tuple[bytes, str, bytes]


def _ident(record: mesh_pb2.SignedRecord) -> _Ident:
    return (record.owner_key, record.kind, record.name)


def check_record(key: bytes, record: mesh_pb2.SignedRecord, *, at_ms: int | None = None) -> None:
    """Raise RecordError unless ``record`` verifies and belongs at DHT key ``key``."""
    verify_record(record, at_ms=at_ms)
    if record.expires_ms > (now_ms() if at_ms is None else at_ms) + MAX_TTL_S * 1000:
        raise RecordError(f"record claims a lifetime over {MAX_TTL_S / 86400:g} days")
    if record_key(record.kind, record.owner_key, record.name) != key:
        raise RecordError("record does not belong at this key")


def encode_set(records: Iterable[mesh_pb2.SignedRecord]) -> bytes:
    return mesh_pb2.RecordSet(records=list(records)).SerializeToString(deterministic=True)


def decode_set(data: object) -> list[mesh_pb2.SignedRecord]:
    """Parse RecordSet bytes from the wire (anything else raises RecordError)."""
    if not isinstance(data, bytes) or len(data) > MAX_SET_BYTES + 1024:
        raise RecordError("value is not a RecordSet of acceptable size")
    rset = mesh_pb2.RecordSet()
    try:
        rset.ParseFromString(data)
    except DecodeError as exc:
        raise RecordError("value is not a valid RecordSet") from exc
    return list(rset.records)


def merge_verified(key: bytes, records: Iterable[mesh_pb2.SignedRecord]
                   ) -> list[mesh_pb2.SignedRecord]:
    """Verify each record again and keep the newest per owner (replaces kademlia's
    "most common value" rule, section 2.3's find_value)."""
    best: dict[_Ident, mesh_pb2.SignedRecord] = {}
    at = now_ms()
    for record in records:
        try:
            check_record(key, record, at_ms=at)
        except RecordError:
            continue
        held = best.get(_ident(record))
        if held is None or record.seq > held.seq:
            best[_ident(record)] = record
    return sorted(best.values(), key=lambda r: (r.owner_key, r.kind, r.name))


class RecordStorage(IStorage):  # type: ignore[misc]
    """In-memory record store keyed by 20-byte DHT keys."""

    def __init__(self, max_bytes: int = MAX_STORED_BYTES) -> None:
        self._data: dict[bytes, dict[_Ident, mesh_pb2.SignedRecord]] = {}
        self._stored_at: dict[bytes, float] = {}
        self._sizes: dict[bytes, int] = {}       # encoded size of each key's set
        self.max_bytes = max_bytes
        self.stored_bytes = 0
        self._purged = float("-inf")
        self.ledger = Ledger()
        # Set by Membership: whether a node ID is a live peer this node admitted.
        self.is_peer: Callable[[bytes], bool] = lambda _node_id: False

    def put(self, key: bytes, record: mesh_pb2.SignedRecord, sender: bytes | None = None
            ) -> bool:
        """Store one record; False when it is refused as stale or does not fit (its key's set,
        or the store's budget: a held record is never evicted to make room).

        ``sender``: the admitted peer whose STORE brought it (None: this node itself).
        Raises RecordError when the record is forged, expired, at the wrong key, refused by
        its kind's store policy (``mesh.records.register_store_policy``) or over its
        account's quota (quota.py).
        """
        check_record(key, record)
        held = self._records(key)
        check_store(record, list(held.values()))
        account = None if sender is None else account_for(record, sender, self.is_peer)
        ident = _ident(record)
        old = held.get(ident)
        if old is not None:
            if record.seq < old.seq:
                return False
            if record.seq == old.seq:
                return record.signature == old.signature
        held[ident] = record
        size = len(encode_set(held.values()))
        if len(held) > MAX_RECORDS_PER_KEY or size > MAX_SET_BYTES:
            return False
        if account is not None:
            charge = (key, ident, account, record.ByteSize(), self.max_bytes)
            reason = self.ledger.check(*charge)
            if reason is not None and self._purge():    # its expired records may still count
                reason = self.ledger.check(*charge)
            if reason is not None:
                raise RecordError(reason)
        grow = size - self._sizes.get(key, 0)
        if grow > 0 and self.stored_bytes + grow > self.max_bytes and not self._room(grow):
            return False
        self._set(key, held, size)
        self.ledger.charge(key, ident, account, record.ByteSize())
        self._stored_at[key] = time.monotonic()
        return True

    def _set(self, key: bytes, held: dict[_Ident, mesh_pb2.SignedRecord], size: int) -> None:
        self.stored_bytes += size - self._sizes.get(key, 0)
        self.ledger.keep(key, held)
        if held:
            self._data[key], self._sizes[key] = held, size
        else:
            self._data.pop(key, None)
            self._sizes.pop(key, None)
            self._stored_at.pop(key, None)

    def _room(self, grow: int) -> bool:
        """Drop expired records everywhere and say whether ``grow`` more bytes now fit."""
        self._purge()
        return self.stored_bytes + grow <= self.max_bytes

    def _purge(self) -> bool:
        """Drop expired records everywhere, at most every PURGE_INTERVAL_S (True if it ran)."""
        now = time.monotonic()
        if now - self._purged < PURGE_INTERVAL_S:
            return False
        self._purged = now
        for key in list(self._data):
            self._records(key)
        return True

    def put_set(self, key: bytes, data: object, sender: bytes | None = None) -> bool:
        """Store every record of a RecordSet (from ``sender``, see ``put``); True only when
        all were accepted."""
        records = decode_set(data)
        if not records:
            raise RecordError("empty RecordSet")
        accepted = True
        for record in records:
            try:
                accepted = self.put(key, record, sender) and accepted
            except RecordError:
                accepted = False
        return accepted

    def keys(self) -> list[bytes]:
        """Keys that may hold records (expired ones are dropped on access)."""
        return list(self._data)

    def records(self, key: bytes) -> list[mesh_pb2.SignedRecord]:
        return list(self._records(key).values())

    def _records(self, key: bytes) -> dict[_Ident, mesh_pb2.SignedRecord]:
        held = self._data.get(key)
        if held is None:
            return {}
        at = now_ms()
        live = {i: r for i, r in held.items() if r.expires_ms > at}
        if len(live) != len(held):
            self._set(key, live, len(encode_set(live.values())) if live else 0)
        return dict(live)

    # --- kademlia IStorage interface: values are encoded RecordSets -------------------------

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.put_set(key, value)

    def __getitem__(self, key: bytes) -> bytes:
        records = self.records(key)
        if not records:
            raise KeyError(key)
        return encode_set(records)

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        try:
            return self[key]
        except KeyError:
            return default

    def iter_older_than(self, seconds_old: float) -> Iterator[tuple[bytes, bytes]]:
        cutoff = time.monotonic() - seconds_old
        for key in [k for k, t in self._stored_at.items() if t < cutoff]:
            value = self.get(key)
            if value is not None:
                yield key, value

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        for key in list(self._data):
            value = self.get(key)
            if value is not None:
                yield key, value

    def __len__(self) -> int:
        return sum(1 for _ in self)

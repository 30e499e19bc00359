"""Who answers for each record a node stores, and how much of a key and of the budget each may
take (used by storage.py).

Any key signs records and a fresh key costs nothing, so quotas per signer alone would buy
nothing. A record is charged to its *account*: its signer when the signer stored it itself or
is a live peer this node admitted (signed IDENTIFY, admission.py), otherwise the admitted peer
that sent it. So records signed by throwaway keys are charged to whoever brings them, and that
sender needed a live UDP endpoint that passed IDENTIFY. One account holds at most
``PER_KEY`` records of a key (a key's 32 slots need 8 accounts) and ``1 / SHARE`` of the
node's record budget. A kind whose records only make sense from a live node (``provider``:
"this node serves the function", republished every few seconds) takes only its signer's own
records or a live peer's. What this node stores itself (its own records, re-stores by its own
code) is charged to no account.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mesh.errors import RecordError
from mesh.identity import node_id_for
from proto import mesh_pb2

PER_KEY = 4              # records one account may hold at one key (of MAX_RECORDS_PER_KEY)
SHARE = 8                # one account may hold at most 1/SHARE of the node's record budget
LIVE_SIGNER_KINDS = frozenset({"provider"})   # compute/registry.py: a serving node's record

Ident = tuple[bytes, str, bytes]


def account_for(record: mesh_pb2.SignedRecord, sender: bytes,
                is_peer: Callable[[bytes], bool]) -> bytes:
    """The node ID a record stored by ``sender`` (an admitted peer) is charged to."""
    signer = node_id_for(record.owner_key)
    if signer == sender or is_peer(signer):
        return signer
    if record.kind in LIVE_SIGNER_KINDS:
        raise RecordError(f"a {record.kind!r} record is stored only from its signer "
                          "or a live peer's")
    return sender


class Ledger:
    """The account and size of every charged record, and each account's total bytes."""

    def __init__(self) -> None:
        self._held: dict[bytes, dict[Ident, tuple[bytes, int]]] = {}
        self.usage: dict[bytes, int] = {}

    def check(self, key: bytes, ident: Ident, account: bytes, size: int,
              budget: int) -> str | None:
        """Why ``account`` may not hold a record of ``size`` bytes at (key, ident), or None."""
        held = self._held.get(key, {})
        old = held.get(ident)
        again = old is not None and old[0] == account
        mine = sum(1 for who, _ in held.values() if who == account)
        if not again and mine >= PER_KEY:
            return f"this sender holds {PER_KEY} records of this key already"
        total = self.usage.get(account, 0) + size - (old[1] if again and old else 0)
        if total > budget // SHARE:
            return f"this sender holds its share (1/{SHARE}) of the node's record budget"
        return None

    def charge(self, key: bytes, ident: Ident, account: bytes | None, size: int) -> None:
        """Charge the record now held at (key, ident) to ``account`` (None: to nobody)."""
        self._release(key, ident)
        if account is not None:
            self._held.setdefault(key, {})[ident] = (account, size)
            self.usage[account] = self.usage.get(account, 0) + size

    def keep(self, key: bytes, idents: Iterable[Ident]) -> None:
        """Forget the charges of records no longer held at ``key`` (expired, dropped)."""
        held = self._held.get(key)
        if held is None:
            return
        for ident in set(held) - set(idents):
            self._release(key, ident)

    def _release(self, key: bytes, ident: Ident) -> None:
        held = self._held.get(key)
        entry = held.pop(ident, None) if held is not None else None
        if entry is None:
            return
        left = self.usage[entry[0]] - entry[1]
        if left > 0:
            self.usage[entry[0]] = left
        else:
            del self.usage[entry[0]]
        if not held:
            del self._held[key]

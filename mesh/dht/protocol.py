"""Kademlia RPCs for the mesh: kademlia 2.2.3's ``KademliaProtocol`` subclassed.

Section numbers refer to Maymounkov & Mazières 2002. Changes from 2.2.3:

* RPC timeout configurable (default 1 s instead of rpcudp's 5 s).
* Every background task is tracked in ``_tasks`` and cancelled by ``aclose()``; malformed
  datagrams and bad RPC arguments are dropped instead of raising inside stray tasks.
* Defect 4 (section 2.5): ``welcome_if_new`` hashed the already-hashed storage keys again, so
  a joining node received the wrong keys. Keys are used as they are here.
* Defect 6 (section 2.2): replacement-list nodes are known contacts (see routing.py).
* Defect 5: a contact that fails to answer is buried (see routing.py).
* ``rpc_store`` accepts only signed records at their own key (see storage.py) and answers
  False on refusal, so the writer can count real acknowledgements. It stores only for a peer
  that returned its address token (else it answers one) and that this node admitted (a sender being admitted is answered once that ends: a joining node's
  first STOREs land), and charges what it stores to that peer's quota (quota.py).
* FIND_NODE and FIND_VALUE answer in full only a sender whose address is proven (it
  returned an address token; being admitted there is not proof, UDP sources can be spoofed):
  others get a small answer and a token
  (cookies.py), so the node cannot be used to reflect large answers onto a spoofed address.
* ``rpc_identify`` lets a node prove that it holds the key behind its node ID; it answers
  only a request padded past the answer's size (no reflection).

The outbound calls (call_*, with their address tokens) are in calls.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from rpcudp.protocol import RPCProtocol

from mesh.dht.calls import OutboundRpcs, RpcResult
from mesh.dht.cookies import AddressTokens
from mesh.dht.peers import IDENTIFY_PAD, MAX_IDENTIFY_PAD
from mesh.dht.routing import MeshRoutingTable
from mesh.dht.storage import RecordStorage
from mesh.errors import RecordError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_RPC_TIMEOUT_S", "MAX_DEFERRED_STORES", "UNVERIFIED_CONTACTS", "Contacts",
           "MeshProtocol", "RpcResult", "valid_id"]

DEFAULT_RPC_TIMEOUT_S = 1.0
UNVERIFIED_CONTACTS = 0       # FIND_NODE contacts for an unproven sender: the token only (no reflection)
MAX_DEFERRED_STORES = 64      # STOREs waiting for their sender's admission
Contacts = list[tuple[bytes, str, int]]


def valid_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == 20


class MeshProtocol(OutboundRpcs, KademliaProtocol):  # type: ignore[misc]
    """UDP RPC endpoint of one node: PING, STORE, FIND_NODE, FIND_VALUE (section 2.3), IDENTIFY."""

    def __init__(self, source_node: Node, storage: RecordStorage, ksize: int, *,
                 rpc_timeout: float = DEFAULT_RPC_TIMEOUT_S) -> None:
        RPCProtocol.__init__(self, wait_timeout=rpc_timeout)
        self.source_node = source_node
        self.storage = storage
        self.router = MeshRoutingTable(self, ksize, source_node)
        self.rpc_count = 0
        self.rtt = 0.005  # smoothed round-trip time of answered calls (s)
        self.reply_size = 2 * ksize  # FIND_NODE answers: see rpc_find_node
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.tokens = AddressTokens()
        self._deferred = 0
        # Hooks set by Membership: admission gate, failure report, identify answer, whether a
        # sender is admitted at its address, and admission itself. Without them (the bare
        # kademlia layers) every sender counts as admitted.
        self.gate: Callable[[Node], bool] | None = None
        self.on_failure: Callable[[Node], None] | None = None
        self.identify_answer: Callable[[bytes, bytes], list[bytes] | None] | None = None
        self.admitted: Callable[[Node], bool] | None = None
        self.admit: Callable[[Node], Awaitable[bool]] | None = None

    # --- inbound RPCs (section 2.3) ----------------------------------------------------------

    def _sender(self, sender: tuple[str, int], nodeid: object) -> Node:
        if not valid_id(nodeid):
            raise ValueError("sender node id must be 20 bytes")
        assert isinstance(nodeid, bytes)
        source = Node(nodeid, sender[0], sender[1])
        self.welcome_if_new(source)
        return source

    def rpc_ping(self, sender: tuple[str, int], nodeid: object) -> bytes:
        self._sender(sender, nodeid)
        node_id: bytes = self.source_node.id
        return node_id

    def _verified(self, source: Node, token: object) -> bool:
        """Whether ``source`` receives at its address: it sent the token we gave it there.
        Being admitted at the address is not enough: UDP source addresses can be spoofed,
        an admitted peer's as well as anyone's."""
        return self.admitted is None or self.tokens.valid(token, (source.ip, source.port))

    def rpc_store(self, sender: tuple[str, int], nodeid: object, key: object, value: object,
                  token: object = None) -> bool | dict[str, bytes] | Coroutine[Any, Any, bool]:
        """STORE: accept only verified, current signed records at their own key, from an
        admitted peer (one being admitted is answered when its admission ends) that proved
        its address with our token (else the answer is a token to store again with: a
        datagram spoofed from a peer's address is not charged to that peer's quota)."""
        source = self._sender(sender, nodeid)
        if not valid_id(key):
            return False
        assert isinstance(key, bytes)
        if self.admitted is None:
            return self._store(None, key, value)
        if not self._verified(source, token):
            return {"token": self.tokens.issue((source.ip, source.port))}
        if self.admitted(source):
            return self._store(source, key, value)
        if self.admit is None or self._deferred >= MAX_DEFERRED_STORES:
            return False
        return self._store_once_admitted(source, key, value)

    async def _store_once_admitted(self, source: Node, key: bytes, value: object) -> bool:
        assert self.admit is not None
        self._deferred += 1
        try:
            admitted = await self.admit(source)
        finally:
            self._deferred -= 1
        if not admitted:
            log.debug("refused store at %s from %s:%s: not an admitted peer",
                      key.hex()[:8], source.ip, source.port)
        return admitted and self._store(source, key, value)

    def _store(self, source: Node | None, key: bytes, value: object) -> bool:
        try:
            return self.storage.put_set(key, value, None if source is None else source.id)
        except RecordError as exc:
            log.debug("refused store at %s from %s: %s", key.hex()[:8], source, exc)
            return False

    def _contacts(self, source: Node, key: object, token: object) -> Contacts | dict[str, Any]:
        if not valid_id(key):
            raise ValueError("key must be 20 bytes")
        assert isinstance(key, bytes)
        # Up to 2k contacts, not k: right after many nodes crash, a responder's k closest can be
        # mostly dead, and the live ones just beyond them must still reach the asker.
        neighbors = self.router.find_neighbors(Node(key), k=self.reply_size, exclude=source)
        contacts = [(n.id, n.ip, n.port) for n in neighbors]
        if self._verified(source, token):
            return contacts
        return {"nodes": contacts[:UNVERIFIED_CONTACTS],
                "token": self.tokens.issue((source.ip, source.port))}

    def rpc_find_node(self, sender: tuple[str, int], nodeid: object, key: object,
                      token: object = None) -> Contacts | dict[str, Any]:
        return self._contacts(self._sender(sender, nodeid), key, token)

    def rpc_find_value(self, sender: tuple[str, int], nodeid: object, key: object,
                       token: object = None) -> Contacts | dict[str, Any]:
        """FIND_VALUE: the RecordSet held at ``key`` (to a proven address; others get a token
        to ask again with) or, failing that, the closest contacts."""
        source = self._sender(sender, nodeid)
        value = self.storage.get(key) if isinstance(key, bytes) and valid_id(key) else None
        if value is None:
            return self._contacts(source, key, token)
        if self._verified(source, token):
            return {"value": value}
        return {"token": self.tokens.issue((source.ip, source.port))}

    def rpc_identify(self, sender: tuple[str, int], nodeid: object, nonce: object,
                     pad: object = None) -> list[bytes] | None:
        """IDENTIFY: our signed peer record and a signature over the caller's nonce, for a
        request padded to more than the answer (peers.py ``IDENTIFY_PAD``: no reflection)."""
        source = self._sender(sender, nodeid)
        if self.identify_answer is None or not isinstance(nonce, bytes) or len(nonce) > 64:
            return None
        if not isinstance(pad, bytes) or not IDENTIFY_PAD <= len(pad) <= MAX_IDENTIFY_PAD:
            return None
        return self.identify_answer(nonce, source.id)

    # --- contacts --------------------------------------------------------------------------

    def handle_call_response(self, result: RpcResult, node: Node) -> RpcResult:
        """A reply welcomes the node; silence buries it (defect 5), or with an ``on_failure``
        hook marks it suspect and reports it for confirmation."""
        if not result[0]:
            if self.on_failure is None:
                self.router.bury(node)
            elif not self.closed:  # the owner confirms before declaring the node dead
                self.router.suspect(node)
                self.on_failure(node)
            return result
        self.welcome_if_new(node)
        return result

    def welcome_if_new(self, node: Node) -> None:
        """Every caller is a direct contact from ``node``; admit it through the gate, if any."""
        if node.id == self.source_node.id or self.closed:
            return
        if self.gate is not None and not self.gate(node):
            return
        self.accept_contact(node)

    def accept_contact(self, node: Node) -> None:
        """Add or refresh a contact; new ones get the keys they should hold (section 2.5)."""
        self.router.revive(node.id)
        if not self.router.is_new_node(node):
            self.router.touch(node)
            return
        log.debug("new contact %s at %s:%s", node.id.hex()[:8], node.ip, node.port)
        self._replicate_to(node)
        self.router.add_contact(node)

    def _replicate_to(self, node: Node) -> None:
        """Send ``node`` the values it should now hold (section 2.5): keys where it is among
        the k closest and this node is closer than every other contact. Defect 4: storage
        keys are already DHT keys; do not hash them again."""
        contacts = self.router.all_nodes()
        k = self.router.ksize
        for key in self.storage.keys():
            target = int.from_bytes(key, "big")
            mine = self.source_node.long_id ^ target
            if any(n.long_id ^ target < mine for n in contacts):  # early exit: cheap
                continue
            theirs = node.long_id ^ target
            value = self.storage.get(key)
            if value is not None and sum(1 for n in contacts if n.long_id ^ target < theirs) < k:
                self.spawn(self.call_store(node, key, value))

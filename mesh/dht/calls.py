"""Outbound DHT RPCs of ``MeshProtocol``: each call counted and timed (the smoothed RTT), and
lookups that carry the address token the asked node gave us (cookies.py), asking once more when
its answer brings a new one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kademlia.node import Node

from mesh.dht.cookies import AddressTokens
from mesh.dht.peers import IDENTIFY_PAD
from mesh.dht.rpc import TrackedDatagrams

RpcResult = tuple[bool, Any]


class OutboundRpcs(TrackedDatagrams):
    """Mixin for ``MeshProtocol``, before ``KademliaProtocol`` so these calls replace its own."""

    source_node: Node
    tokens: AddressTokens
    rpc_count: int
    rtt: float
    _wait_timeout: float
    handle_call_response: Callable[[RpcResult, Node], RpcResult]

    async def _call(self, name: str, node: Node, *args: Any,
                    timeout: float | None = None) -> RpcResult:
        self.rpc_count += 1
        if self.closed or self.transport is None:
            return (False, None)
        start = time.monotonic()
        result: RpcResult = await self.send_request(
            (node.ip, node.port), name, (self.source_node.id, *args),
            self._wait_timeout if timeout is None else timeout)
        if result[0]:
            self.rtt += 0.125 * (time.monotonic() - start - self.rtt)  # RFC 6298 smoothing
        return result

    async def call_ping(self, node_to_ask: Node) -> RpcResult:
        return self.handle_call_response(await self._call("ping", node_to_ask), node_to_ask)

    async def call_store(self, node_to_ask: Node, key: bytes, value: bytes) -> RpcResult:
        """STORE with the token ``node_to_ask`` gave this node; an answer that is a new token
        (none yet, or an old one) is stored again once with it."""
        result = await self._with_token("store", node_to_ask, key, value)
        return self.handle_call_response(result, node_to_ask)

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> RpcResult:
        result = await self._ask("find_node", node_to_ask, node_to_find.id)
        return self.handle_call_response(result, node_to_ask)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> RpcResult:
        result = await self._ask("find_value", node_to_ask, node_to_find.id)
        return self.handle_call_response(result, node_to_ask)

    async def _ask(self, name: str, node: Node, key: bytes) -> RpcResult:
        """A lookup RPC carrying the token ``node`` gave this node, if any. An answer with a
        new token (our address was not proven there) is asked again once with it."""
        return await self._with_token(name, node, key)

    async def _with_token(self, name: str, node: Node, *args: Any) -> RpcResult:
        addr = (node.ip, node.port)
        token = self.tokens.received(addr)
        first = await self._call(name, node, *args, *(() if token is None else (token,)))
        ok, answer = first
        fresh = answer.get("token") if ok and isinstance(answer, dict) else None
        if not isinstance(fresh, bytes) or fresh == token:
            return first
        self.tokens.remember(addr, fresh)
        again = await self._call(name, node, *args, fresh)
        return again if again[0] else first

    async def call_identify(self, node_to_ask: Node, nonce: bytes) -> RpcResult:
        """Raw identify call: the caller decides what the answer means. Admission is not
        latency-critical, so it waits five RPC timeouts (a loaded peer still gets in)."""
        return await self._call("identify", node_to_ask, nonce, bytes(IDENTIFY_PAD),
                                timeout=5 * self._wait_timeout)

"""Proxy requests served by another peer of the pool over the sealed channel.

Peer methods: "proxy.Resolve" (ResolveRequest → ResolveReply) and "proxy.Http" (HttpRequest →
HttpReply). The serving node applies its own DNS policy, its own SSRF address rules and its own
size/time caps; the worker's host allow-list travels with the request (the origin node decided
it) and is re-checked on every hop by the serving node.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError, Message

from mesh.channel import Caller
from mesh.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    MeshError,
    PeerCallError,
    ReplyTooLargeError,
    ResourceExhaustedError,
    UnavailableError,
)
from proto import mesh_pb2, proxy_pb2

from .dns import Answer, Record
from .http import Request, Response

if TYPE_CHECKING:
    from .service import ProxyService

log = logging.getLogger("tw-mesh.proxy")
MAX_PEER_TRIES = 3
# What the origin accepts from a serving peer beside the body: the header block its own
# fetch takes (httpcore's h11 refuses one over 100 KiB), in at most this many headers.
MAX_REPLY_HEADERS = 1000
MAX_REPLY_HEADER_BYTES = 100 * 1024
MAX_REPLY_URL_CHARS = 8 * 1024
MAX_RESOLVE_RECORDS = 256
MAX_RECORD_VALUE_CHARS = 4 * 1024
# The most reply bytes the channel takes for them (PeerChannel.unary's max_reply; over TCP a
# larger reply is refused at its header, unread): the caps above plus protobuf framing (a
# record's value is ≤ 4 UTF-8 bytes a character; its type, TTL and tags fit in 64).
RESOLVE_REPLY_CAP = MAX_RESOLVE_RECORDS * (4 * MAX_RECORD_VALUE_CHARS + 64) + 4096
# A peer whose answer was refused is asked last for this long: candidates are ranked by XOR to
# the domain, so without it a hostile peer nearest a domain failed every request for it.
SHUNNED_S = 600.0
MAX_SHUNNED = 1024


def check_http_reply(reply: proxy_pb2.HttpReply, max_bytes: int, peer: str) -> None:
    """Refuse a peer's answer that this node's own fetch would have refused (or that no
    HTTP server sends), naming the peer, so the function gets a reason and not the body."""
    if len(reply.body) > max_bytes:
        raise ResourceExhaustedError(
            f"peer {peer} answered with a body of {len(reply.body)} bytes, over this node's "
            f"cap of {max_bytes}; refused")
    if len(reply.headers) > MAX_REPLY_HEADERS:
        raise ResourceExhaustedError(
            f"peer {peer} answered with {len(reply.headers)} headers (at most "
            f"{MAX_REPLY_HEADERS}); refused")
    header_bytes = sum(len(h.name) + len(h.value) for h in reply.headers)
    if header_bytes > MAX_REPLY_HEADER_BYTES:
        raise ResourceExhaustedError(
            f"peer {peer} answered with {header_bytes} bytes of headers (at most "
            f"{MAX_REPLY_HEADER_BYTES}); refused")
    if not 100 <= reply.status <= 999:                  # HTTP's three digits
        raise UnavailableError(f"peer {peer} answered with HTTP status {reply.status}; refused")
    if len(reply.url) > MAX_REPLY_URL_CHARS or not reply.url.startswith(("http://",
                                                                         "https://")):
        raise UnavailableError(f"peer {peer} answered with a malformed URL; refused")


def _parse(message: Message, raw: bytes, peer: str) -> None:
    try:
        message.ParseFromString(raw)
    except DecodeError:
        raise UnavailableError(f"peer {peer} sent a malformed reply") from None


class PeerProxy:
    def __init__(self, service: ProxyService,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.clock = clock
        self.shunned: dict[bytes, float] = {}       # node id -> until (clock)
        self.stats = {"served_resolve": 0, "served_http": 0, "forwarded": 0,
                      "refused_answers": 0, "refused_unread": 0}   # over max_reply, at the header

    def _refused(self, node_id: bytes) -> None:
        """Count a refused answer; its peer is asked last for SHUNNED_S."""
        self.stats["refused_answers"] += 1
        self.shunned.pop(node_id, None)
        self.shunned[node_id] = self.clock() + SHUNNED_S
        while len(self.shunned) > MAX_SHUNNED:
            del self.shunned[next(iter(self.shunned))]

    # -- server side ---------------------------------------------------------------------------
    def register(self) -> None:
        server = self.service.ctx.channel_server
        server.handle("proxy.Resolve", self._serve_resolve)
        server.handle("proxy.Http", self._serve_http)

    def _check_serving(self) -> None:
        policy = self.service.policy
        if not policy.serve_peers or policy.via_peers:
            raise FailedPreconditionError("this node does not serve proxy requests for peers")

    async def _serve_resolve(self, caller: Caller, body: bytes) -> bytes:
        self._check_serving()
        req = proxy_pb2.ResolveRequest()
        try:
            req.ParseFromString(body)
        except DecodeError:
            raise InvalidArgumentError("malformed ResolveRequest") from None
        answer = await self.service.resolver.resolve(req.domain, req.record_type)
        self.stats["served_resolve"] += 1
        return proxy_pb2.ResolveReply(
            records=[proxy_pb2.Record(type=r.type, value=r.value, ttl=r.ttl)
                     for r in answer.records],
            cached=answer.cached, source=answer.source).SerializeToString()

    async def _serve_http(self, caller: Caller, body: bytes) -> bytes:
        self._check_serving()
        msg = proxy_pb2.HttpRequest()
        try:
            msg.ParseFromString(body)
        except DecodeError:
            raise InvalidArgumentError("malformed HttpRequest") from None
        log.info("proxy.Http for worker %s from peer %s", msg.worker[:64],
                 caller.node_id.hex()[:16])
        response = await self.service.http.fetch(Request(
            url=msg.url, method=msg.method, headers={h.name: h.value for h in msg.headers},
            body=msg.body if msg.has_body else None, timeout=msg.timeout,
            allowed_hosts=list(msg.allowed_hosts), max_bytes=int(msg.max_bytes) or 2**20))
        self.stats["served_http"] += 1
        return proxy_pb2.HttpReply(
            status=response.status, body=response.body, url=response.url,
            headers=[proxy_pb2.Header(name=k, value=v) for k, v in response.headers],
        ).SerializeToString()

    # -- client side ---------------------------------------------------------------------------
    def _candidates(self, topic: str, only: frozenset[bytes] | None = None
                    ) -> list[mesh_pb2.PeerRecord]:
        """Live compute peers (of ``only``, when given), nearest (XOR) to a hash of the topic
        first, so one name tends to be served by the same peer (its cache stays warm); peers
        whose answers were refused lately last."""
        key = int.from_bytes(hashlib.blake2b(topic.encode(), digest_size=20).digest(), "big")
        me = self.service.ctx.identity.node_id
        peers = [p.record for p in self.service.ctx.membership.live_peers()
                 if p.node_id != me and (only is None or p.node_id in only)]
        now = self.clock()
        for node_id in [n for n, until in self.shunned.items() if until <= now]:
            del self.shunned[node_id]
        peers.sort(key=lambda p: (p.node_id in self.shunned,
                                  int.from_bytes(p.node_id, "big") ^ key))
        return peers

    async def _call(self, topic: str, method: str, body: bytes, timeout: float,
                    only: frozenset[bytes] | None, max_reply: int, cap: str
                    ) -> tuple[bytes, bytes]:
        """The first peer's answer of at most ``max_reply`` bytes (``cap`` says which cap, in
        the error); a peer whose channel failed is replaced by the next, up to MAX_PEER_TRIES.
        A larger answer is a refused one and not retried: the peer may have acted on it."""
        last: MeshError = UnavailableError(
            "no peer of the pool serves proxy requests" if only is None else
            "no live peer the request's header secrets are sealed to serves proxy requests "
            "(secrets set with --node reach no other node)")
        tried = 0
        for record in self._candidates(topic, only):
            if tried >= MAX_PEER_TRIES:
                break
            tried += 1
            node_id = record.node_id
            try:
                reply = await self.service.ctx.peer(record).unary(
                    method, body, timeout=timeout, max_reply=max_reply)
                self.stats["forwarded"] += 1
                return node_id, reply
            except ReplyTooLargeError as exc:
                self._refused(node_id)
                self.stats["refused_unread"] += int(exc.unread)
                raise ResourceExhaustedError(
                    f"peer {node_id.hex()[:16]} answered with {exc.size} bytes, over {cap}; "
                    f"refused{' unread' if exc.unread else ''}") from None
            except (FailedPreconditionError, UnavailableError) as exc:
                last = exc
            except PeerCallError:
                raise
            except MeshError as exc:   # channel failures: try the next peer
                last = UnavailableError(f"peer {node_id.hex()[:16]}: {exc}")
        scope = "" if only is None else " (only nodes its header secrets are sealed to may)"
        raise UnavailableError(f"no peer could serve the request{scope}: {last}")

    async def resolve(self, domain: str, record_type: str, worker: str) -> Answer:
        body = proxy_pb2.ResolveRequest(domain=domain, record_type=record_type,
                                        worker=worker).SerializeToString()
        node_id, raw = await self._call(domain, "proxy.Resolve", body, 10.0, None,
                                        RESOLVE_REPLY_CAP, "this node's cap for DNS records")
        peer = node_id.hex()[:16]
        reply = proxy_pb2.ResolveReply()
        try:
            _parse(reply, raw, peer)
            if len(reply.records) > MAX_RESOLVE_RECORDS or any(
                    len(r.value) > MAX_RECORD_VALUE_CHARS for r in reply.records):
                raise ResourceExhaustedError(
                    f"peer {peer} answered with more or longer DNS records than this node "
                    f"takes ({MAX_RESOLVE_RECORDS} of ≤ {MAX_RECORD_VALUE_CHARS} characters); "
                    "refused")
        except (ResourceExhaustedError, UnavailableError):
            self._refused(node_id)
            raise
        return Answer([Record(r.type, r.value, r.ttl) for r in reply.records], reply.cached,
                      f"peer:{peer}")

    async def http(self, req: Request, worker: str) -> Response:
        max_bytes = min(req.max_bytes, self.service.policy.max_response_bytes)
        msg = proxy_pb2.HttpRequest(
            url=req.url, method=req.method, body=req.body or b"", has_body=req.body is not None,
            timeout=req.timeout, max_bytes=max_bytes, allowed_hosts=req.allowed_hosts,
            worker=worker, headers=[proxy_pb2.Header(name=k, value=v)
                                    for k, v in req.headers.items()])
        topic = req.url.split("/")[2] if req.url.count("/") >= 2 else req.url
        timeout = req.timeout if 0 < req.timeout <= self.service.policy.max_timeout_s \
            else self.service.policy.max_timeout_s
        node_id, raw = await self._call(      # a larger reply is refused by the channel
            topic, "proxy.Http", msg.SerializeToString(), timeout + 5.0, req.peers,
            max_bytes + MAX_REPLY_HEADER_BYTES + MAX_REPLY_URL_CHARS + 16 * MAX_REPLY_HEADERS
            + 4096, f"this node's cap of {max_bytes} for a body")     # + protobuf framing
        peer = node_id.hex()[:16]
        reply = proxy_pb2.HttpReply()
        try:
            _parse(reply, raw, peer)
            check_http_reply(reply, max_bytes, peer)
        except (ResourceExhaustedError, UnavailableError):
            self._refused(node_id)
            raise
        return Response(reply.status, [(h.name, h.value) for h in reply.headers], reply.body,
                        reply.url)

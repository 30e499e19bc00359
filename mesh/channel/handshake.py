"""Channel handshake: a SIGMA-style signed ephemeral X25519 exchange (see docs/channel.md).

    client                                               server
    HandshakeRequest{Kc, Ec, server_id, ts, nonce, sig_c(T1)}  ─►
                                                         checks sig_c, server_id == own, ts fresh
    ◄─  HandshakeResponse{Ks, Es, session_id, sig_s(T2)}
    checks hash(Ks) == server_id, sig_s
    both: dh = X25519(e, E'); keys = BLAKE2b(dh, key=H(T2 || sig_s), person=direction)

T1 covers both identities' intent (Kc, Ec, the ID the client meant to reach); T2 covers T1, the
client's signature and (Ks, Es, session_id), so swapping either ephemeral key breaks a signature
and the two sides agree on every byte that fed the keys. Ephemeral keys give forward secrecy.
Only libsodium primitives (via PyNaCl) are used: Ed25519, X25519, BLAKE2b.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.public

from mesh.errors import HandshakeError
from mesh.identity import NODE_ID_BYTES, Identity, node_id_for, verify_signature
from proto import peer_pb2

VERSION = 2            # 2: AEGIS-128L frames with 16-byte keys and nonces
KEY_BYTES = 16         # AEGIS-128L (session.py)
MAX_CLOCK_SKEW_S = 120.0
_T1 = b"tw-mesh/handshake/request/v1\x00"
_T2 = b"tw-mesh/handshake/response/v1\x00"


@dataclass(frozen=True)
class SessionKeys:
    """What a completed handshake yields for one side."""

    session_id: bytes
    send_key: bytes
    recv_key: bytes
    peer_key: bytes          # the peer's Ed25519 identity key
    peer_id: bytes           # node id derived from peer_key


def _t1(req: peer_pb2.HandshakeRequest) -> bytes:
    return b"".join([_T1, struct.pack(">IQ", req.version, req.timestamp_ms), req.client_key,
                     req.client_ephemeral, req.server_id, req.nonce])


def _t2(req: peer_pb2.HandshakeRequest, resp: peer_pb2.HandshakeResponse) -> bytes:
    return b"".join([_T2, hashlib.blake2b(_t1(req) + req.signature).digest(),
                     resp.server_key, resp.server_ephemeral, resp.session_id])


def _derive(eph_secret: bytes, peer_eph: bytes, req: peer_pb2.HandshakeRequest,
            resp: peer_pb2.HandshakeResponse) -> tuple[bytes, bytes]:
    """(client→server key, server→client key)."""
    try:
        dh = nacl.bindings.crypto_scalarmult(eph_secret, peer_eph)
    except nacl.exceptions.CryptoError as exc:   # low-order point: all-zero shared secret
        raise HandshakeError("peer sent an invalid ephemeral key") from exc
    th = hashlib.blake2b(_t2(req, resp) + resp.signature, digest_size=32).digest()
    # BLAKE2b's parameter block binds the output length, so these are not truncated 32-byte
    # keys; the personalisation binds the direction and the protocol version.
    c2s = hashlib.blake2b(dh, key=th, digest_size=KEY_BYTES, person=b"tw-mesh/2/c2s").digest()
    s2c = hashlib.blake2b(dh, key=th, digest_size=KEY_BYTES, person=b"tw-mesh/2/s2c").digest()
    return c2s, s2c


class ClientHandshake:
    """Client side: build the request, then check the response and derive keys."""

    def __init__(self, identity: Identity, server_id: bytes) -> None:
        if len(server_id) != NODE_ID_BYTES:
            raise HandshakeError(f"a node id has {NODE_ID_BYTES} bytes, got {len(server_id)}")
        self._eph = nacl.public.PrivateKey.generate()
        self._server_id = server_id
        self.request = peer_pb2.HandshakeRequest(
            version=VERSION, client_key=identity.public_key,
            client_ephemeral=bytes(self._eph.public_key), server_id=server_id,
            timestamp_ms=int(time.time() * 1000), nonce=os.urandom(16),
        )
        self.request.signature = identity.sign(_t1(self.request))

    def finish(self, resp: peer_pb2.HandshakeResponse) -> SessionKeys:
        if len(resp.server_key) != 32 or len(resp.server_ephemeral) != 32 \
                or len(resp.session_id) != 16:
            raise HandshakeError("malformed handshake response")
        if node_id_for(resp.server_key) != self._server_id:
            raise HandshakeError(
                f"peer key hashes to {node_id_for(resp.server_key).hex()[:16]}…, "
                f"not the node id {self._server_id.hex()[:16]}… we meant to reach")
        if not verify_signature(resp.server_key, _t2(self.request, resp), resp.signature):
            raise HandshakeError("peer's handshake signature does not verify")
        c2s, s2c = _derive(bytes(self._eph), resp.server_ephemeral, self.request, resp)
        return SessionKeys(resp.session_id, c2s, s2c, resp.server_key, self._server_id)


def request_digest(req: peer_pb2.HandshakeRequest) -> bytes:
    """What makes a request unique: everything the client signed (the server's replay cache
    keys on it, so a copy with another signature is still the same request)."""
    return hashlib.blake2b(_t1(req), digest_size=16).digest()


def check_request(identity: Identity, req: peer_pb2.HandshakeRequest,
                  *, now: float | None = None) -> None:
    """The checks that cost no signature operation: run before a request is charged."""
    if req.version != VERSION:
        raise HandshakeError(f"unsupported handshake version {req.version}")
    if len(req.client_key) != 32 or len(req.client_ephemeral) != 32 or len(req.nonce) != 16:
        raise HandshakeError("malformed handshake request")
    if req.server_id != identity.node_id:
        raise HandshakeError("handshake addressed to another node id")
    t = time.time() if now is None else now
    if abs(req.timestamp_ms / 1000 - t) > MAX_CLOCK_SKEW_S:
        raise HandshakeError("handshake timestamp outside the allowed clock skew")


def server_respond(identity: Identity, req: peer_pb2.HandshakeRequest,
                   *, now: float | None = None) -> tuple[peer_pb2.HandshakeResponse, SessionKeys]:
    """Server side: check the request, answer it, and derive this side's keys."""
    check_request(identity, req, now=now)
    if not verify_signature(req.client_key, _t1(req), req.signature):
        raise HandshakeError("client's handshake signature does not verify")
    eph = nacl.public.PrivateKey.generate()
    resp = peer_pb2.HandshakeResponse(server_key=identity.public_key,
                                      server_ephemeral=bytes(eph.public_key),
                                      session_id=os.urandom(16))
    resp.signature = identity.sign(_t2(req, resp))
    c2s, s2c = _derive(bytes(eph), req.client_ephemeral, req, resp)
    return resp, SessionKeys(resp.session_id, s2c, c2s, req.client_key,
                             node_id_for(req.client_key))

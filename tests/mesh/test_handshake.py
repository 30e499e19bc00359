"""The handshake as pure functions: each side's checks, without gRPC."""

import pytest

from mesh.channel.handshake import ClientHandshake, server_respond
from mesh.errors import HandshakeError
from mesh.identity import Identity


def test_both_sides_derive_mirrored_keys() -> None:
    client, server = Identity.generate(), Identity.generate()
    hs = ClientHandshake(client, server.node_id)
    resp, server_keys = server_respond(server, hs.request)
    client_keys = hs.finish(resp)
    assert client_keys.send_key == server_keys.recv_key
    assert client_keys.recv_key == server_keys.send_key
    assert client_keys.send_key != client_keys.recv_key
    assert server_keys.peer_id == client.node_id and client_keys.peer_id == server.node_id


def test_fresh_keys_every_handshake() -> None:
    client, server = Identity.generate(), Identity.generate()
    keys = set()
    for _ in range(3):
        hs = ClientHandshake(client, server.node_id)
        resp, _ = server_respond(server, hs.request)
        keys.add(hs.finish(resp).send_key)
    assert len(keys) == 3


def test_impostor_server_answering_for_any_id_is_refused() -> None:
    client, victim, impostor = Identity.generate(), Identity.generate(), Identity.generate()
    hs = ClientHandshake(client, victim.node_id)
    # The impostor ignores the id check and answers with its own (valid) signature.
    forwarded = ClientHandshake(client, impostor.node_id).request
    resp, _ = server_respond(impostor, forwarded)
    with pytest.raises(HandshakeError, match="not the node id"):
        hs.finish(resp)


def test_server_refuses_request_for_other_id_forged_sig_and_stale_time() -> None:
    client, server = Identity.generate(), Identity.generate()
    with pytest.raises(HandshakeError, match="another node id"):
        server_respond(server, ClientHandshake(client, Identity.generate().node_id).request)
    req = ClientHandshake(client, server.node_id).request
    req.client_key = Identity.generate().public_key           # claims another identity
    with pytest.raises(HandshakeError, match="signature"):
        server_respond(server, req)
    old = ClientHandshake(client, server.node_id).request
    with pytest.raises(HandshakeError, match="clock skew"):
        server_respond(server, old, now=old.timestamp_ms / 1000 + 3600)


def test_low_order_ephemeral_refused() -> None:
    client, server = Identity.generate(), Identity.generate()
    hs = ClientHandshake(client, server.node_id)
    resp, _ = server_respond(server, hs.request)
    resp.server_ephemeral = bytes(32)
    with pytest.raises(HandshakeError):
        hs.finish(resp)   # signature no longer verifies, or the DH output is all-zero

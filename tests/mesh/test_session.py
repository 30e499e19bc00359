"""Sealed frames without gRPC: AEGIS-128L sealing into wire bytes, opening in place, refusals."""

from __future__ import annotations

import dataclasses
import os

import pytest

from mesh.channel import allocator
from mesh.channel.frames import HEADER, NONCE_BYTES, Frame
from mesh.channel.handshake import KEY_BYTES, VERSION, ClientHandshake, server_respond
from mesh.channel.session import TAG_BYTES, Session
from mesh.errors import FrameError, HandshakeError
from mesh.identity import Identity


def _pair() -> tuple[Session, Session]:
    client, server = Identity.generate(), Identity.generate()
    hs = ClientHandshake(client, server.node_id)
    resp, server_keys = server_respond(server, hs.request)
    return Session(hs.finish(resp), is_client=True), Session(server_keys, is_client=False)


def _wire(frame: Frame) -> Frame:
    """What the other side sees: the frame decoded from its wire bytes."""
    return Frame.decode(bytes(frame.encode()))


@pytest.mark.parametrize("size", [0, 1, 31, 32, 33, 1000, 1 << 20])
def test_seal_open_roundtrip_both_directions(size: int) -> None:
    c, s = _pair()
    body = os.urandom(size)
    frame = c.seal(7, 3, False, body)
    assert len(frame.encode()) == HEADER.size + size + TAG_BYTES
    assert body == s.open(_wire(frame), 7, 3)
    reply = s.seal(7, 0, True, body[::-1])
    assert c.open(_wire(reply), 7, 0) == body[::-1]


def test_plaintext_may_be_any_buffer() -> None:
    c, s = _pair()
    data = bytearray(os.urandom(5000))
    for view in (data, memoryview(data)[100:4100], bytes(data)):
        assert s.open(_wire(c.seal(1, 0, True, view)), 1, 0) == bytes(view)


def test_opened_plaintext_is_independent_of_the_wire() -> None:
    c, s = _pair()
    wire = bytearray(c.seal(1, 0, True, b"hello world").encode())
    plain = s.open(Frame.decode(bytes(wire)), 1, 0)
    wire[-1] ^= 1
    assert plain == b"hello world" and isinstance(plain, bytes)


def test_decoded_frame_is_a_view_and_reencodes_to_the_same_bytes() -> None:
    c, _ = _pair()
    wire = c.seal(1, 0, True, b"x" * 100).encode()
    frame = Frame.decode(wire)
    assert isinstance(frame.ciphertext, memoryview) and frame.encode() is wire
    changed = dataclasses.replace(frame, index=1)   # cached wire bytes are dropped
    assert Frame.decode(changed.encode()).index == 1


def test_every_flipped_byte_is_refused() -> None:
    c, s = _pair()
    wire = c.seal(5, 2, False, b"transfer 10 to alice").encode()
    for i in range(len(wire)):
        bad = bytearray(wire)
        bad[i] ^= 0x80
        with pytest.raises(FrameError):     # refused by decode (the final byte) or by open
            s.open(Frame.decode(bytes(bad)), 5, 2)


def test_wrong_position_direction_or_session_refused() -> None:
    c, s = _pair()
    frame = _wire(c.seal(5, 2, False, b"abc"))
    with pytest.raises(FrameError, match="out of order"):
        s.open(frame, 5, 3)
    with pytest.raises(FrameError, match="out of order"):
        s.open(frame, 6, 2)
    with pytest.raises(FrameError):             # a request reflected back to the client
        c.open(frame, 5, 2)
    _, other = _pair()
    with pytest.raises(FrameError):
        other.open(frame, 5, 2)
    with pytest.raises(FrameError, match="shorter"):
        s.open(Frame(frame.session_id, 5, 2, False, bytes(NONCE_BYTES), b"short"), 5, 2)
    with pytest.raises(FrameError, match="malformed"):
        s.open(dataclasses.replace(frame, nonce=b"1234"), 5, 2)


def test_nonces_are_fresh() -> None:
    c, _ = _pair()
    nonces = {c.seal(1, i, False, b"").nonce for i in range(1000)}
    assert len(nonces) == 1000 and all(len(n) == NONCE_BYTES for n in nonces)


def test_session_keys_are_128_bit_and_checked() -> None:
    c, s = _pair()
    assert len(c.keys.send_key) == len(c.keys.recv_key) == KEY_BYTES == 16
    with pytest.raises(ValueError):
        Session(dataclasses.replace(c.keys, send_key=c.keys.send_key[:8]), is_client=True)


def test_handshake_of_an_older_protocol_version_refused() -> None:
    client, server = Identity.generate(), Identity.generate()
    req = ClientHandshake(client, server.node_id).request
    req.version = VERSION - 1
    with pytest.raises(HandshakeError, match="version"):
        server_respond(server, req)


def test_allocator_tuning_once_and_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    assert allocator.tune() == allocator.tune()          # idempotent, process-wide
    monkeypatch.setenv("TW_MESH_MALLOC_TUNE", "0")
    assert allocator._apply() is False
    monkeypatch.delenv("TW_MESH_MALLOC_TUNE")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert allocator._apply() is False                   # the operator's settings win

"""Sealed frames: AEGIS-128L (libsodium) with the frame's position bound into the associated data.

Each call in a session has a ``call_id`` (fresh per call, checked against a replay window on
the receiving side) and numbers its frames from 0 in each direction; the last carries
``final``. The AD is (session, direction, call_id, index, final), so a replayed, reordered,
cross-call, cross-direction, truncated or tampered frame fails to open.

Why AEGIS-128L with 128-bit keys (docs/channel.md, "Cipher"): the keys come from an X25519
exchange, which gives ~128-bit security whatever the cipher; each direction of a session has
its own key, and a session seals at most ``SessionPolicy.max_frames`` (2^24) frames under
random 128-bit nonces, so a nonce repeats with probability < 2^-80.

The hot path calls libsodium through PyNaCl's own cffi module (``nacl._sodium``) rather than
``nacl.bindings``: the binding allocates a zero-filled output buffer and then copies it into a
bytes object on every call. Here a frame is sealed straight into its wire bytes behind the
header, and a received frame's ciphertext (a view into the received message) is opened
straight into the plaintext bytes: the cipher's output is the only write, with no copy. A
plaintext given in parts is gathered into the wire bytes first and encrypted there in place
(libsodium's AEADs allow the ciphertext and message pointers to be equal).
"""

from __future__ import annotations

import ctypes
import os
import struct
import time
from dataclasses import dataclass, field

import nacl.bindings  # noqa: F401  (initialises libsodium before lib is used)
from nacl._sodium import ffi, lib  # type: ignore[import-not-found]

from mesh.channel.frames import HEADER, NONCE_BYTES, Body, Frame, body_parts
from mesh.channel.handshake import KEY_BYTES, SessionKeys
from mesh.errors import FrameError

_AD = struct.Struct(">16sBQI?")
REQUEST, RESPONSE = 0, 1
REPLAY_WINDOW = 4096
TAG_BYTES = 32
assert lib.crypto_aead_aegis128l_keybytes() == KEY_BYTES
assert lib.crypto_aead_aegis128l_npubbytes() == NONCE_BYTES
assert lib.crypto_aead_aegis128l_abytes() == TAG_BYTES


@dataclass(frozen=True)
class SessionPolicy:
    """When a session must be re-keyed."""

    max_age_s: float = 600.0
    max_frames: int = 1 << 24


# A bytes object of the given size whose contents are not yet set (the C API's
# PyBytes_FromStringAndSize(NULL, size)): it is filled by libsodium before anyone else sees it,
# which is how C extensions build bytes without a copy. Size 0 gives the shared empty bytes,
# which is never written to (zero-length output).
_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)


def _seal(key: bytes, session_id: bytes, direction: int, call_id: int, index: int,
          final: bool, plaintext: Body) -> Frame:
    nonce = os.urandom(NONCE_BYTES)
    ad = _AD.pack(session_id, direction, call_id, index, final)
    parts = [memoryview(p) for p in body_parts(plaintext)]
    size = sum(p.nbytes for p in parts)
    total = HEADER.size + size + TAG_BYTES
    wire = _new_bytes(None, total)
    out = ffi.from_buffer(wire)
    ffi.memmove(out, HEADER.pack(session_id, call_id, index, final, nonce), HEADER.size)
    body = out + HEADER.size
    if len(parts) == 1:
        source = ffi.from_buffer(parts[0])
    else:   # gather the parts where the ciphertext goes and encrypt there (exact aliasing)
        pos = 0
        for p in parts:
            ffi.memmove(body + pos, ffi.from_buffer(p), p.nbytes)
            pos += p.nbytes
        source = body
    if lib.crypto_aead_aegis128l_encrypt(body, ffi.NULL, source, size, ad, len(ad), ffi.NULL,
                                         nonce, key) != 0:
        raise FrameError("sealing failed")
    return Frame.with_wire(session_id, call_id, index, final, nonce, wire)


def _open(key: bytes, direction: int, frame: Frame, call_id: int,
          index: int) -> bytes:
    if frame.call_id != call_id or frame.index != index:
        raise FrameError(f"frame out of order (call {frame.call_id} #{frame.index}, "
                         f"expected call {call_id} #{index})")
    if len(frame.nonce) != NONCE_BYTES or len(frame.session_id) != 16:
        raise FrameError("malformed frame")
    ciphertext = frame.ciphertext
    size = len(ciphertext) - TAG_BYTES
    if size < 0:
        raise FrameError("frame shorter than its authentication tag")
    ad = _AD.pack(frame.session_id, direction, frame.call_id, frame.index, frame.final)
    plaintext = _new_bytes(None, size)
    if lib.crypto_aead_aegis128l_decrypt(ffi.from_buffer(plaintext), ffi.NULL, ffi.NULL,
                                         ffi.from_buffer(ciphertext), len(ciphertext), ad, len(ad),
                                         frame.nonce, key) != 0:
        raise FrameError("frame failed authentication (tampered or wrong session)")
    return plaintext  # type: ignore[no-any-return]


@dataclass
class Session:
    """One side of an established session."""

    keys: SessionKeys
    is_client: bool
    policy: SessionPolicy = field(default_factory=SessionPolicy)
    created: float = field(default_factory=time.monotonic)
    frames: int = 0
    _next_call: int = 1
    _highest_call: int = 0
    _seen: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        # libsodium reads exactly KEY_BYTES through the pointer: never hand it a shorter key
        if len(self.keys.send_key) != KEY_BYTES or len(self.keys.recv_key) != KEY_BYTES:
            raise ValueError(f"session keys must be {KEY_BYTES} bytes")

    @property
    def session_id(self) -> bytes:
        return self.keys.session_id

    def expired(self) -> bool:
        return (time.monotonic() - self.created > self.policy.max_age_s
                or self.frames >= self.policy.max_frames)

    def new_call_id(self) -> int:
        call_id = self._next_call
        self._next_call += 1
        return call_id

    def accept_call(self, call_id: int) -> None:
        """Server side: refuse a call id seen before or too old to tell (replay)."""
        if call_id <= 0 or call_id in self._seen or call_id <= self._highest_call - REPLAY_WINDOW:
            raise FrameError(f"replayed or stale call id {call_id}")
        self._seen.add(call_id)
        if call_id > self._highest_call:
            self._highest_call = call_id
            floor = call_id - REPLAY_WINDOW
            if len(self._seen) > 2 * REPLAY_WINDOW:
                self._seen = {c for c in self._seen if c > floor}

    def seal(self, call_id: int, index: int, final: bool, plaintext: Body) -> Frame:
        self.frames += 1
        direction = REQUEST if self.is_client else RESPONSE
        return _seal(self.keys.send_key, self.session_id, direction, call_id, index, final,
                     plaintext)

    def open(self, frame: Frame, call_id: int, index: int) -> bytes:
        self.frames += 1
        direction = RESPONSE if self.is_client else REQUEST
        return _open(self.keys.recv_key, direction, frame, call_id, index)

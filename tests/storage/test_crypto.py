"""Stripe AEAD and key sealing: every kind of tampering fails with a clear error."""

from __future__ import annotations

import os

import nacl.public
import nacl.signing
import pytest

from storage.crypto import (
    SEALED_KEY_BYTES,
    STRIPE_OVERHEAD,
    CryptoError,
    DecryptionError,
    new_file_key,
    open_sealed_key,
    open_stripe,
    open_stripes,
    seal_key_to,
    seal_stripe,
    seal_stripes,
)

CTX = b"file-1"


@pytest.fixture
def key() -> bytes:
    return new_file_key()


@pytest.fixture
def stripes() -> list[bytes]:
    return [os.urandom(1000), os.urandom(1000), os.urandom(10)]


def test_round_trip(key: bytes, stripes: list[bytes]) -> None:
    sealed = list(seal_stripes(key, stripes, context=CTX))
    assert [len(s) for s in sealed] == [len(p) + STRIPE_OVERHEAD for p in stripes]
    assert list(open_stripes(key, sealed, context=CTX)) == stripes
    for p, s in zip(stripes, sealed, strict=True):
        assert p not in s  # ciphertext, not plaintext


def test_empty_file_and_empty_stripe(key: bytes) -> None:
    assert list(seal_stripes(key, [], context=CTX)) == []
    sealed = list(seal_stripes(key, [b""], context=CTX))
    assert list(open_stripes(key, sealed, context=CTX)) == [b""]


def test_random_nonces_differ(key: bytes) -> None:
    a = seal_stripe(key, b"same", context=CTX, index=0, last=True)
    b = seal_stripe(key, b"same", context=CTX, index=0, last=True)
    assert a != b


def test_tampered_byte_fails(key: bytes, stripes: list[bytes]) -> None:
    sealed = list(seal_stripes(key, stripes, context=CTX))
    for pos in (0, 30, len(sealed[1]) - 1):  # nonce, body, tag
        bad = bytearray(sealed[1])
        bad[pos] ^= 1
        with pytest.raises(DecryptionError, match="stripe 1 failed authentication"):
            open_stripe(key, bytes(bad), context=CTX, index=1, last=False)


def test_reorder_fails(key: bytes, stripes: list[bytes]) -> None:
    sealed = list(seal_stripes(key, stripes, context=CTX))
    with pytest.raises(DecryptionError, match="stripe 0"):
        list(open_stripes(key, [sealed[1], sealed[0], sealed[2]], context=CTX))


def test_truncation_fails(key: bytes, stripes: list[bytes]) -> None:
    sealed = list(seal_stripes(key, stripes, context=CTX))
    with pytest.raises(DecryptionError, match="truncated"):
        list(open_stripes(key, sealed[:2], context=CTX))


def test_extension_fails(key: bytes, stripes: list[bytes]) -> None:
    sealed = list(seal_stripes(key, stripes, context=CTX))
    extra = seal_stripe(key, b"x", context=CTX, index=3, last=True)
    with pytest.raises(DecryptionError, match="more were expected"):
        list(open_stripes(key, [*sealed, extra], context=CTX))


def test_swap_between_files_fails(key: bytes) -> None:
    s = seal_stripe(key, b"data", context=b"file-2", index=0, last=True)
    with pytest.raises(DecryptionError, match="another file"):
        open_stripe(key, s, context=CTX, index=0, last=True)


def test_wrong_key_fails(key: bytes) -> None:
    s = seal_stripe(key, b"data", context=CTX, index=0, last=True)
    with pytest.raises(DecryptionError, match="wrong key"):
        open_stripe(new_file_key(), s, context=CTX, index=0, last=True)


def test_short_input_and_bad_key_length(key: bytes) -> None:
    with pytest.raises(DecryptionError, match="shorter"):
        open_stripe(key, b"x" * 10, context=CTX, index=0, last=True)
    with pytest.raises(ValueError, match="32 bytes"):
        seal_stripe(b"short", b"x", context=CTX, index=0, last=True)


def test_seal_key_to_ed25519_user() -> None:
    user = nacl.signing.SigningKey.generate()
    fk = new_file_key()
    for recipient in (user.verify_key, bytes(user.verify_key)):
        sealed = seal_key_to(recipient, fk)
        assert len(sealed) == SEALED_KEY_BYTES and fk not in sealed
        assert open_sealed_key(user, sealed) == fk


def test_seal_key_to_x25519() -> None:
    priv = nacl.public.PrivateKey.generate()
    fk = new_file_key()
    assert open_sealed_key(priv, seal_key_to(priv.public_key, fk)) == fk


def test_sealed_key_for_someone_else_fails() -> None:
    alice, mallory = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    sealed = seal_key_to(alice.verify_key, new_file_key())
    with pytest.raises(CryptoError, match="cannot be opened"):
        open_sealed_key(mallory, sealed)
    bad = bytearray(sealed)
    bad[-1] ^= 1
    with pytest.raises(CryptoError):
        open_sealed_key(alice, bytes(bad))


def test_invalid_ed25519_public_key() -> None:
    with pytest.raises(CryptoError):
        seal_key_to(b"\x00" * 31, new_file_key())

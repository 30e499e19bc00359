"""Address tokens: a large UDP answer goes only to an address that proved it receives.

UDP source addresses can be spoofed, so a FIND_VALUE answer (a RecordSet, up to ~7 KB) or a
FIND_NODE answer (2k contacts, ~1.5 KB) to a ~80-byte request would reflect ~90x or ~20x the
traffic onto whatever address the request named. A sender this node admitted (it answered an
IDENTIFY nonce there) gets the full answer; any other gets a small one carrying a token, a MAC
of its address under a secret of this node (like DNS cookies, RFC 7873, or QUIC's Retry). A
request that returns the token proves the sender receives at that address and is answered in
full. A spoofer never sees the token sent to its victim's address.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

TOKEN_EPOCH_S = 600.0        # a token is accepted in its epoch and the next
MAX_REMEMBERED = 4096        # tokens received from responders, kept by the asking side


class AddressTokens:
    """Issue and check tokens for addresses (responder side), and remember the tokens
    responders gave this node (asker side)."""

    def __init__(self) -> None:
        self._secret = os.urandom(32)
        self._received: dict[tuple[str, int], bytes] = {}

    def _mac(self, addr: tuple[str, int], epoch: int) -> bytes:
        msg = f"{epoch}|{addr[0]}|{addr[1]}".encode()
        return hashlib.blake2b(msg, key=self._secret, digest_size=16).digest()

    def issue(self, addr: tuple[str, int]) -> bytes:
        return self._mac(addr[:2], int(time.time() // TOKEN_EPOCH_S))

    def valid(self, token: object, addr: tuple[str, int]) -> bool:
        if not isinstance(token, bytes) or len(token) != 16:
            return False
        epoch = int(time.time() // TOKEN_EPOCH_S)
        return any(hmac.compare_digest(token, self._mac(addr[:2], e)) for e in (epoch, epoch - 1))

    # --- asker side ------------------------------------------------------------------------

    def received(self, addr: tuple[str, int]) -> bytes | None:
        return self._received.get(addr)

    def remember(self, addr: tuple[str, int], token: bytes) -> None:
        self._received.pop(addr, None)
        self._received[addr] = token
        while len(self._received) > MAX_REMEMBERED:
            del self._received[next(iter(self._received))]

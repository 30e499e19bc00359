"""Peer views and the IDENTIFY proof a node gives of its ID.

Kademlia (Maymounkov & Mazières 2002, section 2) takes node IDs on trust. Here a node proves
that its ID is the hash of a key it holds: it signs ``identify_message(nonce, ...)`` for a
fresh nonce chosen by the asker, and sends its signed peer record, whose key must hash to
the ID it uses in the DHT. The record also names the node's mesh (``tw-mesh join --mesh``): a
node of another mesh proves its ID like any other and is still refused, so two meshes sharing
a host or a recycled address can never merge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mesh.errors import RecordError
from mesh.identity import node_id_for, verify_signature
from mesh.records import decode_peer, decode_record, verify_record
from proto import mesh_pb2

_DOMAIN = b"tw-mesh/dht-identify/v1\x00"
DEFAULT_MESH = "default"
_MESH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_mesh_name(name: str) -> str:
    """A mesh name (1-64 of letters, digits, ``.``, ``_``, ``-``); ValueError otherwise."""
    if not _MESH_NAME.fullmatch(name):
        raise ValueError(f"a mesh name is 1-64 letters, digits, '.', '_' or '-' "
                         f"(starting with a letter or digit), not {name!r}")
    return name


@dataclass
class PeerView:
    """What this node knows about a live peer."""

    node_id: bytes
    address: str
    last_seen: float
    roles: tuple[str, ...]
    record: mesh_pb2.PeerRecord


def short(node_id: bytes) -> str:
    return node_id.hex()[:8]


# An IDENTIFY request carries this many bytes of padding, and a node answers none with less:
# the answer (a signed peer record and a signature, ~325 B) is then smaller than the request
# (~460 B), so a spoofed source address draws no amplified reflection (QUIC pads its first
# datagram to 1,200 bytes for the same reason, RFC 9000 section 8.1).
IDENTIFY_PAD = 384
MAX_IDENTIFY_PAD = 1024


def identify_message(nonce: bytes, responder: bytes, requester: bytes) -> bytes:
    """What a responder signs: bound to the nonce and to both node IDs."""
    return _DOMAIN + nonce + responder + requester


def check_identify(claimed_id: bytes, nonce: bytes, requester: bytes,
                   answer: Any) -> mesh_pb2.SignedRecord | None:
    """The verified signed peer record in an IDENTIFY answer, or None if it proves nothing."""
    if not isinstance(answer, list) or len(answer) != 2:
        return None
    raw, signature = answer
    if not isinstance(raw, bytes) or not isinstance(signature, bytes):
        return None
    try:
        record = decode_record(raw)
        verify_record(record)
        peer = decode_peer(record)
    except RecordError:
        return None
    if record.kind != "peer" or node_id_for(record.owner_key) != claimed_id:
        return None
    if peer.node_id != claimed_id:
        return None
    if not verify_signature(record.owner_key, identify_message(nonce, claimed_id, requester),
                            signature):
        return None
    return record

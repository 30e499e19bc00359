"""What an unproven or greedy DHT sender gets, on real UDP sockets (127.0.0.1, port 0, many
Membership nodes in one process): STOREs only from admitted peers, lookup answers to an
unproven address small (no reflection onto a spoofed one), and one admitted peer's share of
a key and of a node's record budget bounded (mesh/dht/protocol.py, cookies.py, quota.py)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest
import umsgpack  # type: ignore[import-untyped]
from kademlia.node import Node

from mesh.dht import Membership
from mesh.dht.peers import IDENTIFY_PAD, check_identify
from mesh.dht.storage import encode_set
from mesh.identity import Identity
from mesh.records import record_key, sign_record
from tests.mesh import test_membership
from tests.mesh.test_membership import MakeNode, mesh, wait_for
from tests.support.rawudp import RawPeer

make_node = test_membership.make_node     # the fixture

BIG = 4000                   # payload bytes of a record too large to reflect


def at(node: Membership) -> Node:
    return Node(node.node_id, "127.0.0.1", node.port)


def note(signer: Identity, name: bytes, size: int = 16) -> tuple[bytes, bytes]:
    """A record of a kind no rule knows, at its key, encoded as a STORE value."""
    key = record_key("note", signer.public_key, name)
    return key, encode_set([sign_record(signer, "note", bytes(size), name=name)])


async def test_a_never_admitted_sender_s_store_is_refused(make_node: MakeNode) -> None:
    """Before, any UDP sender naming a 20-byte ID stored records (True, held by the node)."""
    target = await make_node(rpc_timeout=0.3)
    raw = await RawPeer.open()
    try:
        signer = Identity.generate()
        key, value = note(signer, b"squat")
        addr = ("127.0.0.1", target.port)
        _, _, answer = await raw.ask(addr, "store", key, value)
        assert set(answer) == {"token"}            # first prove the address
        token = answer["token"]
        _, _, answer = await raw.ask(addr, "store", key, value, token)
        assert answer is False
        assert "identify" in raw.requests           # it was asked to prove itself, never did
        assert target.server.storage.records(key) == []
        # Not even a peer record of the key it claims to be (a joining node's own record).
        raw.node_id = signer.node_id
        own = sign_record(signer, "peer", b"", ttl_s=60)
        _, _, answer = await raw.ask(addr, "store", signer.node_id, encode_set([own]), token)
        assert answer is False and target.server.storage.records(signer.node_id) == []
    finally:
        raw.close()


async def test_a_joining_node_s_first_store_lands(make_node: MakeNode) -> None:
    """A STORE that is the first thing a target hears from a node waits for its admission."""
    target = await make_node()
    joiner = await make_node()
    own = joiner.server.storage.records(joiner.node_id)
    assert len(own) == 1
    proto = joiner.server.protocol
    assert await proto.call_store(at(target), joiner.node_id, encode_set(own)) == (True, True)
    assert joiner.node_id in {p.node_id for p in target.live_peers()}
    key, value = note(joiner.identity, b"first")
    assert await proto.call_store(at(target), key, value) == (True, True)
    assert len(target.server.storage.records(key)) == 1


async def test_lookup_answers_to_an_unproven_address_are_small(make_node: MakeNode) -> None:
    """Before, a ~90-byte FIND_VALUE drew the whole RecordSet (here ~4.2 KB) to whatever
    address it named, and a FIND_NODE 2k contacts (then 8: 4.4x)."""
    nodes = await mesh(make_node, 12)
    target, writer = nodes[0], nodes[1]
    key = record_key("note", writer.identity.public_key, b"big")
    assert await writer.publish(sign_record(writer.identity, "note", bytes(BIG),
                                            name=b"big")) >= 1
    assert target.server.storage.get(key) is not None
    await wait_for(lambda: len(target.server.protocol.router.all_nodes()) == 11, 10)
    raw, other = await RawPeer.open(), await RawPeer.open()
    addr = ("127.0.0.1", target.port)
    try:
        sent, size, answer = await raw.ask(addr, "find_value", key)
        assert set(answer) == {"token"} and size <= sent, (sent, size)
        sent, size, answer = await raw.ask(addr, "find_node", bytes(20))
        assert set(answer) == {"nodes", "token"} and answer["nodes"] == []
        assert size <= sent, (sent, size)          # before: 8 contacts, 4.4x
        token = answer["token"]
        # The token proves the asker receives at its address: then it gets everything.
        _, size, answer = await raw.ask(addr, "find_value", key, token)
        assert len(answer["value"]) > BIG and size > 40 * sent
        _, _, answer = await raw.ask(addr, "find_node", bytes(20), token)
        assert isinstance(answer, list) and len(answer) == 11
        # Someone else's token proves nothing.
        _, _, answer = await other.ask(addr, "find_value", key, token)
        assert set(answer) == {"token"}
    finally:
        raw.close()
        other.close()
    # A node the target has not admitted yet still reads the value (it asks again with the
    # token), and admitted members read it at once.
    reader = await make_node()
    ok, answer = await reader.server.protocol.call_find_value(at(target), Node(key))
    assert ok and len(answer["value"]) > BIG
    assert [len(r.payload) for r in await nodes[5].fetch(key)] == [BIG]


def spoof_udp(src_port: int, dst_port: int, payload: bytes) -> None:
    """One UDP datagram to 127.0.0.1:dst_port that claims to come from 127.0.0.1:src_port
    (a raw socket writes the UDP header; checksum 0 means none in IPv4). Needs root."""
    header = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as raw:
        raw.sendto(header + payload, ("127.0.0.1", 0))


@pytest.mark.skipif(os.geteuid() != 0, reason="a raw socket needs root")
async def test_a_store_spoofed_from_an_admitted_peer_s_address_is_not_taken(
        make_node: MakeNode) -> None:
    """Before, a STORE datagram naming an admitted member's ID and spoofed from its address
    was stored and charged to that member's quota (its own STOREs then refused)."""
    nodes = await mesh(make_node, 3)
    target, member = nodes[0], nodes[1]
    assert member.node_id in {p.node_id for p in target.live_peers()}
    key, value = note(Identity.generate(), b"spoofed")
    request = b"\x00" + os.urandom(20) + umsgpack.packb(["store", [member.node_id, key, value]])
    spoof_udp(member.port, target.port, request)
    honest, honest_value = note(member.identity, b"honest")
    assert await member.server.protocol.call_store(at(target), honest, honest_value) == (
        True, True)                          # the datagram before it was handled first
    assert target.server.storage.records(key) == []
    assert len(target.server.storage.records(honest)) == 1


async def test_identify_answers_only_a_request_larger_than_the_answer(
        make_node: MakeNode) -> None:
    """Before, a 72-byte IDENTIFY drew the 325-byte signed proof (4.5x) to any address."""
    target = await make_node()
    raw = await RawPeer.open()
    addr = ("127.0.0.1", target.port)
    nonce = bytes(range(16))
    try:
        sent, _, answer = await raw.ask(addr, "identify", nonce)
        assert answer is None and sent < 100
        _, _, answer = await raw.ask(addr, "identify", nonce, bytes(IDENTIFY_PAD - 1))
        assert answer is None
        sent, size, answer = await raw.ask(addr, "identify", nonce, bytes(IDENTIFY_PAD))
        assert check_identify(target.node_id, nonce, raw.node_id, answer) is not None
        assert size < sent, (sent, size)
    finally:
        raw.close()


async def test_an_admitted_member_takes_at_most_its_share_of_a_key(make_node: MakeNode) -> None:
    """Before, one admitted member filled all 32 slots of a key with records signed by fresh
    keys, and every honest record for it was refused."""
    nodes = await mesh(make_node, 9)
    target, honest = nodes[0], nodes[1:]
    rogue = await make_node()
    assert await rogue.bootstrap([("127.0.0.1", target.port)]) >= 1
    store = rogue.server.protocol.call_store
    key = record_key("note", b"", b"shared")
    for _ in range(40):
        await store(at(target), key, note(Identity.generate(), b"shared")[1])
    await store(at(target), key, note(rogue.identity, b"shared")[1])
    assert len(target.server.storage.records(key)) == 4
    for node in honest:
        assert (await store(at(target), key, note(node.identity, b"shared")[1]))[1] is True
    assert len(target.server.storage.records(key)) == 4 + len(honest)
    # A provider record ("this node serves it") only from its signer or a live peer's.
    fkey = record_key("provider", b"", b"fn")
    for _ in range(10):
        rec = sign_record(Identity.generate(), "provider", b"p", name=b"fn")
        assert (await store(at(target), fkey, encode_set([rec])))[1] is False
    for signer in (rogue.identity, honest[0].identity):   # its own; a live peer's, relayed
        rec = sign_record(signer, "provider", b"p", name=b"fn")
        assert (await store(at(target), fkey, encode_set([rec])))[1] is True
    assert len(target.server.storage.records(fkey)) == 2


async def test_an_admitted_member_takes_at_most_its_share_of_the_budget(
        make_node: MakeNode) -> None:
    """Before, one admitted member's records at new keys took a node's whole record budget
    (here 1 MiB) and the node refused every new key after them."""
    target = await make_node()
    target.server.storage.max_bytes = 2**20
    rogue, honest = await make_node(), await make_node()
    for node in (rogue, honest):
        assert await node.bootstrap([("127.0.0.1", target.port)]) >= 1
    answers = []
    for start in range(0, 240, 8):                  # ~1.5 MiB of 6.5 KB records
        answers += await asyncio.gather(*(rogue.server.protocol.call_store(
            at(target), *note(rogue.identity if i % 2 else Identity.generate(),
                              b"%d" % i, 6500)) for i in range(start, start + 8)))
    held = sum(1 for ok, stored in answers if ok and stored is True)
    assert 0 < held * 6500 <= 2**20 // 8, held
    assert sum(1 for ok, _ in answers if ok) == len(answers)    # refusals, not timeouts
    ok, stored = await honest.server.protocol.call_store(
        at(target), *note(honest.identity, b"mine", 6500))
    assert ok and stored is True

"""A mesh member cannot push the records that matter out of a DHT key by piling records of
its own onto it (mesh/dht/storage.py, compute/names.py), on real node processes.

The attack, before the fix: a DHT key keeps at most 32 records (and ~7 KB) and, when a new
one did not fit, evicted the records *expiring soonest*. Any key may sign a record (a fresh
key costs nothing) and choose its expiry. So a rogue peer signed 40 transferee claims of a
deployed name (``inherited_from`` set: "they compete with no one", so every node stored them)
with fresh keys and a ten-year expiry, and every node holding the name's claims evicted the
owner's (a 7-day TTL) to fit them; the owner's re-signatures were evicted again as they came.
With no owner left at the key, the rogue's own root claim of the name (its deploy: its code)
was "free" and stored, and every router followed it: the name's calls ran the rogue's code
and the rogue's code received its callers' arguments.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from kademlia.node import Node

from compute.names import claim_key, sign_claim
from mesh.dht import Membership
from mesh.dht.storage import decode_set, encode_set
from mesh.identity import Identity
from mesh.records import record_key, sign_record
from proto import compute_pb2, mesh_pb2
from tests.compute.test_deploy_ownership import EVIL, SHOP, cli, node_id, version_at, wait_version
from tests.support.nodes import NodeCluster
from tests.support.rawudp import RawPeer

TEN_YEARS_S = 10 * 365 * 86400.0
BUDGET = 32 * 2**20          # mesh.dht.storage.MAX_STORED_BYTES


async def test_claims_piled_on_a_name_cannot_push_its_owner_out(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(f"VERSION = 1\n{SHOP}")
    (tmp_path / "evil.py").write_text(EVIL)
    extra = ["--sweep-interval", "0.5", "--provider-refresh", "0.3"]
    async with NodeCluster(tmp_path, 4, extra=extra) as cluster:
        code, _, err = await cli("deploy", str(tmp_path / "shop.py"), api=cluster.nodes[0].api)
        assert code == 0, err
        for index in range(4):
            await wait_version(cluster, index, 1)
        owner = await node_id(cluster, 0)
        # The rogue's code is in the mesh (deployed under a name of its own by node 1).
        code, out, err = await cli("deploy", str(tmp_path / "evil.py"), "--name", "helper",
                                   "--json", api=cluster.nodes[1].api)
        assert code == 0, err
        evil_cid = json.loads(out)["cid"]

        rogue = Membership(Identity.generate(), host="127.0.0.1", port=0,
                           peer_record_factory=lambda: mesh_pb2.PeerRecord(roles=["storage"]))
        await rogue.start()
        try:
            host, port = cluster.nodes[3].peer.rsplit(":", 1)
            await rogue.bootstrap([(host, int(port))])
            now = int(time.time() * 1000)
            for i in range(40):                 # junk: transferees of keys nobody holds
                junk = compute_pb2.NameClaim(function="price", claimed_ms=now,
                                             inherited_from=Identity.generate().public_key)
                await rogue.publish(sign_claim(Identity.generate(), junk,
                                               ttl_s=TEN_YEARS_S - i))
            take = compute_pb2.NameClaim(function="price", claimed_ms=now)
            take.deploy.CopyFrom(compute_pb2.ProviderRecord(
                function="price", worker_id="deployed", node_id=rogue.node_id,
                address=cluster.nodes[1].peer, code_cid=evil_cid,
                deploy_seq=now + 10**9, entry="price"))
            await rogue.publish(sign_claim(rogue.identity, take, ttl_s=TEN_YEARS_S + 86400))

            # A few refreshes and cache expiries later every node still names the owner and
            # runs the owner's code.
            await asyncio.sleep(3.0)
            for index in range(4):
                code, out, err = await cli("name", "price", "--json",
                                           api=cluster.nodes[index].api)
                assert code == 0, err
                assert json.loads(out)["owner_id"] == owner, (index, out)
                for _ in range(3):
                    assert await version_at(cluster, index) == 1, index
        finally:
            await rogue.stop()



async def test_records_stored_at_new_keys_stay_within_a_node_s_budget(tmp_path: Path) -> None:
    """Before the budget, every key a STORE named took memory until its records expired, and a
    record chose its own expiry: one member could grow every node it reached without bound
    (here ~45 MB of records, each at a key of its own, all kept)."""
    async with NodeCluster(tmp_path, 1) as cluster:
        rogue = Membership(Identity.generate(), host="127.0.0.1", port=0,
                           peer_record_factory=lambda: mesh_pb2.PeerRecord(roles=["storage"]))
        await rogue.start()
        try:
            host, port = cluster.nodes[0].peer.rsplit(":", 1)
            assert await rogue.bootstrap([(host, int(port))]) == 1
            target = Node(bytes.fromhex(await node_id(cluster, 0)), host, int(port))
            proto = rogue.server.protocol
            signer = Identity.generate()
            keys = [record_key("junk", signer.public_key, b"%d" % i) for i in range(7000)]
            stored = 0
            for start in range(0, len(keys), 8):          # (a socket buffer's worth)
                batch = keys[start:start + 8]
                stored += sum(1 for ok, _ in await asyncio.gather(*(proto.call_store(target, key, encode_set([sign_record(
                    signer, "junk", bytes(6500), name=b"%d" % (start + i), ttl_s=3600)]))
                    for i, key in enumerate(batch))) if ok)
            held = 0
            for start in range(0, len(keys), 8):
                answers = await asyncio.gather(*(proto.call_find_value(target, Node(key))
                                                 for key in keys[start:start + 8]))
                held += sum(1 for ok, a in answers if ok and isinstance(a, dict))
            assert stored > len(keys) * 0.9, stored      # the node answered nearly all
            assert 0 < held * 6500 <= BUDGET, held
            code, _, err = await cli("status", "--json", api=cluster.nodes[0].api)
            assert code == 0, err
        finally:
            await rogue.stop()


async def test_a_peer_is_reached_where_it_proved_its_id_not_where_its_record_points(
        tmp_path: Path) -> None:
    """Before, a member's peer record named any address it liked, and every node opened its
    peer connections there: a service on the node's own loopback (here a listener standing in
    for one), another host inside the node's network. Now the address a node uses is the one
    the peer answered the IDENTIFY nonce from."""
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    lure = f"127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    try:
        async with NodeCluster(tmp_path, 1) as cluster:
            rogue = Membership(Identity.generate(), host="127.0.0.1", port=0,
                               peer_record_factory=lambda: mesh_pb2.PeerRecord(
                                   roles=["storage", "compute"], address=lure))
            await rogue.start()
            try:
                host, port = cluster.nodes[0].peer.rsplit(":", 1)
                assert await rogue.bootstrap([(host, int(port))]) == 1
                peers = (await cluster.peers_of(0)).peers
                (seen,) = [p for p in peers if p.node_id == rogue.node_id.hex()]
                assert seen.address == f"127.0.0.1:{rogue.port}", seen.address
            finally:
                await rogue.stop()
    finally:
        listener.close()


async def test_claims_piled_before_a_deploy_take_only_one_member_s_share(
        tmp_path: Path) -> None:
    """Before, a key's free slots went to whoever came first: one member's 40 transferee
    claims (fresh keys, "competing with no one") filled a name's 32 claim slots on every node
    before its first deploy, which then failed (no node stored the claim). Now one admitted
    member holds at most 4 records of a key."""
    (tmp_path / "shop.py").write_text(f"VERSION = 1\n{SHOP}")
    async with NodeCluster(tmp_path, 2) as cluster:
        rogue = Membership(Identity.generate(), host="127.0.0.1", port=0,
                           peer_record_factory=lambda: mesh_pb2.PeerRecord(roles=["storage"]))
        await rogue.start()
        try:
            host, port = cluster.nodes[1].peer.rsplit(":", 1)
            assert await rogue.bootstrap([(host, int(port))]) == 2
            now = int(time.time() * 1000)
            for _ in range(40):
                junk = compute_pb2.NameClaim(function="price", claimed_ms=now,
                                             inherited_from=Identity.generate().public_key)
                await rogue.publish(sign_claim(Identity.generate(), junk, ttl_s=3600))
            for index in range(2):                  # what each node holds at the key
                host, port = cluster.nodes[index].peer.rsplit(":", 1)
                node = Node(bytes.fromhex(await node_id(cluster, index)), host, int(port))
                ok, held = await rogue.server.protocol.call_find_value(node, Node(claim_key("price")))
                assert ok and len(decode_set(held["value"])) == 4, index
            code, _, err = await cli("deploy", str(tmp_path / "shop.py"),
                                     api=cluster.nodes[0].api)
            assert code == 0, err
            owner = await node_id(cluster, 0)
            for index in range(2):
                code, out, err = await cli("name", "price", "--json",
                                           api=cluster.nodes[index].api)
                assert code == 0, err
                assert json.loads(out)["owner_id"] == owner, (index, out)
                await wait_version(cluster, index, 1)
        finally:
            await rogue.stop()


async def test_a_never_admitted_sender_stores_nothing_and_draws_no_large_answer(
        tmp_path: Path) -> None:
    """A bare UDP sender that never answers IDENTIFY: before, its STORE was kept (True) and
    a ~90-byte FIND_VALUE drew a ~4 KB RecordSet to whatever address it named."""
    async with NodeCluster(tmp_path, 1) as cluster:
        host, port = cluster.nodes[0].peer.rsplit(":", 1)
        addr = (host, int(port))
        member = Membership(Identity.generate(), host="127.0.0.1", port=0,
                            peer_record_factory=lambda: mesh_pb2.PeerRecord(roles=["storage"]))
        await member.start()
        raw = await RawPeer.open()
        try:
            assert await member.bootstrap([addr]) == 1
            big = sign_record(member.identity, "note", bytes(4000), name=b"big")
            assert await member.publish(big) == 2
            squat = sign_record(Identity.generate(), "note", b"x", name=b"squat")
            squat_key = record_key("note", b"", b"squat")
            _, _, answer = await raw.ask(addr, "store", squat_key, encode_set([squat]))
            assert set(answer) == {"token"}             # prove the address first
            _, _, answer = await raw.ask(addr, "store", squat_key, encode_set([squat]),
                                         answer["token"])
            assert answer is False and "identify" in raw.requests
            assert await member.fetch(squat_key) == []
            sent, size, answer = await raw.ask(addr, "find_value", record_key("note", b"", b"big"))
            assert set(answer) == {"token"} and size <= sent, (sent, size, answer)
            assert [len(r.payload) for r in await member.fetch(record_key("note", b"", b"big"))] == [4000]
        finally:
            raw.close()
            await member.stop()

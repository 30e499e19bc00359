"""A mesh member cannot get another user's secret by borrowing the identity it is sealed to,
on real node processes (compute/proxy/secrets.py, compute/executor.py).

Two attacks, both by a key of the attacker's own (any key that completes the handshake):

* *A copied envelope.* A secret record carries the value encrypted under a data key and that
  data key sealed to every compute node; the allow-list is signed, but by whoever signs the
  record. Before the fix, the attacker fetched the owner's record from the DHT (any member
  may), copied its ciphertext and sealed keys into an envelope of its own allowing its own
  function, signed it with its own key at a higher sequence and stored it: every node took the
  newest record, found its sealed key in it, opened the owner's data key and handed the
  owner's value to the attacker's function.
* *A forged call.* A serving node ran a peer's ``compute.Call`` with the function name,
  entry and worker id the request named, whatever the code: the attacker stored code of its
  own (``compute.StoreCode``, any member may) and called it as the owner's deployed function,
  or called the owner's own module at a helper that was never deployed; the call ran with the
  function's identity, so ``get_secret`` handed it the secrets allowed to that function.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nacl.utils

from compute import values
from compute.peer import ComputePeer
from compute.proxy.envelope import encrypt_value, seal_record
from compute.proxy.secrets import KIND, RECORD_TTL_S, dht_key
from mesh.channel import ChannelPool
from mesh.dht import Membership
from mesh.identity import Identity, load_or_create
from mesh.records import sign_record
from proto import compute_pb2, mesh_pb2, proxy_pb2, taskworker_pb2, taskworker_pb2_grpc
from storage.cid import cid_for
from tests.compute.test_deploy_ownership import cli, node_id
from tests.support.nodes import NodeCluster, run_cli

SECRET = "tok-owner-7c1f0e9a55d2"
PERMISSION_DENIED = 7

STEAL = '''
def steal():
    return worker.get_secret("api_key")
'''
PRICE = '''
import hashlib

def price():
    return hashlib.sha256(worker.get_secret("api_key").encode()).hexdigest()[:8]

def dump():
    return worker.get_secret("api_key")
'''



@contextlib.asynccontextmanager
async def rogue_member(cluster: NodeCluster) -> AsyncIterator[Membership]:
    """A mesh member with a fresh key (anyone can be one), joined through node 2."""
    rogue = Membership(Identity.generate(), host="127.0.0.1", port=0,
                       peer_record_factory=lambda: mesh_pb2.PeerRecord(roles=["storage"]))
    await rogue.start()
    try:
        host, port = cluster.nodes[2].peer.rsplit(":", 1)
        await rogue.bootstrap([(host, int(port))])
        yield rogue
    finally:
        await rogue.stop()


async def node_keys(rogue: Membership, ids: list[bytes]) -> dict[bytes, bytes]:
    """Each node's identity key, as its signed peer record gives it to any member."""
    keys: dict[bytes, bytes] = {}
    for nid in ids:
        peer = await rogue.fetch_peer(nid)
        assert peer is not None and len(peer.identity_key) == 32
        keys[nid] = bytes(peer.identity_key)
    return keys

async def test_a_copied_secret_envelope_does_not_open_for_another_signer(
        tmp_path: Path) -> None:
    (tmp_path / "steal.py").write_text(STEAL)
    async with NodeCluster(tmp_path, 3, extra=["--sweep-interval", "0.5"]) as cluster:
        api = [n.api for n in cluster.nodes]
        proc = run_cli("secret", "set", "api_key", "--for", "weather", api=api[0],
                       input_data=SECRET.encode())
        assert proc.returncode == 0, proc.stderr
        code, _, err = await cli("deploy", str(tmp_path / "steal.py"), api=api[1])  # user 2
        assert code == 0, err
        code, _, err = await cli("call", "steal", api=api[1])
        assert code == 1 and "PERMISSION_DENIED" in err, err          # not allowed: fine

        async with rogue_member(cluster) as rogue:
            owners = [r for r in await rogue.fetch(dht_key("api_key")) if r.kind == KIND]
            assert owners, "the owner's record is in the DHT for any member to read"
            victim = max(owners, key=lambda r: r.seq)
            env = proxy_pb2.SecretEnvelope()
            env.ParseFromString(victim.payload)
            assert env.ciphertext and len(env.recipients) == 3
            del env.allowed[:]
            env.allowed.append("steal")                 # the attacker's own function
            env.version = victim.seq + 1
            # signed with user 2's node key, the deployer of "steal", so that the reads of its
            # function believe this record (another key's copy is refused before the binding
            # check: the name is then published by two keys, neither the function's owner)
            attacker = load_or_create(cluster.nodes[1].data_dir)
            forged = sign_record(attacker, KIND, env.SerializeToString(),
                                 name=b"api_key", seq=victim.seq + 1, ttl_s=RECORD_TTL_S)
            assert await rogue.publish(forged) > 0

            deadline = time.monotonic() + 30            # "not hung" bound, not a timing claim
            while True:
                code, out, err = await cli("call", "steal", api=api[1])
                assert SECRET not in out + err, "the copied envelope opened the owner's value"
                if "did not seal" in err:               # the forged record was seen, refused
                    break
                assert time.monotonic() < deadline, err
                await asyncio.sleep(0.3)
            assert code == 1 and "PERMISSION_DENIED" in err, err


async def test_a_forged_call_does_not_run_with_a_deployed_function_s_identity(
        tmp_path: Path) -> None:
    (tmp_path / "price.py").write_text(PRICE)

    async with NodeCluster(tmp_path, 2, extra=["--sweep-interval", "0.5"]) as cluster:
        api = [n.api for n in cluster.nodes]
        proc = run_cli("secret", "set", "api_key", "--for", "price", api=api[0],
                       input_data=SECRET.encode())
        assert proc.returncode == 0, proc.stderr
        code, out, err = await cli("deploy", str(tmp_path / "price.py"), "--name", "price",
                                   "--json", api=api[0])
        assert code == 0, err
        owner_cid = json.loads(out)["cid"]
        want = hashlib.sha256(SECRET.encode()).hexdigest()[:8]
        for i in (0, 1):          # the owner's deployed function reads its secret everywhere
            code, out, err = await cli("call", "price", api=api[i])
            assert code == 0 and json.loads(out) == want, err

        owner = bytes.fromhex(await node_id(cluster, 0))
        target = bytes.fromhex(await node_id(cluster, 1))
        attacker = Identity.generate()
        pool = ChannelPool(attacker)
        try:
            peer = ComputePeer(cluster.nodes[1].member(pool, target))
            evil = STEAL.encode()
            evil_cid = cid_for(evil)
            assert await peer.store_code(evil_cid, evil)
            forged = [
                # the attacker's code, named as the owner's function (and deployer)
                compute_pb2.CallRequest(function="price", code_cid=evil_cid, entry="steal",
                                        worker_id="deployed", deployer=owner,
                                        deploy_seq=int(time.time() * 1000), timeout=10),
                # the owner's own module, at a helper the owner never deployed
                compute_pb2.CallRequest(function="price", code_cid=owner_cid, entry="dump",
                                        worker_id="deployed", deployer=owner,
                                        deploy_seq=int(time.time() * 1000), timeout=10),
            ]
            for request in forged:
                reply = await peer.call(request, timeout=20)
                result = values.from_value(reply.result) if not reply.failed else None
                assert result != SECRET, f"forged call {request.entry} got the secret"
                if request.code_cid == evil_cid:
                    assert reply.failed and reply.error.code == PERMISSION_DENIED, reply
                else:       # the owner's deploy runs, at the entry the owner published
                    assert not reply.failed and result == want, reply
        finally:
            await pool.close()
        code, out, err = await cli("call", "price", api=api[1])     # the owner's still works
        assert code == 0 and json.loads(out) == want, err


READ = '''
def read_key():
    return worker.get_secret("api_key")
'''
OTHER = '''
def other_read():
    try:
        return worker.get_secret("api_key")
    except PermissionError as exc:
        return "refused: " + str(exc)
'''


async def test_a_secret_published_under_the_owner_s_name_does_not_shadow_it(
        tmp_path: Path) -> None:
    """The attacker's record is genuine (its own value, sealed to every node, allowed to the
    owner's function) at sequence 2^63: the owner's function still reads the owner's value
    on every node. A function whose owner published no such secret, deployed by another
    node, is refused (two keys publish the name) instead of getting either; that refusal is
    also how the test knows the node running it sees the attacker's record."""
    (tmp_path / "read.py").write_text(READ)
    (tmp_path / "other.py").write_text(OTHER)
    async with NodeCluster(tmp_path, 3, extra=["--sweep-interval", "0.5"]) as cluster:
        api = [n.api for n in cluster.nodes]
        proc = run_cli("secret", "set", "api_key", "--for", "read_key", "--for", "other_read",
                       api=api[0], input_data=SECRET.encode())
        assert proc.returncode == 0, proc.stderr
        code, _, err = await cli("deploy", str(tmp_path / "read.py"), api=api[0])   # owner
        assert code == 0, err
        code, _, err = await cli("deploy", str(tmp_path / "other.py"), api=api[1])  # user 2
        assert code == 0, err
        ids = [bytes.fromhex(await node_id(cluster, i)) for i in range(3)]

        async with rogue_member(cluster) as rogue:
            keys = await node_keys(rogue, ids)
            data_key = nacl.utils.random(32)
            shadow = seal_record(
                rogue.identity, "api_key", 2**63, data_key,
                encrypt_value(rogue.identity.public_key, "api_key", b"attacker-value", data_key),
                ["read_key"], keys, True)
            assert await rogue.publish(shadow) > 0

            # until every node was seen refusing other_read for the two keys, each call of
            # the owner's function (through every node's API) must return the owner's value
            sees_both: set[str] = set()
            confirmed: set[str] = set()
            deadline = time.monotonic() + 60            # "not hung" bound, not a timing claim
            turn = 0
            while confirmed != {i.hex() for i in ids}:
                assert time.monotonic() < deadline, (sees_both, confirmed)
                rpc = cluster.stub(turn % 3, taskworker_pb2_grpc.RPCServiceStub)
                turn += 1
                for function in ("other_read", "read_key"):
                    resp = await rpc.CallFunction(taskworker_pb2.FunctionCallRequest(
                        function_name=function, timeout=20), timeout=25)
                    value = values.from_value(resp.result)
                    if function == "read_key":
                        assert value == SECRET, f"node {resp.node_id[:16]} read {value!r}"
                        if resp.node_id in sees_both:
                            confirmed.add(resp.node_id)
                    elif "published by 2 keys" in str(value):
                        sees_both.add(resp.node_id)
                    else:
                        assert value == SECRET or "refused" in str(value), value

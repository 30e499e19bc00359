"""A function that names its secret's owner (``get_secret(name, owner=...)``) never takes
another key's record, on real node processes (compute/proxy/reader.py).

The case the one-argument read cannot settle: user A sets a secret on node A for a function
that was deployed from node B (owner != deployer). Any mesh member may publish a genuine
secret of its own under the same name (the DHT key depends on the name only); while A's record
is missing (not set yet, lost from the DHT, squeezed out of the key's set) the intruder's is
the only one a reader sees, and the one-argument read takes it. Naming A refuses it.
"""

from __future__ import annotations

import time
from pathlib import Path

import nacl.utils

from compute import values
from compute.proxy.envelope import encrypt_value, seal_record
from proto import taskworker_pb2, taskworker_pb2_grpc
from tests.compute.test_deploy_ownership import cli, node_id
from tests.support.nodes import NodeCluster, run_cli
from tests.system.test_secret_identity import node_keys, rogue_member

SECRET = "tok-owner-5b0e2d71c9"
FORGED = "intruder-value-1e8a"
READ = '''
def read_both(owner):
    out = []
    for named in (None, owner):
        try:
            out.append(worker.get_secret("api_key") if named is None else
                       worker.get_secret("api_key", owner=named))
        except PermissionError as exc:
            out.append("refused: " + str(exc))
    return out
'''
REFUSED = "refused: no secret 'api_key' is available to this function"


async def test_a_named_owner_s_secret_is_never_another_key_s(tmp_path: Path) -> None:
    (tmp_path / "read.py").write_text(READ)
    async with NodeCluster(tmp_path, 3, extra=["--sweep-interval", "0.5"]) as cluster:
        api = [n.api for n in cluster.nodes]
        code, _, err = await cli("deploy", str(tmp_path / "read.py"), api=api[1])  # node B
        assert code == 0, err
        ids = [bytes.fromhex(await node_id(cluster, i)) for i in range(3)]
        owner = ids[0].hex()                                    # node A: sets the secret later

        async with rogue_member(cluster) as rogue:
            keys = await node_keys(rogue, ids)
            data_key = nacl.utils.random(32)
            shadow = seal_record(     # genuine: its own value, sealed to every node, allowed
                rogue.identity, "api_key", 2**63, data_key,
                encrypt_value(rogue.identity.public_key, "api_key", FORGED.encode(), data_key),
                ["read_both"], keys, True)
            assert await rogue.publish(shadow) > 0

            async def call(turn: int, named: str) -> tuple[str, list[str]]:
                rpc = cluster.stub(turn % 3, taskworker_pb2_grpc.RPCServiceStub)
                resp = await rpc.CallFunction(taskworker_pb2.FunctionCallRequest(
                    function_name="read_both", args=values.to_list([named]), timeout=20),
                    timeout=25)
                result = values.from_value(resp.result)
                assert isinstance(result, list), (resp.node_id, result, resp.error)
                return resp.node_id, [str(r) for r in result]

            # A's record is not there yet: the one-argument read takes the intruder's value on
            # every node (the documented limit); the same call naming A is refused
            seen: set[str] = set()
            deadline = time.monotonic() + 60            # "not hung" bound, not a timing claim
            turn = 0
            while seen != {i.hex() for i in ids}:
                assert time.monotonic() < deadline, seen
                node, (plain, named) = await call(turn, owner)
                turn += 1
                assert named == REFUSED, f"node {node[:16]} named the owner and read {named!r}"
                if plain == FORGED:
                    seen.add(node)
                else:
                    assert plain == REFUSED, plain      # before the node saw the intruder

            # A sets it, at a sequence far below the intruder's: a read naming A (its node id,
            # a 16-digit prefix of it, its public key) gets A's value on every node
            proc = run_cli("secret", "set", "api_key", "--for", "read_both", api=api[0],
                           input_data=SECRET.encode())
            assert proc.returncode == 0, proc.stderr
            forms = [owner, owner[:16].upper(), keys[ids[0]].hex()]
            confirmed: set[str] = set()
            deadline = time.monotonic() + 60            # "not hung" bound, not a timing claim
            while confirmed != {i.hex() for i in ids}:
                assert time.monotonic() < deadline, confirmed
                node, (plain, named) = await call(turn, forms[turn % 3])
                turn += 1
                assert named in (SECRET, REFUSED), (node, named)   # REFUSED: A not seen yet
                # unnamed: the intruder's until the node sees A's record; then two keys
                # publish the name, neither the deployer's, and it is refused as before
                assert plain == FORGED or "published by 2 keys" in plain, (node, plain)
                if named == SECRET:
                    confirmed.add(node)

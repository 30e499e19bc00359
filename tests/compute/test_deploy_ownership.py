"""Function-name ownership on real nodes, against other users and a rogue peer.

User A deploys ``price`` through node 0 (A's key owns the name). User B, through node 1, tries
to redeploy it: PERMISSION_DENIED with a one-line reason, and calls keep running A's code. A
rogue peer (a DHT node with its own key, in this process) then publishes straight into the DHT
a forged deploy record for ``price`` pointing at B's code and a backdated claim: honest nodes
refuse the claim, and every router ignores both. A's redeploy serves new calls. Finally A
hands the name to B, and B releases it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from compute import values
from compute.names import sign_claim
from compute.registry import sign_provider
from mesh.dht import Membership
from mesh.identity import Identity
from proto import compute_pb2, mesh_pb2, taskworker_pb2, taskworker_pb2_grpc
from tests.support.nodes import NodeCluster, run_cli

SHOP = '''
def price(n, unit=2.5):
    return {"total": n * unit, "version": VERSION}
'''

EVIL = '''
def helper():
    return "innocent"

def price(n, unit=2.5):
    return {"total": 0, "version": "evil"}
'''


async def cli(*args: str, api: str) -> tuple[int, str, str]:
    out = await asyncio.to_thread(run_cli, *args, api=api)
    return out.returncode, out.stdout.decode(), out.stderr.decode()


async def version_at(cluster: NodeCluster, index: int) -> Any:
    stub = cluster.stub(index, taskworker_pb2_grpc.RPCServiceStub)
    resp = await stub.CallFunction(taskworker_pb2.FunctionCallRequest(
        function_name="price", args=values.to_list([2])), timeout=30)
    return values.from_value(resp.result)["version"]


async def wait_version(cluster: NodeCluster, index: int, want: Any) -> None:
    deadline = time.monotonic() + 60                  # "not hung" bound, not a timing claim
    while True:
        try:
            if await version_at(cluster, index) == want:
                return
        except Exception:                             # noqa: BLE001 - not published yet
            pass
        assert time.monotonic() < deadline, f"node {index} never served version {want!r}"
        await asyncio.sleep(0.2)


async def providers_seen_by(cluster: NodeCluster, index: int) -> list[dict[str, Any]]:
    """`tw-mesh functions` does a fresh lookup, which also refreshes the node's cache."""
    code, out, err = await cli("functions", "price", "--json", api=cluster.nodes[index].api)
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)["providers"]
    return rows


async def node_id(cluster: NodeCluster, index: int) -> str:
    code, out, err = await cli("status", "--json", api=cluster.nodes[index].api)
    assert code == 0, err
    return str(json.loads(out)["node_id"])


async def test_only_the_owner_of_a_name_can_deploy_it_or_divert_its_calls(
        tmp_path: Path) -> None:
    for version in (1, 2, 3):
        (tmp_path / f"shop{version}.py").write_text(f"VERSION = {version}\n{SHOP}")
    (tmp_path / "evil.py").write_text(EVIL)
    extra = ["--sweep-interval", "0.5", "--provider-refresh", "0.3"]
    async with NodeCluster(tmp_path, 4, extra=extra) as cluster:
        a_api, b_api = cluster.nodes[0].api, cluster.nodes[1].api
        code, _, err = await cli("deploy", str(tmp_path / "shop1.py"), api=a_api)
        assert code == 0, err
        for index in range(4):
            await wait_version(cluster, index, 1)

        # B redeploys A's name: refused with one line; A's code keeps serving.
        code, out, err = await cli("deploy", str(tmp_path / "evil.py"), "--name", "price",
                                   api=b_api)
        assert code == 1 and out == ""
        assert len(err.strip().splitlines()) == 1 and "PERMISSION_DENIED" in err, err
        assert "owned by node" in err
        for index in range(4):
            await providers_seen_by(cluster, index)
            assert await version_at(cluster, index) == 1
        # B may deploy names of its own: its code (with a `price` in it) is now in the mesh.
        code, out, err = await cli("deploy", str(tmp_path / "evil.py"), "--name", "helper",
                                   "--json", api=b_api)
        assert code == 0, err
        evil_cid = json.loads(out)["cid"]

        # A rogue DHT peer forges a newer deploy of `price` and a backdated claim for it.
        rogue = Membership(Identity.generate(), host="127.0.0.1", port=0,
                           peer_record_factory=lambda: mesh_pb2.PeerRecord(roles=["storage"]))
        await rogue.start()
        try:
            host, port = cluster.nodes[2].peer.rsplit(":", 1)
            await rogue.bootstrap([(host, int(port))])
            forged = compute_pb2.ProviderRecord(
                function="price", worker_id="deployed", node_id=rogue.node_id,
                address=cluster.nodes[1].peer, code_cid=evil_cid,
                deploy_seq=int(time.time() * 1000) + 10**9, entry="price")
            stored = await rogue.publish(sign_provider(rogue.identity, forged, ttl_s=600))
            assert stored >= 3                        # a valid record: the DHT holds it
            claim = compute_pb2.NameClaim(function="price", claimed_ms=1)
            claim.deploy.CopyFrom(forged)
            acks = await rogue.publish(sign_claim(rogue.identity, claim, ttl_s=600))
            assert acks <= 1                          # (its own store at most): 4 refusals
            for index in range(4):
                rows = await providers_seen_by(cluster, index)
                assert rows and evil_cid not in {r["code_cid"] for r in rows}
                for _ in range(3):
                    assert await version_at(cluster, index) == 1
        finally:
            await rogue.stop()

        # The owner redeploys: new calls take the new version, everywhere.
        code, _, err = await cli("deploy", str(tmp_path / "shop2.py"), api=a_api)
        assert code == 0, err
        for index in range(4):
            await wait_version(cluster, index, 2)

        # `tw-mesh name`: the owner, then a transfer to B, then B's release.
        a_id, b_id = await node_id(cluster, 0), await node_id(cluster, 1)
        code, out, err = await cli("name", "price", "--json", api=b_api)
        assert code == 0 and json.loads(out)["owner_id"] == a_id and not json.loads(out)["mine"]
        code, out, err = await cli("name", "price", "--release", api=b_api)
        assert code == 1 and "PERMISSION_DENIED" in err
        code, out, err = await cli("name", "price", "--transfer", b_id, api=a_api)
        assert code == 0 and b_id in out, err
        code, _, err = await cli("deploy", str(tmp_path / "shop3.py"), api=b_api)
        assert code == 0, err
        for index in range(4):
            await wait_version(cluster, index, 3)
        code, _, err = await cli("deploy", str(tmp_path / "shop1.py"), api=a_api)
        assert code == 1 and "PERMISSION_DENIED" in err
        code, out, err = await cli("name", "price", "--release", "--json", api=b_api)
        assert code == 0 and json.loads(out)["owner_id"] == "", out
        for bad in (["name", ""], ["name", "price", "--transfer", "00" * 20],
                    ["name", "price", "--transfer", "xyz"]):
            code, out, err = await cli(*bad, api=a_api)
            assert code == 1 and len(err.strip().splitlines()) == 1, (bad, err)
        # Released: the next deploy claims it, whoever makes it.
        code, _, err = await cli("deploy", str(tmp_path / "shop1.py"), api=cluster.nodes[2].api)
        assert code == 0, err
        code, out, err = await cli("name", "price", "--json", api=a_api)
        assert json.loads(out)["owner_id"] == await node_id(cluster, 2)


async def test_two_first_deploys_racing_converge_on_one_owner(tmp_path: Path) -> None:
    """Two users deploy one new name at the same moment: every node ends up agreeing on one
    owner (the earliest stamped claim) and serving that owner's code; the other user is told
    PERMISSION_DENIED, now or on its next deploy."""
    for who in ("b", "c"):
        (tmp_path / f"{who}.py").write_text(f"def race():\n    return {who!r}\n")
    async with NodeCluster(tmp_path, 4, extra=["--provider-refresh", "0.3"]) as cluster:
        results = await asyncio.gather(
            cli("deploy", str(tmp_path / "b.py"), api=cluster.nodes[1].api),
            cli("deploy", str(tmp_path / "c.py"), api=cluster.nodes[2].api))
        assert any(code == 0 for code, _, _ in results), results
        for code, _, err in results:
            assert code == 0 or "PERMISSION_DENIED" in err, err
        owners = set()
        for index in range(4):
            code, out, err = await cli("name", "race", "--json", api=cluster.nodes[index].api)
            assert code == 0, err
            owners.add(json.loads(out)["owner_id"])
        assert len(owners) == 1
        (owner,) = owners
        winner, loser = (1, 2) if owner == await node_id(cluster, 1) else (2, 1)
        assert owner == await node_id(cluster, winner)
        expected = "b" if winner == 1 else "c"
        for index in range(4):
            stub = cluster.stub(index, taskworker_pb2_grpc.RPCServiceStub)
            deadline = time.monotonic() + 60
            while True:
                try:
                    resp = await stub.CallFunction(
                        taskworker_pb2.FunctionCallRequest(function_name="race"), timeout=30)
                    if values.from_value(resp.result) == expected:
                        break
                except Exception:                     # noqa: BLE001 - not published yet
                    pass
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        mine = "b" if loser == 1 else "c"
        code, _, err = await cli("deploy", str(tmp_path / f"{mine}.py"),
                                 api=cluster.nodes[loser].api)
        assert code == 1 and "PERMISSION_DENIED" in err

"""Issue 2 on real processes: `tw-mesh join` subprocesses on 127.0.0.1 with free ports."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from kademlia.network import Server as StockServer

from proto import taskworker_pb2, taskworker_pb2_grpc
from tests.support.nodes import NodeCluster, run_cli


async def _ids(cluster: NodeCluster) -> dict[int, str]:
    return {i: (await cluster.peers_of(i)).self_id
            for i, n in enumerate(cluster.nodes) if n.alive}


async def test_ten_nodes_converge_closest_kill_restart(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 10) as cluster:
        ids = await _ids(cluster)
        assert len(set(ids.values())) == 10
        for i in ids:                                   # full membership everywhere
            seen = {p.node_id for p in (await cluster.peers_of(i)).peers}
            assert seen == set(ids.values()) - {ids[i]}

        # closest_peers == brute-force XOR sort of the live set, for 1,000 random keys
        rng = random.Random(7)
        live = [bytes.fromhex(x) for x in ids.values()]
        stubs = [cluster.stub(i, taskworker_pb2_grpc.NodeServiceStub) for i in (0, 5, 9)]
        for trial in range(1000):
            key = rng.randbytes(20)
            n = rng.choice([1, 3, 6, 10])
            want = sorted(live, key=lambda x: int.from_bytes(x, "big") ^ int.from_bytes(key, "big"))[:n]
            resp = await stubs[trial % 3].Closest(taskworker_pb2.ClosestRequest(key=key, n=n))
            assert [bytes.fromhex(p.node_id) for p in resp.peers] == want

        # kill -9 three nodes: every survivor drops them within 10 s
        victims = [2, 4, 7]
        for v in victims:
            cluster.nodes[v].kill()
        dead = {ids[v] for v in victims}
        start = time.monotonic()
        while True:
            views = [{p.node_id for p in (await cluster.peers_of(i)).peers}
                     for i in ids if i not in victims]
            if all(not (v & dead) for v in views):
                break
            assert time.monotonic() - start < 10.0, f"dead nodes still listed after 10 s: {views}"
            await asyncio.sleep(0.2)

        # a restarted node rejoins with its old ID and everyone sees it again
        await cluster.restart(4)
        assert (await cluster.peers_of(4)).self_id == ids[4]
        await cluster.wait_converged(timeout=30)


async def test_impostor_claiming_a_live_id_is_refused(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 3) as cluster:
        ids = await _ids(cluster)
        victim = bytes.fromhex(ids[1])
        impostor = StockServer(node_id=victim)
        await impostor.listen(0, interface="127.0.0.1")
        try:
            # It pings and asks every node (a stock client could not parse the short answer
            # with an address token a node gives an address it has not admitted, so it is
            # shown the nodes rather than left to find them through FIND_NODE).
            for node in cluster.nodes:
                host, port = node.peer.split(":")
                contact = await impostor.bootstrap_node((host, int(port)))
                assert contact is not None
                await impostor.protocol.call_find_node(contact, impostor.node)
            imp_port = impostor.transport.get_extra_info("sockname")[1]
            await asyncio.sleep(2.0)     # several sweep intervals
            for i in ids:
                for p in (await cluster.peers_of(i)).peers:
                    assert p.address != f"127.0.0.1:{imp_port}", "impostor admitted"
            # the real owner of that ID is still listed with its real address
            listed = {p.node_id: p.address for p in (await cluster.peers_of(0)).peers}
            assert listed[ids[1]] == cluster.nodes[1].peer
        finally:
            impostor.stop()


async def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    bad = run_cli("join", "--listen", "nonsense", "--data-dir", str(tmp_path / "x"))
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr
    for port in ("70000", "-1", "x"):
        bad = run_cli("join", "--channel-port", port, "--data-dir", str(tmp_path / "x"))
        assert bad.returncode == 2 and b"--channel-port" in bad.stderr
        assert b"Traceback" not in bad.stderr
    unreachable = run_cli("join", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0",
                          "--data-dir", str(tmp_path / "y"), "--bootstrap", "127.0.0.1:9",
                          "--rpc-timeout", "0.3")
    assert unreachable.returncode == 1
    assert unreachable.stderr.decode().strip().splitlines()[-1].startswith("tw-mesh: error: no bootstrap")
    assert b"Traceback" not in unreachable.stderr
    no_node = run_cli("peers", api="127.0.0.1:9")
    assert no_node.returncode == 1 and no_node.stderr.count(b"\n") == 1
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "node.key").write_text("junk")
    (tmp_path / "z" / "node.key").chmod(0o600)
    corrupt = run_cli("join", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0",
                      "--data-dir", str(tmp_path / "z"))
    assert corrupt.returncode == 1 and b"corrupt" in corrupt.stderr
    assert b"Traceback" not in corrupt.stderr


async def test_sigterm_is_graceful_and_id_is_stable(tmp_path: Path) -> None:
    async with NodeCluster(tmp_path, 2) as cluster:
        first = (await cluster.peers_of(1)).self_id
        assert cluster.nodes[1].terminate() == 0
        assert "stopped" in cluster.nodes[1].log_path.read_text()
        await cluster.restart(1)
        assert (await cluster.peers_of(1)).self_id == first


@pytest.mark.parametrize("flag", ["--json", ""])
async def test_peers_cli(tmp_path: Path, flag: str) -> None:
    async with NodeCluster(tmp_path, 2) as cluster:
        out = run_cli("peers", *([flag] if flag else []), api=cluster.nodes[0].api)
        assert out.returncode == 0, out.stderr
        assert cluster.nodes[1].peer.encode() in out.stdout


async def test_joining_another_mesh_by_name_is_refused(tmp_path: Path) -> None:
    """`--mesh` on real processes: a node of mesh "beta" given an "alpha" node as bootstrap
    exits with an error naming both meshes; the alpha mesh never sees it."""
    async with NodeCluster(tmp_path, 2, extra=["--sweep-interval", "0.5", "--mesh", "alpha"]) \
            as cluster:
        out = run_cli("join", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0",
                      "--data-dir", str(tmp_path / "beta"), "--mesh", "beta",
                      "--bootstrap", cluster.nodes[0].peer, "--rpc-timeout", "0.5")
        assert out.returncode == 1, out.stderr
        last = out.stderr.decode().strip().splitlines()[-1]
        assert "belongs to mesh 'alpha', this node to 'beta'" in last and "--mesh alpha" in last
        assert b"Traceback" not in out.stderr
        peers = await cluster.peers_of(0)
        assert len(peers.peers) == 1  # only the other alpha node
        status = run_cli("status", "--json", api=cluster.nodes[0].api)
        assert '"mesh": "alpha"' in status.stdout.decode()
        text = run_cli("status", api=cluster.nodes[0].api).stdout.decode()
        assert "channel: TCP port " in text and "hedged_calls=0" in text, text
        assert "storage: " in text and "fragment_hedges=0" in text, text
    bad = run_cli("join", "--mesh", "no spaces/please", "--data-dir", str(tmp_path / "x"))
    assert bad.returncode == 2 and b"mesh name" in bad.stderr

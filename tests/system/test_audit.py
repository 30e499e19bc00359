"""Audits on real nodes: a holder that dropped its fragments but answers HasFragments
"present" for them is caught by the repair leaders' fetches, and its copies are rebuilt.

The liar runs tests/support/liar_site (its HasFragments handler patched in its own process;
FetchFragment is untouched). Without audits (``--audit-rate 0``) repair believes it forever:
run with AUDIT_RATE="0" and this test fails (not healed).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from proto import storage_pb2, taskworker_pb2, taskworker_pb2_grpc
from storage.manifest import manifest_key
from tests.support.nodes import ROOT, NodeCluster, NodeProc
from tests.system.test_repair import (
    FAST,
    HEAL_BOUND_S,
    check_gets,
    fragments_on,
    health,
    manifests,
    push_files,
    wait_healthy,
)

AUDIT_RATE = "65536"     # the default: in a mesh this small every reported copy is fetched each pass


def _site(name: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(
        [str(ROOT / "tests" / "support" / name), str(ROOT), os.environ.get("PYTHONPATH", "")])}


LIAR_ENV = _site("liar_site")
WITHHOLDER_ENV = _site("withholder_site")


def leader(cid: str, ids: list[bytes]) -> bytes:
    """The file's repair leader: the live node XOR-closest to its manifest key."""
    key = int.from_bytes(manifest_key(cid))
    return min(ids, key=lambda p: int.from_bytes(p) ^ key)


async def make_liar(cluster: NodeCluster, index: int, env: dict[str, str] = LIAR_ENV,
                    drop: bool = True) -> NodeProc:
    """Restart node ``index`` with ``env``'s patch: by default its fragment files deleted and
    HasFragments lying (``drop=False``: files kept)."""
    old = cluster.nodes[index]
    old.kill()
    for path in (old.data_dir / "fragments").glob("??/*") if drop else ():
        if len(path.name) == 64 and "." not in path.name:
            path.unlink()
    liar = NodeProc(old.data_dir, old.extra, env)
    liar.start([n.peer for n in cluster.live() if n is not old][:3])
    cluster.nodes[index] = liar
    await liar.wait_ready()
    await cluster.wait_converged()
    assert ("LIAR:" if env is LIAR_ENV else "WITHHOLDER:") in liar.log_path.read_text()
    return liar


async def healthy_files(cluster: NodeCluster, seed: int
                        ) -> tuple[dict[str, bytes], dict[str, storage_pb2.ManifestBody],
                                   list[bytes]]:
    """12 public files pushed and fully placed: their bytes, manifests and the nodes' ids."""
    files = await push_files(cluster, 12, seed=seed)
    bodies = manifests(cluster.nodes)
    await wait_healthy(bodies, cluster, HEAL_BOUND_S)
    ids = {bytes.fromhex(p.node_id) for i in (0, 1) for p in (await cluster.peers_of(i)).peers}
    by_prefix = {p.hex()[:16]: p for p in ids}
    return files, bodies, [by_prefix[n.node_id_prefix] for n in cluster.nodes]


def led_by_others(bodies: dict[str, storage_pb2.ManifestBody], node_ids: list[bytes],
                  holder: bytes) -> dict[str, storage_pb2.ManifestBody]:
    """Files led by another node that ``holder`` holds fragments of (a node does not audit
    itself: its own files stay as it says)."""
    return {cid: b for cid, b in bodies.items() if leader(cid, node_ids) != holder
            and holder in [bytes(h) for h in b.holders]}


async def repair_status(cluster: NodeCluster) -> list[dict[str, Any]]:
    """Every node's Status ``services.repair``."""
    out = []
    for i in range(len(cluster.nodes)):
        doc = await cluster.stub(i, taskworker_pb2_grpc.NodeServiceStub).Status(
            taskworker_pb2.StatusRequest(), timeout=10)
        out.append(json.loads(doc.json)["services"]["repair"])
    return out


def failed_holders(status: list[dict[str, Any]]) -> dict[str, int]:
    failed: dict[str, int] = {}
    for repair in status:
        for peer, count in repair["audit_failed_holders"].items():
            failed[peer] = failed.get(peer, 0) + count
    return failed


async def test_a_holder_lying_about_dropped_fragments_is_audited_and_repaired(
        tmp_path: Path) -> None:
    extra = [*FAST, "--audit-rate", AUDIT_RATE]
    async with NodeCluster(tmp_path, 7, extra=extra) as cluster:
        files, bodies, node_ids = await healthy_files(cluster, 21)
        index = max(range(1, 7), key=lambda i: len(led_by_others(bodies, node_ids, node_ids[i])))
        liar_id = node_ids[index]
        mine = led_by_others(bodies, node_ids, liar_id)
        assert mine
        # copies only the liar has, which it is about to lose (checked before: the leaders'
        # audits may rebuild them all before the restarted liar is seen converged)
        missing, _ = health(mine, [n for n in cluster.live() if n is not cluster.nodes[index]])
        assert missing > 0
        await make_liar(cluster, index)
        took = await wait_healthy(mine, cluster, HEAL_BOUND_S)
        print(f"{missing} lied-about fragments rebuilt in {took:.1f}s")
        assert not fragments_on(cluster.nodes[index])   # rebuilt elsewhere, not on the liar
        status = await repair_status(cluster)
        for repair in status:
            assert repair["audits"] >= repair["audit_failures"]
        failed = failed_holders(status)
        assert set(failed) == {liar_id.hex()[:16]}, failed   # only the liar failed audits
        await check_gets(cluster, 0, files)


async def test_a_holder_that_keeps_fragments_but_never_serves_them_is_audited_and_repaired(
        tmp_path: Path) -> None:
    """The withholder answers HasFragments truthfully and every FetchFragment "busy": one
    audit cannot tell it from a loaded holder, three passes in a row do, and its copies are
    rebuilt elsewhere. Without the strikes it only ever counts as slow (this test times out)."""
    extra = [*FAST, "--audit-rate", AUDIT_RATE]
    async with NodeCluster(tmp_path, 7, extra=extra) as cluster:
        files, bodies, node_ids = await healthy_files(cluster, 22)
        index = max(range(1, 7), key=lambda i: len(led_by_others(bodies, node_ids, node_ids[i])))
        mine = led_by_others(bodies, node_ids, node_ids[index])
        assert mine
        withheld = await make_liar(cluster, index, WITHHOLDER_ENV, drop=False)
        kept = fragments_on(withheld)
        wanted = {bytes(f.hash) for b in mine.values() for st in b.stripes
                  for f in st.fragments} & kept
        assert wanted                                    # it still holds copies of them

        def elsewhere() -> set[bytes]:
            others = set().union(*(fragments_on(n) for n in cluster.live() if n is not withheld))
            return wanted - others

        started = time.monotonic()
        while (left := await asyncio.to_thread(elsewhere)):
            assert time.monotonic() - started < HEAL_BOUND_S, f"{len(left)} copies only withheld"
            await asyncio.sleep(1.0)
        status = await repair_status(cluster)
        assert sum(repair["audit_withheld"] for repair in status) > 0
        failed = failed_holders(status)
        assert set(failed) == {node_ids[index].hex()[:16]}, failed
        await check_gets(cluster, 0, files)

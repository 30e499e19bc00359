"""A tiny swarm of real nodes: it joins, finds the closest peers, and survives churn."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations import swarm
from simulations.swarm_nodes import mesh_available


@pytest.mark.parametrize("backend", ["auto", "kademlia"])
async def test_tiny_swarm(backend: str, tmp_path: Path) -> None:
    ns = swarm.parse_args(
        [
            "--nodes",
            "16",
            "--procs",
            "1",
            "--lookups",
            "8",
            "--churn",
            "0.25",
            "--settle",
            "0",
            "--backend",
            backend,
            "--out",
            str(tmp_path),
        ]
    )
    label, phases = await swarm.run(ns)
    if backend == "kademlia" or not mesh_available():
        assert "FALLBACK" in label
    else:
        assert "mesh.dht" in label
    assert [p.name for p in phases] == ["no churn", "25% churn, at once", "25% churn, +0 s"]
    base = phases[0]
    assert len(base.joins_s) == 15 and len(base.lookups) == 8
    assert all(x.rpcs >= 0 and x.returned > 0 for x in base.lookups)
    # 16 nodes all know each other: the baseline lookups must be (nearly) exact.
    assert sum(x.accuracy for x in base.lookups) / len(base.lookups) >= 0.9
    assert all(p.live == 16 for p in phases)
    assert swarm.table(phases).count("\n") == len(phases) + 1

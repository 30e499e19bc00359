"""Plots for the swarm run (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

from simulations.plots import save

if TYPE_CHECKING:
    from simulations.swarm_phases import Phase


def plot(phases: list[Phase], label: str, out: Path) -> list[Path]:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for p in phases:
        lat = sorted(1e3 * x.latency_s for x in p.lookups)
        a1.plot(lat, [(i + 1) / len(lat) for i in range(len(lat))], label=p.name)
    a1.set_xscale("log")
    a1.set_xlabel("lookup latency (ms)")
    a1.set_ylabel("CDF")
    a1.grid(alpha=0.3, which="both")
    a1.legend(fontsize=7)
    names = [p.name for p in phases]
    accs = [[100 * x.accuracy for x in p.lookups] for p in phases]
    a2.boxplot(accs, tick_labels=names, showmeans=True)
    a2.set_ylabel("closest-peers accuracy vs brute force (%)")
    a2.tick_params(axis="x", rotation=30, labelsize=7)
    fig.suptitle(f"{phases[0].live} nodes — {label}", fontsize=9)
    paths = [save(fig, out, "swarm_lookups.png")]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    joins = phases[0].joins_s
    ax.plot(range(1, len(joins) + 1), [1e3 * j for j in joins], ".", ms=2)
    ax.set_xlabel("join order")
    ax.set_ylabel("bootstrap time (ms)")
    ax.set_yscale("log")
    ax.set_title("Join time as the swarm grows", fontsize=9)
    paths.append(save(fig, out, "swarm_joins.png"))
    return paths

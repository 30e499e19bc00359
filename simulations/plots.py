"""Matplotlib (Agg) figures for the simulations; each function writes one PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def save(fig: Figure, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def storj_validation(
    labels: Sequence[str],
    closed: Sequence[float],
    ctmc: Sequence[float],
    des: Sequence[float],
    des_err: Sequence[float],
    out: Path,
) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(labels))
    ax.scatter(x, closed, marker="_", s=400, color="black", label="closed form (Storj)", zorder=3)
    ax.scatter(x, ctmc, marker="x", color="tab:blue", label="CTMC", zorder=4)
    ax.errorbar(
        x,
        des,
        yerr=[2 * e for e in des_err],
        fmt="o",
        mfc="none",
        color="tab:red",
        label="DES ±2σ (importance sampling)",
        zorder=2,
    )
    ax.set_yscale("log")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("P(file lost within one month)")
    ax.set_title("Storj v3 model, 10% monthly churn, no repair")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save(fig, out, "storj_validation.png")


def grace_sweep(
    graces_s: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    points: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    title: str,
    out: Path,
) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    g_min = [g / 60 for g in graces_s]
    for label, ys in curves.items():
        ax.plot(g_min, ys, marker=".", label=label)
    for label, (gx, ys, err) in points.items():
        ax.errorbar(
            [g / 60 for g in gx],
            ys,
            yerr=[2 * e for e in err],
            fmt="o",
            mfc="none",
            color="black",
            label=label,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("repair grace (minutes)")
    ax.set_ylabel("P(file lost within a year)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save(fig, out, "defaults_grace.png")


def churn_sweep(churns: Sequence[float], curves: Mapping[str, Sequence[float]], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, ys in curves.items():
        ax.plot([100 * c for c in churns], [max(y, 1e-30) for y in ys], marker=".", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("monthly node churn (%)")
    ax.set_ylabel("P(file lost within a year)")
    ax.set_title("Codes at 1.5x / 2x / 3x overhead, shipped repair timing (CTMC)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save(fig, out, "codes_churn.png")


def traffic_hist(per_node: Mapping[str, Sequence[float]], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, xs in per_node.items():
        ax.hist(xs, bins=60, histtype="step", label=label)
    ax.set_xlabel("repair traffic per node, in + out (GiB/month)")
    ax.set_ylabel("nodes")
    ax.set_title("Repair traffic across a 10,000-node population (DES)")
    ax.legend(fontsize=8)
    return save(fig, out, "repair_traffic.png")

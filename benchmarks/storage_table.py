"""The storage benchmark's table: tw-mesh beside Tahoe-LAFS, medians (MB/s or ms), the goals,
and CPU per op (load-robust where the wall figures are not)."""

from __future__ import annotations

import statistics

MiB = 1 << 20


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def table(mesh: dict[str, list[float]], tahoe: dict[str, list[float]] | None, big: int,
          runs: int, small_runs: int) -> str:
    lines = ["| op | tw-mesh | Tahoe-LAFS 1.20 | tw-mesh / Tahoe | goal | CPU/op tw-mesh | "
             "CPU/op Tahoe |", "|---|---|---|---|---|---|---|"]

    def twin(key: str) -> str:  # Tahoe's download has no cache to miss: one row for both
        return "small_down" if key == "small_cold" else key

    def cpu(key: str) -> str:  # a mean: /proc counts in 10 ms ticks, finer than one small op
        ours = f"{statistics.fmean(mesh['cpu_' + key]) * 1e3:.1f} ms"
        return (f"{ours} | {statistics.fmean(tahoe['cpu_' + twin(key)]) * 1e3:.1f} ms"
                if tahoe else f"{ours} | –")

    for key, label, goal in (("big_up", f"{big // MiB} MiB Push (MB/s)", "≥ 5×"),
                             ("big_down", f"{big // MiB} MiB Get (MB/s)", "≥ 5×")):
        ours = big / median(mesh[key]) / 1e6
        theirs = big / median(tahoe[key]) / 1e6 if tahoe else float("nan")
        ratio = f"{ours / theirs:.1f}×" if tahoe else "–"
        lines.append(f"| {label} | {ours:.0f} | {theirs:.0f} | {ratio} | {goal} | {cpu(key)} |")
    for key, label, goal in (("small_up", "1 KiB Push (ms)", "≤ 0.20"),
                             ("small_down", "1 KiB Get at the pushing node (ms)", "≤ 0.20"),
                             ("small_cold", "1 KiB Get at a node without the file's manifest "
                              "(ms)", "≤ 0.20"),
                             ("mid_up", "1 MiB Push (ms)", "–"), ("mid_down", "1 MiB Get (ms)", "–")):
        ours = median(mesh[key]) * 1e3
        theirs = median(tahoe[twin(key)]) * 1e3 if tahoe else float("nan")
        ratio = f"{ours / theirs:.2f}" if tahoe else "–"
        lines.append(f"| {label} | {ours:.1f} | {theirs:.1f} | {ratio} | {goal} | {cpu(key)} |")
    lines.append("")
    lines.append(f"Medians of {runs} runs ({big // MiB} MiB), {small_runs} runs (1 KiB) and "
                 f"{small_runs // 2} (1 MiB); the pushing node keeps the manifests it wrote "
                 "(storage/known.py), a node without it asks a manifest replica (public files, "
                 "one per run); "
                 "tw-mesh 1 KiB p90 up/down: "
                 f"{percentile(mesh['small_up'], 0.9) * 1e3:.1f} / "
                 f"{percentile(mesh['small_down'], 0.9) * 1e3:.1f} ms. "
                 "CPU/op: CPU seconds of every "
                 "process (client, nodes or Tahoe nodes), mean per op; load-robust where the "
                 "wall figures are not.")
    return "\n".join(lines)


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")

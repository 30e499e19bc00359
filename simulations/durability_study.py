"""The whole study of ``python -m simulations.durability``: five tables (printed, and written to
OUT/durability.md) and the figures, from the closed form, the CTMC and the DES."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from simulations import closed_form, plots, study
from simulations.model import Repair


def repair_from(ns: argparse.Namespace, threshold: int | None) -> Repair:
    return Repair(
        threshold=threshold,
        interval_s=ns.repair_interval,
        grace_s=ns.repair_grace,
        bandwidth_Bps=ns.repair_bandwidth * 1e6,
        segment_bytes=ns.segment_mib * 2**20,
    )


def full_study(ns: argparse.Namespace) -> None:
    t0 = time.monotonic()
    lines: list[str] = []

    def emit(s: str = "") -> None:
        print(s)
        lines.append(s)

    base = repair_from(ns, study.SHIPPED_REPAIR.threshold)
    emit("## 1. Storj v3 model reproduced (10% monthly churn, one month, no repair)\n")
    emit(
        "| code | whitepaper | closed form | CTMC loss | DES loss (1e5, plain) | "
        "DES loss (IS) | binomial loss |"
    )
    emit("|---|---|---|---|---|---|---|")
    rows = study.storj_validation(ns.files, ns.seed)
    for r in rows:
        loss = float(1 - r.closed)
        ok = "✓" if r.matches_table else "✗"
        emit(
            f"| {r.code.k}-of-{r.code.n} | {r.table}% | {closed_form.format_percent(r.closed)} "
            f"{ok} | {r.ctmc:.4e} (closed {loss:.4e}) | {r.plain.text()} | {r.sampled.text()} "
            f"| {r.binomial:.3e} |"
        )
    plots.storj_validation(
        [f"{r.code.k}/{r.code.n}" for r in rows],
        [float(1 - r.closed) for r in rows],
        [r.ctmc for r in rows],
        [r.sampled.p for r in rows],
        [r.sampled.se for r in rows],
        ns.out,
    )

    emit(f"\n## 2. Shipped code RS(4,2), one year, {100 * ns.monthly_churn:g}% monthly churn\n")
    emit("| repair | CTMC loss/yr | DES loss/yr | repairs/file/yr | traffic (x stored/yr) |")
    emit("|---|---|---|---|---|")
    settings = [
        ("none", replace(base, threshold=None)),
        ("T=0, interval 300 s, grace 600 s", replace(base, threshold=0)),
        ("T=1, interval 3600 s, grace 86400 s", replace(base, interval_s=3600, grace_s=86400)),
        ("T=1, interval 600 s, grace 3600 s", replace(base, interval_s=600, grace_s=3600)),
        ("**T=1, interval 300 s, grace 600 s (shipped)**", base),
        ("T=1, interval 60 s, grace 300 s", replace(base, interval_s=60, grace_s=300)),
    ]
    for i, (label, rep) in enumerate(settings):
        r2 = study.annual(study.SHIPPED_CODE, ns.monthly_churn, rep, ns.files, ns.seed + i)
        assert r2.des is not None
        emit(
            f"| {label} | {r2.ctmc:.2e} | {r2.des.text()} | {r2.repairs_per_year:.2f} | "
            f"{r2.traffic_per_stored_byte:.2f} |"
        )

    emit("\n## 3. Shipped repair timing across churn (CTMC, loss/yr, T as shown)\n")
    churns = [0.01, 0.02, 0.05, 0.10, 0.20]
    sweep = study.churn_sweep(churns, base)
    emit("| code | " + " | ".join(f"{100 * c:g}%/mo" for c in churns) + " |")
    emit("|---|" + "---|" * len(churns))
    for label, ys in sweep.items():
        emit(f"| {label} | " + " | ".join(f"{y:.1e}" for y in ys) + " |")
    plots.churn_sweep(churns, sweep, ns.out)

    emit(
        f"\n## 4. Codes at equal overhead, one year, {100 * ns.monthly_churn:g}% churn, "
        "shipped timing\n"
    )
    emit(
        "| code | overhead | T | CTMC loss/yr | DES loss/yr | repairs/file/yr | "
        "traffic (x stored/yr) |"
    )
    emit("|---|---|---|---|---|---|---|")
    for r3 in study.code_comparison(ns.monthly_churn, ns.files, ns.seed, base):
        assert r3.des is not None
        emit(
            f"| {r3.code.label()} | {r3.code.overhead:g}x | {r3.repair.threshold} | "
            f"{r3.ctmc:.2e} | {r3.des.text()} | {r3.repairs_per_year:.2f} | "
            f"{r3.traffic_per_stored_byte:.2f} |"
        )

    graces = [60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0]
    curves: dict[str, list[float]] = {}
    for (thr, iv), ys in study.grace_sweep(
        study.SHIPPED_CODE, ns.monthly_churn, graces, [60.0, 300.0, 3600.0], [0, 1]
    ).items():
        curves[f"T={thr}, interval {iv:g} s (CTMC)"] = ys
    pts_g = [600.0, 3600.0, 14400.0, 86400.0]
    pts = [
        study.annual(
            study.SHIPPED_CODE,
            ns.monthly_churn,
            replace(base, grace_s=g),
            ns.files // 2,
            ns.seed + 50 + j,
        )
        for j, g in enumerate(pts_g)
    ]
    plots.grace_sweep(
        graces,
        curves,
        {
            "T=1, interval 300 s (DES)": (
                pts_g,
                [p.des.p if p.des else 0.0 for p in pts],
                [p.des.se if p.des else 0.0 for p in pts],
            )
        },
        f"RS(4,2), {100 * ns.monthly_churn:g}% monthly churn: loss in a year vs repair grace",
        ns.out,
    )

    emit(
        f"\n## 5. Population DES: files share holders, {ns.files} files "
        f"({ns.node_storage_gib:g} GiB stored per node)\n"
    )
    emit(
        "| nodes | lifetimes | repair | loss/yr (population) | loss/yr (independent holders) "
        "| traffic GiB/node/month median / p99 / max |"
    )
    emit("|---|---|---|---|---|---|")
    hist: dict[str, list[float]] = {}
    stressed = replace(base, interval_s=3600, grace_s=86400)
    for nodes, life, rep, tag in [
        (ns.nodes, "exponential", stressed, "T=1, 3600 s / 86400 s"),
        (ns.nodes, "weibull", stressed, "T=1, 3600 s / 86400 s"),
        (ns.nodes * 10, "exponential", stressed, "T=1, 3600 s / 86400 s"),
        (ns.nodes, "exponential", base, "shipped"),
    ]:
        pr = study.population_run(
            study.SHIPPED_CODE,
            ns.monthly_churn,
            rep,
            nodes,
            ns.files,
            ns.seed + 9,
            ns.node_storage_gib,
            life,
        )
        t = pr.node_gib_month
        emit(
            f"| {nodes} | {life} | {tag} | {pr.loss.text()} | {pr.independent.text()} | "
            f"{t[len(t) // 2]:.1f} / {t[int(len(t) * 0.99)]:.1f} / {t[-1]:.1f} |"
        )
        if tag == "shipped" or life == "weibull":
            hist[f"{life}, {tag}"] = t
    plots.traffic_hist(hist, ns.out)
    mb_s = max(hist["exponential, shipped"]) * 2**30 / (30.44 * 86400) / 1e6
    emit(
        f"\nBusiest node's repair traffic ≈ {mb_s:.3f} MB/s against a {ns.repair_bandwidth:g} "
        "MB/s repair bandwidth limit."
    )
    emit(f"\n(total {time.monotonic() - t0:.0f} s, seed {ns.seed})")
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "durability.md").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {ns.out}/durability.md and PNGs", file=sys.stderr)

"""The durability experiments behind simulations/README.md: each returns plain rows."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from decimal import Decimal

from simulations import closed_form, ctmc, des
from simulations.model import MONTHS_PER_YEAR, Code, LossModel, Repair, node_leave_rate

# What this project ships (see README "shipped defaults"); the study sweeps around it.
SHIPPED_CODE = Code(4, 6)
SHIPPED_REPAIR = Repair(threshold=1, interval_s=300.0, grace_s=600.0)


def auto_tilt(code: Code, mu: float, horizon: float, repair: Repair) -> float:
    """An importance-sampling tilt that makes the rare loss paths common (1.0 = plain MC).

    Without repair: holders leave fast enough that n-k+1 of n leave within the horizon.
    With repair: a few per cent of a pending repair's window sees a departure per holder
    (larger tilts let the likelihood ratios of lossless windows compound over a year).
    """
    if not repair.enabled:
        need = (code.n - code.k + 1) / code.n
        return max(1.0, need / (mu * horizon))
    mean, _ = repair.delay_moments_months(code)
    return max(1.0, 0.05 / (mu * mean))


@dataclass(frozen=True)
class Estimate:
    """A loss probability from the DES, with its standard error and sample size."""

    p: float
    se: float
    files: int
    lost: int
    tilt: float

    def text(self) -> str:
        if self.p == 0.0:
            return f"0 of {self.files} (p < {3 / self.files:.1e}, 95%)"
        return f"{self.p:.3g} ± {self.se:.2g}"


def run_des(
    code: Code,
    mu: float,
    horizon: float,
    repair: Repair,
    files: int,
    seed: int,
    loss_model: LossModel = "node",
    tilt: float | None = None,
) -> tuple[Estimate, des.Result]:
    t = auto_tilt(code, mu, horizon, repair) if tilt is None else tilt
    res = des.simulate(code, mu, horizon, repair, files, seed, loss_model, tilt=t)
    return Estimate(res.loss_probability, res.std_error, files, res.lost, t), res


@dataclass(frozen=True)
class StorjRow:
    code: Code
    table: str
    closed: Decimal
    ctmc: float
    plain: Estimate
    sampled: Estimate
    binomial: float

    @property
    def matches_table(self) -> bool:
        """Equal to the table's 15 decimals, up to the float64 round-off of its last digit."""
        return abs(self.closed * 100 - Decimal(self.table)) < Decimal("3e-15")


def storj_validation(files: int, seed: int, churn: float = 0.10) -> list[StorjRow]:
    """Every row of the whitepaper's table: closed form, CTMC and DES (plain and IS)."""
    rows = []
    for i, ((k, n), table) in enumerate(closed_form.STORJ_TABLE.items()):
        code = Code(k, n)
        off = Repair()
        plain, _ = run_des(code, churn, 1.0, off, files, seed + i, "poisson", tilt=1.0)
        sampled, _ = run_des(code, churn, 1.0, off, files, seed + 100 + i, "poisson")
        rows.append(
            StorjRow(
                code=code,
                table=table,
                closed=closed_form.poisson_durability(k, n, churn),
                ctmc=ctmc.loss_probability(code, churn, 1.0, off, "poisson"),
                plain=plain,
                sampled=sampled,
                binomial=closed_form.binomial_loss(k, n, churn),
            )
        )
    return rows


@dataclass(frozen=True)
class AnnualRow:
    code: Code
    churn: float
    repair: Repair
    ctmc: float
    des: Estimate | None
    repairs_per_year: float
    traffic_per_stored_byte: float  # repair bytes moved per byte stored, per year


def annual(
    code: Code,
    churn: float,
    repair: Repair,
    files: int,
    seed: int,
    years: float = 1.0,
    with_des: bool = True,
) -> AnnualRow:
    """Loss probability over `years` with repair: CTMC, and the DES (IS when rare)."""
    mu = node_leave_rate(churn)
    horizon = years * MONTHS_PER_YEAR
    exact = ctmc.loss_probability(code, mu, horizon, repair)
    est: Estimate | None = None
    repairs = traffic = math.nan
    if with_des:
        est, res = run_des(code, mu, horizon, repair, files, seed)
        if est.tilt != 1.0:  # repair counts from an untilted run (tilting changes them)
            res = des.simulate(code, mu, horizon, repair, min(files, 20_000), seed + 1)
        stored = repair.segment_bytes * code.overhead
        repairs = res.repairs_per_file / years
        traffic = res.repair_bytes_per_file / stored / years
    return AnnualRow(code, churn, repair, exact, est, repairs, traffic)


def grace_sweep(
    code: Code, churn: float, graces: list[float], intervals: list[float], thresholds: list[int]
) -> dict[tuple[int, float], list[float]]:
    """CTMC annual loss for each (threshold, interval) over the graces."""
    mu = node_leave_rate(churn)
    out: dict[tuple[int, float], list[float]] = {}
    for thr in thresholds:
        for iv in intervals:
            out[(thr, iv)] = [
                ctmc.loss_probability(
                    code,
                    mu,
                    MONTHS_PER_YEAR,
                    Repair(threshold=thr, interval_s=iv, grace_s=g),
                )
                for g in graces
            ]
    return out


# Codes compared at equal storage overhead, each with its own repair threshold (repair when
# half the parity fragments are gone, at least one spare kept).
CODES: list[tuple[Code, int]] = [
    (Code(4, 6), 1),
    (Code(8, 12), 2),
    (Code(16, 24), 4),
    (Code(1, 3), 1),
    (Code(4, 12), 4),
    (Code(2, 4), 1),
]


def code_comparison(churn: float, files: int, seed: int, base: Repair) -> list[AnnualRow]:
    return [
        annual(code, churn, replace(base, threshold=thr), files, seed + i)
        for i, (code, thr) in enumerate(CODES)
    ]


def churn_sweep(churns: list[float], base: Repair) -> dict[str, list[float]]:
    """CTMC annual loss against monthly churn, for each compared code (and no repair)."""
    out: dict[str, list[float]] = {}
    for code, thr in CODES:
        rep = replace(base, threshold=thr)
        out[f"{code.label()} thr {thr}"] = [
            ctmc.loss_probability(code, node_leave_rate(p), MONTHS_PER_YEAR, rep) for p in churns
        ]
    out["RS(4,2) no repair"] = [
        ctmc.loss_probability(SHIPPED_CODE, node_leave_rate(p), MONTHS_PER_YEAR, Repair())
        for p in churns
    ]
    return out


@dataclass(frozen=True)
class PopulationRow:
    nodes: int
    files: int
    lifetime: str
    repair: Repair
    churn: float
    loss: Estimate
    independent: Estimate
    node_gib_month: list[float]  # repair traffic of each node, GiB/month, at the node storage


def population_run(
    code: Code,
    churn: float,
    repair: Repair,
    nodes: int,
    files: int,
    seed: int,
    node_storage_gib: float,
    lifetime: str = "exponential",
) -> PopulationRow:
    """Full-population DES: files share nodes; per-node repair traffic, scaled so that each
    node stores `node_storage_gib` (the simulated files are a sample of the stored data)."""
    mu = node_leave_rate(churn)
    pop = des.Population(nodes, "weibull" if lifetime == "weibull" else "exponential")
    res = des.simulate(code, mu, MONTHS_PER_YEAR, repair, files, seed, population=pop)
    ind, _ = run_des(code, mu, MONTHS_PER_YEAR, repair, files, seed + 7, tilt=1.0)
    assert res.node_repair_bytes is not None
    stored_sim = files * repair.segment_bytes * code.overhead / nodes
    scale = node_storage_gib * 2**30 / stored_sim
    per_node = res.node_repair_bytes * scale / MONTHS_PER_YEAR / 2**30
    est = Estimate(res.loss_probability, res.std_error, files, res.lost, 1.0)
    return PopulationRow(nodes, files, lifetime, repair, churn, est, ind, sorted(per_node))

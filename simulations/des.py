"""Discrete-event simulation of file durability, vectorised over files.

Every file has its own virtual clock.  Its holders' departure times are drawn when fragments
are placed; one loop iteration advances every live file to its next repair completion (the
deaths in between are exact events, read off the sorted departure times):

    crossing = time of the death that leaves `k + threshold` fragments
    start    = first checker visit after crossing + grace   (visits every `interval`, per-file phase)
    done     = start + transfer(k downloads + missing uploads at the repair bandwidth)
    lost     if the (n-k+1)-th death comes before `done` (or before the horizon without repair)
    else at `done` every missing fragment gets a new holder, and the next cycle begins.

Holders are either independent (each file's holders have their own exponential lifetimes:
exact for a file's own loss probability, because exponential lifetimes are memoryless and
placement ignores node age), or drawn from a population of N node slots whose departures are
a renewal process (exponential or Weibull lifetimes): files then share nodes, losses are
correlated, and repair traffic is charged to real nodes.

Importance sampling (independent holders only): inside each vulnerable window (from the
triggering loss until the repair is done; the whole horizon without repair) surviving holders
leave at a tilted rate, and each file carries the likelihood ratio of its path, so loss
probabilities of 1e-9 can be estimated from 1e5 files.

The node population is in des_population.py, the steps of one repair cycle in des_repair.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from simulations.des_population import NodeSlots, Population
from simulations.des_repair import BoolArray, charge_repair, repair_done, tilt_window
from simulations.model import SECONDS_PER_MONTH, Code, LossModel, Repair

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

__all__ = ["BoolArray", "FloatArray", "IntArray", "Population", "Result", "simulate"]


@dataclass
class Result:
    files: int
    lost: int
    loss_probability: float
    std_error: float
    repairs_per_file: float
    repair_bytes_per_file: float
    node_repair_bytes: FloatArray | None = None
    loss_times: FloatArray = field(default_factory=lambda: np.zeros(0))

    def ci95(self) -> tuple[float, float]:
        """Normal interval, or the rule-of-three upper bound when nothing was lost."""
        if self.lost == 0:
            return 0.0, 3.0 / self.files
        half = 1.96 * self.std_error
        return max(0.0, self.loss_probability - half), self.loss_probability + half


def simulate(
    code: Code,
    mu: float,
    horizon_months: float,
    repair: Repair,
    files: int,
    seed: int,
    loss_model: LossModel = "node",
    population: Population | None = None,
    tilt: float = 1.0,
) -> Result:
    """Simulate `files` files for the horizon; mu is the per-holder leave rate (1/month)."""
    if tilt != 1.0 and population is not None:
        raise ValueError("importance sampling needs independent holders")
    if loss_model == "poisson" and population is not None:
        raise ValueError("the Poisson loss model has no node population")
    rng = np.random.default_rng(seed)
    k, n = code.k, code.n
    trigger = repair.trigger_level(code)
    frag_bytes = repair.segment_bytes / k
    slots_model = NodeSlots(population, mu, horizon_months, rng) if population else None
    node_bytes = np.zeros(population.nodes) if population else None

    def fresh(at: FloatArray, rate: float) -> tuple[FloatArray, IntArray | None]:
        """Departure times of n new holders placed at times `at` (shape (m,) -> (m, n))."""
        if loss_model == "poisson":
            gaps = rng.exponential(1.0 / (n * rate), size=(len(at), n))
            return at[:, None] + np.cumsum(gaps, axis=1), None
        if slots_model is not None:
            s = slots_model.place(len(at), n, rng)
            return slots_model.next_departure(s, np.repeat(at[:, None], n, axis=1)), s
        return at[:, None] + rng.exponential(1.0 / rate, size=(len(at), n)), None

    death, slots = fresh(np.zeros(files), mu)
    phase = rng.uniform(0.0, repair.interval_s, files) / SECONDS_PER_MONTH
    interval = repair.interval_s / SECONDS_PER_MONTH
    grace = repair.grace_s / SECONDS_PER_MONTH
    now = np.zeros(files)
    log_w = np.zeros(files)
    lost_at = np.full(files, np.inf)
    repairs = np.zeros(files)
    moved = np.zeros(files)
    active = np.ones(files, dtype=bool)

    while active.any():
        idx = np.flatnonzero(active)
        d = death[idx]
        srt = np.sort(d, axis=1)
        if repair.enabled:
            crossing = srt[:, n - trigger - 1]
            window_start = crossing
        else:
            crossing = np.full(len(idx), np.inf)
            window_start = now[idx]
        if tilt != 1.0:
            d, log_w[idx] = tilt_window(
                d,
                window_start,
                crossing,
                repair,
                code,
                phase[idx],
                horizon_months,
                mu,
                tilt,
                loss_model,
                log_w[idx],
                rng,
            )
            death[idx] = d
            srt = np.sort(d, axis=1)
        done = repair_done(srt, crossing, phase[idx], interval, grace, repair, code)
        loss_t = srt[:, n - k]
        is_lost = (loss_t < done) & (loss_t <= horizon_months)
        lost_at[idx[is_lost]] = loss_t[is_lost]
        fixed = ~is_lost & (done <= horizon_months)
        finished = ~fixed
        active[idx[finished]] = False

        if fixed.any():
            fi = idx[fixed]
            t_done = done[fixed]
            gone = death[fi] <= t_done[:, None]
            missing = gone.sum(axis=1)
            repairs[fi] += 1
            moved[fi] += frag_bytes * (k + missing)
            if loss_model == "poisson":
                new, _ = fresh(t_done, mu)
                death[fi] = new
            else:
                new, new_slots = fresh(t_done, mu)
                death[fi] = np.where(gone, new, death[fi])
                if slots is not None and new_slots is not None and node_bytes is not None:
                    old = slots[fi]
                    slots[fi] = np.where(gone, new_slots, old)
                    charge_repair(node_bytes, old, gone, slots[fi], frag_bytes, k, rng)
            now[fi] = t_done

    weights = np.exp(log_w)
    contrib = np.where(np.isfinite(lost_at), weights, 0.0)
    p = float(contrib.mean())
    se = float(contrib.std(ddof=1) / math.sqrt(files)) if files > 1 else 0.0
    return Result(
        files=files,
        lost=int(np.isfinite(lost_at).sum()),
        loss_probability=p,
        std_error=se,
        repairs_per_file=float(repairs.mean()),
        repair_bytes_per_file=float(moved.mean()),
        node_repair_bytes=node_bytes,
        loss_times=np.sort(lost_at[np.isfinite(lost_at)]),
    )

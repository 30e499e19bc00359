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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from simulations.model import SECONDS_PER_MONTH, Code, Lifetime, LossModel, Repair

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Population:
    """N node slots; each slot is re-occupied by a new node when its node leaves."""

    nodes: int
    lifetime: Lifetime = "exponential"
    weibull_shape: float = 0.7
    warmup_months: float = 36.0


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


class _Slots:
    """Departure times of every node occupying each slot, from before 0 until the horizon."""

    def __init__(self, pop: Population, mu: float, horizon: float, rng: np.random.Generator):
        mean = 1.0 / mu
        cols: list[FloatArray] = []
        t = np.full(pop.nodes, -pop.warmup_months)
        while True:
            if pop.lifetime == "exponential":
                life = rng.exponential(mean, pop.nodes)
            else:
                scale = mean / math.gamma(1.0 + 1.0 / pop.weibull_shape)
                life = scale * rng.weibull(pop.weibull_shape, pop.nodes)
            t = t + life
            cols.append(t)
            if t.min() > horizon:
                break
        self.departures = np.stack(cols, axis=1)
        self.n = pop.nodes

    def next_departure(self, slots: IntArray, at: FloatArray) -> FloatArray:
        rows = self.departures[slots]
        idx = (rows <= at[..., None]).sum(axis=-1)
        return np.take_along_axis(rows, idx[..., None], axis=-1)[..., 0]

    def place(self, count: int, width: int, rng: np.random.Generator) -> IntArray:
        """`count` rows of `width` distinct random slots."""
        slots = rng.integers(0, self.n, size=(count, width))
        while True:
            s = np.sort(slots, axis=1)
            dup = (s[:, 1:] == s[:, :-1]).any(axis=1)
            if not dup.any():
                return slots
            slots[dup] = rng.integers(0, self.n, size=(int(dup.sum()), width))


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
    slots_model = _Slots(population, mu, horizon_months, rng) if population else None
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
            d, log_w[idx] = _tilt_window(
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
        done = _repair_done(srt, crossing, phase[idx], interval, grace, repair, code)
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
                    _charge(node_bytes, old, gone, slots[fi], frag_bytes, k, rng)
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


def _repair_done(
    srt: FloatArray,
    crossing: FloatArray,
    phase: FloatArray,
    interval: float,
    grace: float,
    repair: Repair,
    code: Code,
) -> FloatArray:
    """When a pending repair completes (inf if repair is off)."""
    if not repair.enabled:
        return np.full(len(srt), np.inf)
    detect = crossing + grace
    if interval > 0:
        start = phase + np.ceil((detect - phase) / interval) * interval
        start = np.maximum(start, detect)
    else:
        start = detect
    missing = (srt <= start[:, None]).sum(axis=1)
    frag = repair.segment_bytes / code.k
    transfer = frag * (code.k + missing) / repair.bandwidth_Bps / SECONDS_PER_MONTH
    done: FloatArray = start + transfer
    return done


def _tilt_window(
    d: FloatArray,
    w_start: FloatArray,
    crossing: FloatArray,
    repair: Repair,
    code: Code,
    phase: FloatArray,
    horizon: float,
    mu: float,
    tilt: float,
    loss_model: LossModel,
    log_w: FloatArray,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray]:
    """Resample departures inside [w_start, window end) at rate tilt*mu; update log-weights.

    Memorylessness makes resampling the residual lifetimes at w_start legitimate; departures
    that fall after the window are resampled again at the original rate from the window's end.
    """
    n, k = code.n, code.k
    mu_t = mu * tilt
    m = len(d)
    open_ = w_start < horizon
    alive = (d > w_start[:, None]) & open_[:, None]
    if loss_model == "poisson":
        gaps = rng.exponential(1.0 / (n * mu_t), size=(m, n))
        cand = w_start[:, None] + np.cumsum(gaps, axis=1)
        rank = np.cumsum(alive, axis=1) - 1
        new = np.where(alive, np.take_along_axis(cand, np.maximum(rank, 0), axis=1), d)
    else:
        new = np.where(alive, w_start[:, None] + rng.exponential(1.0 / mu_t, size=(m, n)), d)
    srt = np.sort(new, axis=1)
    cross = crossing if repair.enabled else np.full(m, np.inf)
    interval = repair.interval_s / SECONDS_PER_MONTH
    grace = repair.grace_s / SECONDS_PER_MONTH
    done = _repair_done(srt, cross, phase, interval, grace, repair, code)
    w_end = np.minimum(np.minimum(done, srt[:, n - k]), horizon)
    w_end = np.maximum(w_end, w_start)
    died = alive & (new <= w_end[:, None])
    length = np.where(open_, w_end - w_start, 0.0)
    if loss_model == "poisson":
        deaths = died.sum(axis=1)
        log_w = log_w + deaths * math.log(1.0 / tilt) - n * (mu - mu_t) * length
        tail = alive & ~died
        ranks = np.cumsum(tail, axis=1) - 1
        gaps2 = rng.exponential(1.0 / (n * mu), size=(m, n))
        cand2 = w_end[:, None] + np.cumsum(gaps2, axis=1)
        new = np.where(tail, np.take_along_axis(cand2, np.maximum(ranks, 0), axis=1), new)
    else:
        exposure = np.where(alive, np.minimum(new, w_end[:, None]) - w_start[:, None], 0.0)
        log_w = log_w + died.sum(axis=1) * math.log(1.0 / tilt) - (mu - mu_t) * exposure.sum(axis=1)
        tail = alive & ~died
        new = np.where(tail, w_end[:, None] + rng.exponential(1.0 / mu, size=(m, n)), new)
    return new, log_w


def _charge(
    node_bytes: FloatArray,
    old: IntArray,
    gone: BoolArray,
    new: IntArray,
    frag_bytes: float,
    k: int,
    rng: np.random.Generator,
) -> None:
    """Charge a repair's traffic: k helpers send a fragment each to the repairer, which rebuilds
    and uploads the missing fragments to their new holders.  The repairer is one of the
    surviving holders (a random one), as a holder's repair checker would be."""
    alive_rank = np.where(~gone, rng.random(gone.shape), -1.0)
    repairer = old[np.arange(len(old)), alive_rank.argmax(axis=1)]
    missing = gone.sum(axis=1)
    # k downloads: each received by the repairer and sent by a helper (charged to the helpers
    # as a group: the surviving holders other than the repairer share k fragments' sending).
    np.add.at(node_bytes, repairer, frag_bytes * (k + missing))
    survivors = (~gone).sum(axis=1)
    share = np.where(~gone, frag_bytes * k / np.maximum(survivors, 1)[:, None], 0.0)
    np.add.at(node_bytes, old.reshape(-1), share.reshape(-1))
    np.add.at(node_bytes, new[gone], frag_bytes)

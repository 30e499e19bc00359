"""One repair cycle of the DES: when a pending repair completes, the importance-sampled
vulnerable window before it, and whose bandwidth the repair's traffic costs."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from simulations.model import SECONDS_PER_MONTH, Code, LossModel, Repair

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def repair_done(
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


def tilt_window(
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
    done = repair_done(srt, cross, phase, interval, grace, repair, code)
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


def charge_repair(
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

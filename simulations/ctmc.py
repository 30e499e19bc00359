"""Exact Markov-chain computation of a file's loss probability with and without repair.

State: (live fragments j, repair stage s).  Fragments are lost at rate d(j) = j*mu (each holder
leaves independently: the "node" model) or n*mu (Storj's Poisson approximation).  Once j falls
to the trigger level a repair is pending; its delay (grace + wait for the checker + transfer) is
a phase-type Erlang(r) with the delay's mean and variance, after which the file is back to n
fragments.  The chain is tiny, so P(lost by T) comes from the transition matrix, computed by
uniformisation and repeated squaring of non-negative matrices: no cancellation, so loss
probabilities of 1e-20 keep their relative accuracy (Monte Carlo cannot resolve these).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from simulations.model import Code, LossModel, Repair

FloatArray = npt.NDArray[np.float64]
MAX_STATES = 600


def erlang_stages(mean: float, var: float, n_levels: int) -> int:
    """Stages of an Erlang matching the delay's squared coefficient of variation (capped)."""
    cap = max(1, MAX_STATES // max(n_levels, 1) - 1)
    if var <= 0.0:
        return cap
    return int(min(cap, max(1, round(mean * mean / var))))


def generator(
    code: Code, mu: float, repair: Repair, loss_model: LossModel = "node", stages: int | None = None
) -> tuple[FloatArray, int, int]:
    """Generator matrix Q (1/month), the start state and the absorbing "lost" state."""
    k, n = code.k, code.n
    trigger = repair.trigger_level(code)
    levels = list(range(k, n + 1))
    if repair.enabled:
        mean, var = repair.delay_moments_months(code)
        r = stages if stages is not None else erlang_stages(mean, var, len(levels))
        stage_rate = r / mean if mean > 0 else 1e12
    else:
        r, stage_rate = 0, 0.0

    index: dict[tuple[int, int], int] = {}
    for j in levels:
        index[(j, 0)] = len(index)
        if j <= trigger:
            for s in range(1, r + 1):
                index[(j, s)] = len(index)
    lost = len(index)
    q = np.zeros((lost + 1, lost + 1))

    for (j, s), i in index.items():
        death = (j if loss_model == "node" else n) * mu
        if j - 1 < k:
            q[i, lost] += death
        else:
            nxt_s = s if s > 0 else (1 if (j - 1 <= trigger and r > 0) else 0)
            q[i, index[(j - 1, nxt_s)]] += death
        if s > 0:
            q[i, index[(n, 0)] if s == r else index[(j, s + 1)]] += stage_rate
    np.fill_diagonal(q, -q.sum(axis=1))
    start = index[(n, 0)]
    if trigger >= n:
        raise ValueError("trigger level must be below n")
    return q, start, lost


def transition_matrix(q: FloatArray, t: float) -> FloatArray:
    """exp(Q t) by uniformisation over a short step, then squaring (all terms non-negative)."""
    rate = float(max(-np.diag(q).min(), 1e-300))
    squarings = max(0, math.ceil(math.log2(max(rate * t, 1.0))))
    h = t / 2**squarings
    p = np.eye(len(q)) + q / rate
    # Jensen's series: sum_i Poisson(rate*h; i) P^i, with rate*h <= 1; 40 terms is beyond 1e-40.
    x = rate * h
    weight = math.exp(-x)
    term = np.eye(len(q))
    acc = weight * term
    for i in range(1, 60):
        term = term @ p
        weight *= x / i
        acc += weight * term
        if weight < 1e-40:
            break
    for _ in range(squarings):
        acc = acc @ acc
    return acc


def loss_probability(
    code: Code,
    mu: float,
    horizon_months: float,
    repair: Repair,
    loss_model: LossModel = "node",
    stages: int | None = None,
) -> float:
    """P(a file starting with n fragments is lost within the horizon)."""
    q, start, lost = generator(code, mu, repair, loss_model, stages)
    return float(transition_matrix(q, horizon_months)[start, lost])

"""The Markov chain against closed forms, and its matrix exponential against numpy's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulations import closed_form, ctmc
from simulations.model import Code, Repair, node_leave_rate

OFF = Repair()


@pytest.mark.parametrize("kn", list(closed_form.STORJ_TABLE))
def test_no_repair_poisson_chain_is_storj(kn: tuple[int, int]) -> None:
    k, n = kn
    got = ctmc.loss_probability(Code(k, n), 0.10, 1.0, OFF, "poisson")
    assert got == pytest.approx(float(closed_form.poisson_loss(k, n, 0.10)), rel=1e-9)


@pytest.mark.parametrize("kn", list(closed_form.STORJ_TABLE))
def test_no_repair_node_chain_is_binomial(kn: tuple[int, int]) -> None:
    k, n = kn
    mu = node_leave_rate(0.10)  # P(a holder leaves within the month) = 10%
    got = ctmc.loss_probability(Code(k, n), mu, 1.0, OFF)
    assert got == pytest.approx(closed_form.binomial_loss(k, n, 0.10), rel=1e-9)


def test_transition_matrix_matches_eigendecomposition() -> None:
    rng = np.random.default_rng(3)
    q = rng.uniform(0, 2, size=(5, 5))
    np.fill_diagonal(q, 0)
    np.fill_diagonal(q, -q.sum(axis=1))
    w, v = np.linalg.eig(q * 3.7)
    expected = (v @ np.diag(np.exp(w)) @ np.linalg.inv(v)).real
    assert np.allclose(ctmc.transition_matrix(q, 3.7), expected, atol=1e-12)


def test_two_replicas_with_exponential_repair() -> None:
    """k=1, n=2, repair at one copy with an exponential delay: loss rate ≈ 2μ · μ/(μ+ρ)."""
    mu = 0.1
    rep = Repair(threshold=0, interval_s=0.0, grace_s=3600.0, bandwidth_Bps=1e12)
    mean, _ = rep.delay_moments_months(Code(1, 2))
    rho = 1 / mean
    got = ctmc.loss_probability(Code(1, 2), mu, 12.0, rep, stages=1)
    rate = 2 * mu * mu / (mu + rho)
    assert got == pytest.approx(1 - math.exp(-12 * rate), rel=1e-2)


def test_repair_helps_and_faster_repair_helps_more() -> None:
    code, mu = Code(4, 6), node_leave_rate(0.10)
    none = ctmc.loss_probability(code, mu, 12.0, OFF)
    slow = ctmc.loss_probability(code, mu, 12.0, Repair(threshold=1, grace_s=86400))
    fast = ctmc.loss_probability(code, mu, 12.0, Repair(threshold=1, grace_s=600))
    assert none > slow > fast > 0

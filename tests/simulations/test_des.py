"""The discrete-event simulation against closed forms and the CTMC, and its determinism."""

from __future__ import annotations

import numpy as np

from simulations import closed_form, ctmc, des
from simulations.model import Code, Repair, node_leave_rate

OFF = Repair()
MU = node_leave_rate(0.10)


def within(result: des.Result, expected: float, sigmas: float = 4.0) -> bool:
    return abs(result.loss_probability - expected) <= sigmas * result.std_error


def test_no_repair_poisson_matches_storj_4_of_6() -> None:
    r = des.simulate(Code(4, 6), 0.10, 1.0, OFF, 20_000, seed=1, loss_model="poisson")
    assert r.lost > 100
    assert within(r, float(closed_form.poisson_loss(4, 6, 0.10)))


def test_no_repair_node_model_matches_binomial() -> None:
    r = des.simulate(Code(2, 4), MU, 1.0, OFF, 20_000, seed=2)
    assert within(r, closed_form.binomial_loss(2, 4, 0.10))


def test_importance_sampling_resolves_20_of_40() -> None:
    expected = float(closed_form.poisson_loss(20, 40, 0.10))  # 1.9e-9
    plain = des.simulate(Code(20, 40), 0.10, 1.0, OFF, 20_000, seed=3, loss_model="poisson")
    assert plain.lost == 0  # Monte Carlo cannot see 1e-9 in 2e4 samples
    r = des.simulate(Code(20, 40), 0.10, 1.0, OFF, 20_000, seed=3, loss_model="poisson", tilt=5.0)
    assert r.std_error < 0.05 * expected
    assert within(r, expected)


def test_with_repair_matches_ctmc_where_losses_are_measurable() -> None:
    rep = Repair(threshold=0, interval_s=3600, grace_s=86400)
    r = des.simulate(Code(4, 6), MU, 12.0, rep, 20_000, seed=4)
    assert r.lost > 500
    assert within(r, ctmc.loss_probability(Code(4, 6), MU, 12.0, rep))


def test_importance_sampling_with_repair_matches_ctmc() -> None:
    rep = Repair(threshold=1, interval_s=600, grace_s=900)
    expected = ctmc.loss_probability(Code(4, 6), MU, 12.0, rep)  # ~1.8e-7
    r = des.simulate(Code(4, 6), MU, 12.0, rep, 20_000, seed=5, tilt=1000.0)
    assert r.std_error < 0.2 * expected
    assert within(r, expected)


def test_population_agrees_with_independent_holders() -> None:
    rep = Repair(threshold=1, interval_s=3600, grace_s=86400)
    pop = des.Population(2_000)
    r = des.simulate(Code(4, 6), MU, 12.0, rep, 20_000, seed=6, population=pop)
    assert r.node_repair_bytes is not None and r.node_repair_bytes.sum() > 0
    assert within(r, ctmc.loss_probability(Code(4, 6), MU, 12.0, rep), sigmas=5.0)


def test_same_seed_same_result_other_seed_differs() -> None:
    rep = Repair(threshold=1, interval_s=600, grace_s=3600)
    a = des.simulate(Code(4, 6), MU, 12.0, rep, 5_000, seed=7, tilt=100.0)
    b = des.simulate(Code(4, 6), MU, 12.0, rep, 5_000, seed=7, tilt=100.0)
    c = des.simulate(Code(4, 6), MU, 12.0, rep, 5_000, seed=8, tilt=100.0)
    assert a.loss_probability == b.loss_probability
    assert a.repair_bytes_per_file == b.repair_bytes_per_file
    assert np.array_equal(a.loss_times, b.loss_times)
    assert a.loss_probability != c.loss_probability

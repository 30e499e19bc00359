"""The Storj v3 whitepaper's durability table, reproduced in closed form and by the CLI."""

from __future__ import annotations

from decimal import Decimal

import pytest

from simulations import closed_form, durability


@pytest.mark.parametrize(("kn", "table"), list(closed_form.STORJ_TABLE.items()))
def test_every_storj_row(kn: tuple[int, int], table: str) -> None:
    k, n = kn
    pct = closed_form.poisson_durability(k, n, 0.10) * 100
    # The table's 15th decimal carries float64 round-off; the formula is otherwise exact.
    assert abs(pct - Decimal(table)) < Decimal("3e-15")


def test_headline_figure() -> None:
    d = closed_form.poisson_durability(20, 40, 0.10)
    assert closed_form.format_percent(d) == "99.99999981%"
    assert closed_form.format_percent(d, 15) == "99.999999807694154%"


def test_binomial_differs_as_the_design_notes_say() -> None:
    loss = closed_form.binomial_loss(20, 40, 0.10)
    assert closed_form.format_percent(1 - loss, 9) == "99.999999998%"


def test_poisson_loss_keeps_digits_for_tiny_values() -> None:
    loss = float(closed_form.poisson_loss(32, 64, 0.10))
    assert loss == pytest.approx(9.455623296727e-14, rel=1e-10)


def test_cli_prints_the_case(capsys: pytest.CaptureFixture[str]) -> None:
    durability.main(["--k", "20", "--n", "40", "--monthly-churn", "0.10", "--files", "2000"])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "durability: 99.99999981%"
    assert "99.999999807694154%" in out


def test_cli_with_repair(capsys: pytest.CaptureFixture[str]) -> None:
    durability.main(["--k", "4", "--m", "2", "--repair-threshold", "1", "--files", "2000"])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "durability: 97.68847122%"
    assert "with repair (live <= 5" in out

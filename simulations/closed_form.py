"""Closed-form durability figures: the Storj v3 whitepaper's Poisson model and a binomial one.

Storj (whitepaper v3.0, "durability and erasure codes"): with monthly node churn p, a file
of n pieces loses on average lambda = p*n pieces a month, and the month's durability is the
Poisson CDF up to n-k losses.  Computed in Decimal arithmetic so that the table's 15 digits
are exact, not float round-off.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

PRECISION = 50

# The whitepaper's table at p = 10% (design-notes.md), as (k, n) -> durability in percent.
STORJ_TABLE: dict[tuple[int, int], str] = {
    (2, 4): "99.207366813274616",
    (4, 8): "99.858868985411326",
    (20, 40): "99.999999807694154",
    (32, 64): "99.999999999990544",
    (4, 6): "97.688471224736705",
    (4, 12): "99.999514117129605",
    (1, 3): "99.640050681691051",
}


def _check(k: int, n: int, p: float) -> None:
    if not (1 <= k <= n):
        raise ValueError(f"need 1 <= k <= n, got k={k} n={n}")
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"churn must be a probability, got {p}")


def poisson_durability(k: int, n: int, p: float) -> Decimal:
    """P(at most n-k pieces lost in a month), losses ~ Poisson(p*n): Storj's formula."""
    _check(k, n, p)
    with localcontext() as ctx:
        ctx.prec = PRECISION
        lam = Decimal(repr(p)) * n
        term = Decimal(1)
        total = Decimal(1)
        for i in range(1, n - k + 1):
            term = term * lam / i
            total += term
        return (-lam).exp() * total


def poisson_loss(k: int, n: int, p: float) -> Decimal:
    """1 - poisson_durability, computed as the upper tail so tiny values keep their digits."""
    _check(k, n, p)
    with localcontext() as ctx:
        ctx.prec = PRECISION
        return Decimal(1) - poisson_durability(k, n, p)


def binomial_loss(k: int, n: int, q: float) -> float:
    """P(more than n-k of n independent holders leave), each leaving with probability q."""
    _check(k, n, q)
    return math.fsum(math.comb(n, i) * q**i * (1.0 - q) ** (n - i) for i in range(n - k + 1, n + 1))


def format_percent(durability: Decimal | float, digits: int = 8) -> str:
    """Durability as a percentage, rounded half-even to `digits` decimals: 99.99999981%."""
    with localcontext() as ctx:
        ctx.prec = PRECISION
        value = Decimal(repr(durability)) if isinstance(durability, float) else durability
        pct = (value * 100).quantize(Decimal(1).scaleb(-digits))
    return f"{pct}%"


def nines(loss: float) -> float:
    """Number of nines of durability for a loss probability (inf for zero)."""
    return math.inf if loss <= 0.0 else -math.log10(loss)

"""File durability under node churn: Storj's closed form, an exact CTMC and a DES.

    python -m simulations.durability                         # the whole study + plots
    python -m simulations.durability --k 20 --n 40 --monthly-churn 0.10   # one case

With --k/--n the command prints that code's one-month, no-repair durability in the Storj v3
whitepaper's model (first line), cross-checked by the CTMC and the DES; with
--repair-threshold it also prints the loss probability over --years with repair.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from simulations import closed_form, ctmc, study
from simulations.durability_study import full_study, repair_from
from simulations.model import Code, Repair

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m simulations.durability",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--k", type=int, help="fragments needed to decode (one-case mode)")
    ap.add_argument("--n", type=int, help="fragments stored (one-case mode); or give --m")
    ap.add_argument("--m", type=int, help="parity fragments, n = k + m")
    ap.add_argument("--monthly-churn", type=float, default=0.10, help="P(node leaves in a month)")
    ap.add_argument(
        "--repair-threshold",
        type=int,
        default=None,
        help="repair when live fragments <= k + T (one-case mode; default: no repair)",
    )
    ap.add_argument(
        "--repair-interval",
        type=float,
        default=study.SHIPPED_REPAIR.interval_s,
        metavar="S",
        help="seconds between repair checks of a file",
    )
    ap.add_argument(
        "--repair-grace",
        type=float,
        default=study.SHIPPED_REPAIR.grace_s,
        metavar="S",
        help="seconds a holder may be missing before it counts as lost",
    )
    ap.add_argument(
        "--repair-bandwidth",
        type=float,
        default=10.0,
        metavar="MB/S",
        help="repair bandwidth of one node, MB/s (10^6 bytes)",
    )
    ap.add_argument("--segment-mib", type=float, default=64.0, help="bytes per coded segment")
    ap.add_argument("--years", type=float, default=1.0, help="horizon with repair")
    ap.add_argument("--files", type=int, default=100_000, help="files per DES run")
    ap.add_argument("--nodes", type=int, default=10_000, help="population DES size")
    ap.add_argument(
        "--node-storage-gib",
        type=float,
        default=100.0,
        help="data stored per node, for repair traffic per node",
    )
    ap.add_argument(
        "--tilt",
        type=float,
        default=None,
        help="importance-sampling tilt (default: automatic; 1 = plain Monte Carlo)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="directory for PNGs and results.md"
    )
    ns = ap.parse_args(argv)
    if (ns.k is None) != (ns.n is None and ns.m is None):
        ap.error("one-case mode needs --k and --n (or --m)")
    if ns.k is not None and ns.n is None:
        ns.n = ns.k + ns.m
    return ns


def one_case(ns: argparse.Namespace) -> None:
    code = Code(ns.k, ns.n)
    p = ns.monthly_churn
    dur = closed_form.poisson_durability(code.k, code.n, p)
    loss = float(closed_form.poisson_loss(code.k, code.n, p))
    print(f"durability: {closed_form.format_percent(dur)}")
    print(
        f"{code.k}-of-{code.n} at {100 * p:g}% monthly churn, one month, no repair "
        "(Storj v3 whitepaper model: P(D) = e^-λ Σ_(i≤n-k) λ^i/i!, λ = p·n)"
    )
    print(f"  closed form     {closed_form.format_percent(dur, 15)}   loss {loss:.6e}")
    ct = ctmc.loss_probability(code, p, 1.0, Repair(), "poisson")
    print(f"  CTMC            loss {ct:.6e}")
    est, _ = study.run_des(code, p, 1.0, Repair(), ns.files, ns.seed, "poisson", tilt=1.0)
    print(f"  DES plain MC    loss {est.text()}   ({ns.files} files)")
    est, _ = study.run_des(code, p, 1.0, Repair(), ns.files, ns.seed, "poisson", tilt=ns.tilt)
    print(f"  DES IS tilt {est.tilt:<4.3g} loss {est.text()}")
    b = closed_form.binomial_loss(code.k, code.n, p)
    print(
        f"  binomial model (each holder leaves w.p. p; no Poisson over-count): "
        f"{closed_form.format_percent(1 - b, 12)}"
    )
    if ns.repair_threshold is not None:
        rep = repair_from(ns, ns.repair_threshold)
        row = study.annual(code, p, rep, ns.files, ns.seed, ns.years)
        assert row.des is not None
        print(
            f"with repair (live <= {rep.trigger_level(code)}, interval {rep.interval_s:g} s, "
            f"grace {rep.grace_s:g} s), {ns.years:g} year(s), holders leave independently:"
        )
        print(
            f"  CTMC loss {row.ctmc:.3e}  ({closed_form.nines(row.ctmc):.1f} nines)   "
            f"DES loss {row.des.text()} (tilt {row.des.tilt:.3g})"
        )
        print(
            f"  repairs per file-year {row.repairs_per_year:.2f}; repair traffic "
            f"{row.traffic_per_stored_byte:.2f} x stored bytes per year"
        )


def main(argv: list[str] | None = None) -> None:
    ns = parse_args(argv)
    if ns.k is not None:
        one_case(ns)
    else:
        full_study(ns)


if __name__ == "__main__":
    main()

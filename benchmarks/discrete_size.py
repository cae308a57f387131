"""How conservative Sentinel's exact discrete tests are on the detection benchmark's no-change
windows (a companion to benchmarks/detection.py; docs/detection.md quotes it).

An exact test of a count conditions on a total (McNemar: the discordant rows; the conditional
binomial of ``decision_flips``: the flips in window + reference) and can only reject at the
p-values that total allows. Its *attainable size* at level a given total D is
P(reject | D) = P(X >= k*) with k* the smallest count whose p-value is <= a: at most a, and 0 when
even the most extreme count is not significant (McNemar with 0.5^D > a). Averaged over the totals
the simulation actually produces, it is the highest rejection rate the test *can* have at that
level under no change, however well it is calibrated otherwise.

Reads the totals from each overall result's stored evidence (the tests are not re-run) and uses
the tests in sentinel.checks.stats to find k*.

Usage: python benchmarks/discrete_size.py [--trials 200] [--sizes 200 500 2000 10000]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import detection as bench  # noqa: E402
from sentinel.checks.base import ReferenceData, RunData  # noqa: E402
from sentinel.checks.stats import binom_greater, mcnemar_greater, rate_increase  # noqa: E402


def attainable(total: int, pvalue, level: float) -> float:
    """P(reject at ``level`` | total) for an exact test whose p-value of count k is pvalue(k) and
    whose count is Binomial(total, q) under the null (q is read off pvalue's own null)."""
    for k in range(total + 1):
        if pvalue(k) <= level:
            return pvalue(k)        # the test's p-value at k* is exactly P(X >= k*) under its null
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--sizes", type=int, nargs="*", default=list(bench.SIZES))
    args = ap.parse_args()
    bench._init()
    rows = []
    for n in args.sizes:
        acc: dict[str, list[tuple[int, float, float]]] = {}
        for seed in range(args.trials):
            rng = np.random.default_rng([seed, n, sum(map(ord, "no change"))])
            xr, rb, rc, yr, ar = bench._window(rng, bench.reference_rows(n))
            x, b, c, y, a = bench._window(rng, n)
            data = RunData("sim", bench.CLASSES, ["malignant"], b, c, y, a, {}, inputs=x, seed=seed,
                           reference=ReferenceData({"kind": "simulated"}, xr, rb, rc, ar, yr))
            for name in ("decision_flips", "critical_recall", "confidence"):
                for r in bench._CHECKS[name].evaluate(data):
                    if r.slice not in ("overall", "class=malignant"):
                        continue
                    ev = r.evidence
                    if name == "decision_flips":
                        if r.slice != "overall":
                            continue
                        k1, n1, k0, n0 = ev["flips"], ev["n"], ev["reference"]["count"], ev["reference"]["n"]
                        total = k1 + k0
                        p = lambda k, t=total, q=n1 / (n1 + n0): binom_greater(k, t, q)  # noqa: E731
                        test = "increase over reference"
                    elif name == "critical_recall":
                        total = ev["candidate_only_misses"] + ev["baseline_only_misses"]
                        p = lambda k, t=total: mcnemar_greater(k, t - k)  # noqa: E731
                        test = "recall loss"
                    else:
                        total = ev["candidate_only_low"] + ev["baseline_only_low"]
                        p = lambda k, t=total: mcnemar_greater(k, t - k)  # noqa: E731
                        test = "low-confidence increase"
                    acc.setdefault(f"{name} | {test} (overall)", []).append(
                        (total, attainable(total, p, bench.TARGET), attainable(total, p, bench.TARGET / 2)))
        for key, v in acc.items():
            t = np.array(v)
            rows.append((key, n, t[:, 0].mean(), t[:, 1].mean(), t[:, 2].mean()))
    print("| check | test | n | mean conditioning total | attainable size at p <= 0.01 | at p <= 0.005 |")
    print("|---|---|---|---|---|---|")
    for key, n, tot, s1, s2 in sorted(rows):
        print(f"| {key} | {n:,} | {tot:.1f} | {s1:.4f} | {s2:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

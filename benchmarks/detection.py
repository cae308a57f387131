"""Detection power and false-alarm rate of Sentinel's statistical checks against sample size.

A seeded simulation (not a timed test; ``make bench-detection``). Every trial builds a window of
``n`` paired outputs and a reference window as the shipped suite ``checks/triage.yaml`` makes it
(accepted runs of ``n`` rows, newest first, until ``reference.min_rows`` = 5,000 rows: so
``n * ceil(5000 / n)`` rows), then runs the *real* check classes configured exactly as in that
suite (false-alarm rate 0.01 per check and run, Holm across slices/classes/features, the suite's
minimum effect sizes) and counts a detection when any result of the check is ``warn`` or ``fail``.

The simulated pair: 30 standard-normal features; the baseline is a calibrated logistic model
(labels are drawn from its probabilities); the candidate is the baseline with a little
quantization noise (logit noise sd 0.01) and decision flips on 0.5% of rows, drawn near the
decision boundary as quantization flips are (row weight exp(-z^2/2/0.5^2) on the logit z; the
reference window is built the same way). Rows carry ``region`` in {eu, us, apac}.

Scenarios: no change (every check; its detection rate is its false-alarm rate); no change with
baseline and candidate swapping roles on a random half of the rows (a diagnostic null for the
paired tests, see below); flip rate
0.5% -> 1/2/5%; a mean shift of 0.1/0.3/0.5 sd in one of the 30 features; candidate logits
x2 (sharpened) or x0.5 (flattened); in region eu the candidate turns 10% of the baseline's
positive decisions negative (a fairness gap opening in one group).

Trials per cell: 1,000 for the no-change rows of the cheap checks, 300 for the no-change rows
of the drift checks and 100 for drift power (Evidently's KS runs scipy's exact test up to 10,000
rows per side: 30 columns cost ~0.3 s at n = 10,000), 200 for every other power row. The
header states each count's sampling error. About 4-5 minutes on 2 cores.

For the no-change rows a second table puts the alarm rate next to the *test rejection rate*: the
share of trials in which the check's family of tests rejected at its false-alarm rate (some
adjusted p-value at most the rate, read from each result's stored evidence ``tests``) whatever
the effect size, with the band 1% +- 2 sampling errors a calibrated family falls in; a third
gives each kind of test's unadjusted rejection rate at the rate. In plain "no change" the
simulated candidate really is slightly worse than the baseline on the same rows (its boundary
flips cost Brier score and recall), so the paired tests' nulls are not exactly true there; with
roles swapped on half the rows they are.

Usage: python benchmarks/detection.py [--quick] [--null-only] [--null-trials 1000] [--drift-null-trials 300]
       [--trials 200] [--drift-trials 100] [--workers 2] [--sizes 200 500 2000 10000]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sentinel.checks.base import ReferenceData, RunData, build_check  # noqa: E402

SIZES = (200, 500, 2000, 10000)
FEATURES = 30
REGIONS = ("eu", "us", "apac")
CLASSES = ["benign", "malignant"]
BASE_FLIPS = 0.005
TARGET = 0.01
STAT_CHECKS = ("decision_flips", "critical_recall", "calibration", "confidence", "fairness", "data_drift",
               "prediction_drift")
DRIFT = ("data_drift", "prediction_drift")
BOUNDARY_SD = 0.5      # width (in logit units) of the band where simulated quantization flips happen
LOGIT_SD = 2.5

# scenario name -> (the checks whose detections are counted, changes applied to the current window)
SCENARIOS: dict[str, tuple[str | tuple[str, ...], dict]] = {
    "no change": (tuple(c for c in STAT_CHECKS if c not in DRIFT), {}),
    "no change (drift)": (DRIFT, {}),
    # a diagnostic null for the paired tests: on a random half of the rows (window and reference
    # alike) baseline and candidate swap roles, so "candidate worse than baseline on the same rows"
    # is exactly false (in "no change" the simulated quantization flips make it slightly true)
    "no change, roles swapped on half the rows": (tuple(c for c in STAT_CHECKS if c not in DRIFT), {"swap": True}),
    "flips 0.5% -> 1%": ("decision_flips", {"flips": 0.01}),
    "flips 0.5% -> 2%": ("decision_flips", {"flips": 0.02}),
    "flips 0.5% -> 5%": ("decision_flips", {"flips": 0.05}),
    "mean shift 0.1 sd, 1 of 30 features": ("data_drift", {"shift": 0.1}),
    "mean shift 0.3 sd, 1 of 30 features": ("data_drift", {"shift": 0.3}),
    "mean shift 0.5 sd, 1 of 30 features": ("data_drift", {"shift": 0.5}),
    "calibration: logits x2 (sharpened)": ("calibration", {"temp": 2.0}),
    "calibration: logits x0.5 (flattened)": ("calibration", {"temp": 0.5}),
    "confidence: logits x0.5 (flattened)": ("confidence", {"temp": 0.5}),
    "fairness: eu loses 10% of positives": ("fairness", {"gap": 0.10}),
}
FLOORS = {("flips 0.5% -> 2%", 2000): 0.95, ("mean shift 0.3 sd, 1 of 30 features", 2000): 0.95}

_CHECKS: dict[str, object] = {}
_REF_MIN: list[int] = [0]
_W = np.random.default_rng(123).standard_normal(FEATURES)
_W *= LOGIT_SD / np.linalg.norm(_W)   # logit sd 2.5: a confident model with a real boundary


def _init() -> None:
    from sentinel.checks.suites import load_suite
    suite = load_suite(ROOT / "checks" / "triage.yaml")
    _REF_MIN[0] = suite.reference.min_rows if suite.reference is not None else 0
    for spec in suite.specs:
        if spec.type in STAT_CHECKS:
            _CHECKS[spec.type] = build_check(spec)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _window(rng: np.random.Generator, n: int, flips: float = BASE_FLIPS, shift: float = 0.0, temp: float = 1.0,
            gap: float = 0.0, swap: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, str]]]:
    x = rng.standard_normal((n, FEATURES))
    x[:, 7] += shift
    z = x @ _W
    pb1 = _sigmoid(z)
    y = (rng.random(n) < pb1).astype(int)
    pc1 = _sigmoid(z * temp + rng.normal(0, 0.01, n))
    # flips near the boundary: weight exp(-z^2 / 2 s^2), whose mean over z ~ N(0, LOGIT_SD^2) is
    # s / sqrt(s^2 + LOGIT_SD^2), so the expected flip share is `flips`
    closeness = np.exp(-z ** 2 / (2 * BOUNDARY_SD ** 2)) * np.hypot(BOUNDARY_SD, LOGIT_SD) / BOUNDARY_SD
    flip = rng.random(n) < flips * closeness
    pc1[flip] = 1.0 - pc1[flip]
    region = rng.choice(len(REGIONS), size=n)
    if gap:
        lose = (region == 0) & (pc1 > 0.5) & (rng.random(n) < gap)
        pc1[lose] = 1.0 - pc1[lose]
    if swap:
        half = rng.random(n) < 0.5
        pb1, pc1 = np.where(half, pc1, pb1), np.where(half, pb1, pc1)
    attrs = [{"region": REGIONS[r]} for r in region]
    both = lambda p: np.stack([1.0 - p, p], axis=1)  # noqa: E731
    return x.astype(np.float32), both(pb1), both(pc1), y, attrs


def reference_rows(n: int) -> int:
    return n * max(1, math.ceil(_REF_MIN[0] / n))


def trial(scenario: str, n: int, seed: int) -> dict[str, dict]:
    """One window + reference through the checks; check type -> its outcome (see ``_outcome``)."""
    if not _CHECKS:
        _init()
    checks, change = SCENARIOS[scenario]
    rng = np.random.default_rng([seed, n, sum(map(ord, scenario))])
    xr, rb, rc, yr, ar = _window(rng, reference_rows(n), **({"swap": True} if change.get("swap") else {}))
    x, b, c, y, a = _window(rng, n, **{"flips": change.get("flips", BASE_FLIPS), **{k: v for k, v in change.items()
                                                                                       if k != "flips"}})
    data = RunData("sim", CLASSES, ["malignant"], b, c, y, a, {}, inputs=x, seed=seed,
                   reference=ReferenceData({"kind": "simulated"}, xr, rb, rc, ar, yr))
    names = (checks,) if isinstance(checks, str) else checks
    return {name: _outcome(_CHECKS[name].evaluate(data)) for name in names}


def _outcome(results: list) -> dict:
    """What one check did in one trial, read from its results' stored evidence (the tests are not
    re-run here): ``alarm`` (any warn/fail), ``reject`` (any test of the check's family with
    adjusted p-value at most the check's false-alarm rate: significant, whatever the effect), and
    per test name (slices pooled) ``raw`` = [tests with unadjusted p-value at most the rate, tests]."""
    reject, raw = False, {}
    for r in results:
        alpha = r.evidence.get("false_alarm_rate")
        for t in r.evidence.get("tests", ()):
            reject |= t["p_adjusted"] <= alpha      # as StatisticalCheck.decide: pass only when p_adj > rate
            cell = raw.setdefault(t["name"], [0, 0])
            cell[0] += t["p_value"] <= alpha
            cell[1] += 1
    return {"alarm": any(r.status in ("warn", "fail") for r in results), "reject": reject, "raw": raw}


def _chunk(args: tuple[str, int, list[int]]) -> list[dict[str, dict]]:
    scenario, n, seeds = args
    return [trial(scenario, n, s) for s in seeds]


def _trials(args: argparse.Namespace, scenario: str) -> int:
    drift = all(c in DRIFT for c in ((SCENARIOS[scenario][0],) if isinstance(SCENARIOS[scenario][0], str)
                                     else SCENARIOS[scenario][0]))
    if scenario.startswith("no change"):
        return args.drift_null_trials if drift else args.null_trials
    return args.drift_trials if drift else args.trials


def _limit(trials: int) -> float:
    """The highest false-alarm rate still within sampling error (2 standard errors) of 1%."""
    return TARGET + 2 * math.sqrt(TARGET * (1 - TARGET) / trials)


def _band(trials: int) -> tuple[float, float]:
    """1% +- 2 sampling errors at this many trials: where a calibrated test's rejection rate falls."""
    se = math.sqrt(TARGET * (1 - TARGET) / trials)
    return max(0.0, TARGET - 2 * se), TARGET + 2 * se


def _mark(rate: float, trials: int) -> str:
    lo, hi = _band(trials)
    return "" if lo <= rate <= hi else (" (low)" if rate < lo else " (HIGH)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--null-trials", type=int, default=600, help="no-change trials per n (cheap checks)")
    ap.add_argument("--drift-null-trials", type=int, default=200, help="no-change trials per n (drift checks)")
    ap.add_argument("--trials", type=int, default=100, help="power trials per n (cheap checks)")
    ap.add_argument("--drift-trials", type=int, default=50, help="power trials per n (drift checks)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    ap.add_argument("--quick", action="store_true",
                    help="a rough pass while developing: 200/60 no-change and 20/10 power trials")
    ap.add_argument("--null-only", action="store_true", help="only the no-change scenarios")
    args = ap.parse_args()
    if args.quick:
        args.null_trials, args.drift_null_trials, args.trials, args.drift_trials = 200, 60, 20, 10
    scenarios = {s: v for s, v in SCENARIOS.items() if not args.null_only or s.startswith("no change")}
    t0 = time.monotonic()
    jobs = []
    for scenario in scenarios:
        trials = _trials(args, scenario)
        for n in args.sizes:
            seeds = list(range(trials))
            step = max(1, math.ceil(trials / (4 * args.workers)))
            jobs += [(scenario, n, seeds[i:i + step]) for i in range(0, trials, step)]
    rates: dict[tuple[str, str, int], list[bool]] = {}
    rejects: dict[tuple[str, str, int], list[bool]] = {}
    raw: dict[tuple[str, str, str, int], list[int]] = {}
    with ProcessPoolExecutor(args.workers, initializer=_init) as pool:
        for (scenario, n, _), out in zip(jobs, pool.map(_chunk, jobs)):
            for res in out:
                for name, o in res.items():
                    rates.setdefault((scenario, name, n), []).append(o["alarm"])
                    rejects.setdefault((scenario, name, n), []).append(o["reject"])
                    for test, (k, m) in o["raw"].items():
                        cell = raw.setdefault((scenario, name, test, n), [0, 0])
                        cell[0] += k
                        cell[1] += m

    _init()
    print(f"Detection rate (share of trials with a warn or fail) by window size n; reference window "
          f"{', '.join(f'{reference_rows(n):,}' for n in args.sizes)} rows (min_rows {_REF_MIN[0]:,}).\n"
          f"No-change rows are false-alarm rates (target {TARGET:.0%} per check and run; a cell misses it when "
          f"above 1% + 2 sampling errors: {_limit(args.null_trials):.2%} at {args.null_trials} trials, "
          f"{_limit(args.drift_null_trials):.2%} at {args.drift_null_trials}); other rows are power (sampling error "
          f"at most {0.5 / math.sqrt(args.trials):.1%} at {args.trials} trials, "
          f"{0.5 / math.sqrt(args.drift_trials):.1%} at {args.drift_trials}).\n")
    head = "| scenario | check | trials | " + " | ".join(f"n={n:,}" for n in args.sizes) + " |"
    print(head)
    print("|" + "---|" * (3 + len(args.sizes)))
    failures = []
    for scenario, (checks, _) in scenarios.items():
        null = scenario.startswith("no change")
        for name in ((checks,) if isinstance(checks, str) else checks):
            cells = []
            for n in args.sizes:
                hits = rates.get((scenario, name, n), [])
                rate = sum(hits) / len(hits) if hits else float("nan")
                cells.append(f"{rate:.3f}")
                floor = FLOORS.get((scenario, n))
                if floor is not None and rate < floor:
                    failures.append(f"{scenario} at n={n}: power {rate:.3f} < {floor}")
                if null and rate > _limit(_trials(args, scenario)):
                    failures.append(f"{name} false-alarm rate {rate:.3f} at n={n} above {_limit(_trials(args, scenario)):.4f}")
            print(f"| {scenario} | {name} | {_trials(args, scenario)} | " + " | ".join(cells) + " |")
    print(f"\nfloors: false-alarm rate within sampling error of 1% everywhere; power >= 0.95 for "
          f"{', '.join(f'{s} at n={n:,}' for s, n in FLOORS)}: {'MET' if not failures else 'MISSED'}")
    for f in failures:
        print(f"  missed: {f}")
    _calibration_tables(args, scenarios, rates, rejects, raw)
    print(f"({time.monotonic() - t0:.0f} s, {args.workers} workers)")
    return 0 if not failures else 1


def _calibration_tables(args: argparse.Namespace, scenarios: dict, rates: dict, rejects: dict, raw: dict) -> None:
    """No-change rows again, the alarm rate next to the test rejection rate: the share of trials in
    which the check's family of tests rejected at its false-alarm rate (some adjusted p-value at
    most the rate), whatever the effect size. Then each kind of test on its own, unadjusted."""
    nulls = [s for s in scenarios if s.startswith("no change")]
    if not nulls:
        return
    bands = ", ".join(f"{lo:.2%}-{hi:.2%} at {t} trials" for t, (lo, hi) in
                      ((t, _band(t)) for t in sorted({_trials(args, s) for s in nulls}, reverse=True)))
    print(f"\nNo change: alarm rate / test rejection rate (share of trials in which any test of the check "
          f"had adjusted p <= {TARGET:g}, regardless of the minimum effect size). A calibrated family rejects "
          f"about {TARGET:.0%} of the time: 1% +- 2 sampling errors is {bands}; (low) / (HIGH) mark a "
          f"rejection rate outside that band.\n")
    print("| scenario | check | trials | 1% +- 2 SE | " + " | ".join(f"n={n:,} alarm / test" for n in args.sizes) + " |")
    print("|" + "---|" * (4 + len(args.sizes)))
    for scenario in nulls:
        trials = _trials(args, scenario)
        lo, hi = _band(trials)
        for name in scenarios[scenario][0]:
            cells = []
            for n in args.sizes:
                a, r = rates.get((scenario, name, n), []), rejects.get((scenario, name, n), [])
                ra = sum(a) / len(a) if a else float("nan")
                rr = sum(r) / len(r) if r else float("nan")
                cells.append(f"{ra:.3f} / {rr:.3f}{_mark(rr, len(r) or trials)}")
            print(f"| {scenario} | {name} | {trials} | {lo:.4f}-{hi:.4f} | " + " | ".join(cells) + " |")
    print(f"\nNo change, each kind of test alone: share of tests (all slices/classes/features pooled, "
          f"so the count is tests x trials) with unadjusted p <= {TARGET:g}. An exact or calibrated test of "
          f"a true null sits near {TARGET:.0%}; a test whose null is not 'no change' (e.g. 'above level', "
          f"whose null is 'rate at the warn level') sits near 0 by design.\n")
    print("| scenario | check | test | tests x trials (n=" + f"{args.sizes[-1]:,}" + ") | "
          + " | ".join(f"n={n:,}" for n in args.sizes) + " |")
    print("|" + "---|" * (4 + len(args.sizes)))
    for scenario in nulls:
        for name in scenarios[scenario][0]:
            tests = sorted({t for (s, c, t, _) in raw if s == scenario and c == name})
            for test in tests:
                cells = []
                for n in args.sizes:
                    k, m = raw.get((scenario, name, test, n), [0, 0])
                    cells.append(f"{k / m:.4f}" if m else "-")
                m_last = raw.get((scenario, name, test, args.sizes[-1]), [0, 0])[1]
                print(f"| {scenario} | {name} | {test} | {m_last:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())

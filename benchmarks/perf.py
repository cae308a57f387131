"""Power of the performance checks on this machine: `make bench-perf` (not a test).

A pair like the bundled example (torch baseline, onnxruntime candidate) is revalidated over and
over with candidates made slower by real extra compute (sentinel.examples.slowed: hidden layers
widened by padding units whose results are multiplied by zero), and with no change. Each trial is one revalidation's measurement (sentinel.perf.measure_pair with the
configured budget) judged by the perf_history check against accepted history of the unchanged
candidate, measured at the start. Variants are run in a shuffled order within every round so
machine drift during the benchmark hits all of them alike.

Prints, per variant: the slowdown actually achieved (median and p95 ratio from a long
interleaved calibration run), the detection rate (status fail) and alarm rate (warn or fail)
over the trials, and the measurement time each decision needed. See docs/performance.md.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sentinel.checks.base import RunData
from sentinel.checks.perf import PerfHistoryCheck
from sentinel.config import PerfConfig, default_checks
from sentinel.examples.slowed import write_mlp
from sentinel.examples.traffic import load_example_pair_dir, ordinary_traffic
from sentinel.perf.measure import measure_pair
from sentinel.perf.timing import time_interleaved
from sentinel.runners.base import load_runner

TARGETS = (0.0, 0.05, 0.10, 0.25)
LAYERS, WIDTH, EXTRA_UNITS = 60, 64, 64


def calibrate(runner0, build, x, target: float, seconds: float, per_pair: float, rounds: int = 3) -> int:
    """Number of widened layers (sentinel.examples.slowed) that makes the candidate ``target``
    slower: p10 latency ratio at batch 1, interleaved with the unchanged candidate."""
    m = max(1, round(target / per_pair))
    for _ in range(rounds):
        got = achieved(runner0, build(m), x, seconds)[0] - 1
        step = round((target - got) / per_pair)
        if step == 0:
            break
        m = min(LAYERS // 2, max(1, m + step))
    return m


def achieved(runner0, runner, x, seconds: float) -> tuple[float, float, float]:
    """p10, median and p95 latency ratio of ``runner`` over the unchanged one (batch 1, interleaved)."""
    t = time_interleaved({"a": runner0, "b": runner}, x, 1, budget_seconds=seconds)
    a, b = t.seconds["a"], t.seconds["b"]
    return tuple(float(np.percentile(b, q) / np.percentile(a, q)) for q in (10, 50, 95))  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100, help="trials of the unchanged candidate (false alarms)")
    ap.add_argument("--slowed-trials", type=int, default=40, help="trials of each slowed candidate")
    ap.add_argument("--budget", type=float, default=PerfConfig().budget_seconds, help="measurement budget (s)")
    ap.add_argument("--history", type=int, default=PerfConfig().history_runs, help="accepted runs in the history")
    ap.add_argument("--batch-size", type=int, default=16, help="serving batch size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    rng = random.Random(args.seed)
    settings = PerfConfig(budget_seconds=args.budget, memory=False)
    spec = next(c for c in default_checks() if c.type == "perf_history")   # the shipped levels
    check = PerfHistoryCheck(spec)
    example = load_example_pair_dir()
    x, _ = ordinary_traffic(np.random.default_rng(args.seed), 512)
    x = x.astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-bench-"))
    baseline = load_runner(example / "baseline.pt2", runtime="torch", role="baseline", threads=1)

    def build(widened: int):
        path = write_mlp(tmp / f"cand-{widened}.onnx", width=WIDTH, layers=LAYERS, widened=widened,
                         extra_units=EXTRA_UNITS)
        return load_runner(path, runtime="onnxruntime", role="candidate", threads=1)

    unchanged = build(0)
    per_pair = (achieved(unchanged, build(12), x, 4.0)[0] - 1) / 12
    variants = {}
    for target in TARGETS:
        extra = 0 if target == 0 else calibrate(unchanged, build, x, target, 3.0, per_pair)
        runner = unchanged if extra == 0 else build(extra)
        variants[target] = {"extra": extra, "runner": runner, "achieved": achieved(unchanged, runner, x, 8.0),
                            "status": [], "seconds": []}
        print(f"calibrated +{target:.0%}: {extra} widened layers; achieved p10/median/p95 "
              + " / ".join(f"{r:.3f}" for r in variants[target]["achieved"]), file=sys.stderr, flush=True)

    history = []
    for _ in range(args.history):
        m = measure_pair(baseline, unchanged, x, serving_batch_size=args.batch_size, settings=settings)
        history.insert(0, {**m.to_record(), "accepted": True})

    def trial(runner) -> tuple[str, float]:
        m = measure_pair(baseline, runner, x, serving_batch_size=args.batch_size, settings=settings)
        data = RunData(pair="bench", classes=["a", "b"], critical_classes=[], baseline=np.zeros((0, 2)),
                       candidate=np.zeros((0, 2)), labels=None, attributes=[], latency={}, batch_sizes=np.zeros(0),
                       perf=m, perf_history=history)
        results = [r for r in check.evaluate(data) if r.slice.startswith("latency")]
        statuses = [r.status for r in results]
        worst = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass" \
            if all(s == "pass" for s in statuses) else statuses[0]
        return worst, m.elapsed, max((r.value or 0) for r in results)

    rounds = max(args.trials, args.slowed_trials)
    for i in range(rounds):
        order = [t for t in TARGETS if (args.trials if t == 0 else args.slowed_trials) > i]
        rng.shuffle(order)
        for target in order:
            status, seconds, value = trial(variants[target]["runner"])
            variants[target]["status"].append(status)
            variants[target].setdefault("values", []).append(value)
            variants[target]["seconds"].append(seconds)
        if (i + 1) % 10 == 0:
            print(f"  round {i + 1}/{rounds} ({time.monotonic() - t_start:.0f}s)", file=sys.stderr, flush=True)

    print(f"\nbudget {args.budget:g}s per revalidation (batch 1 and batch {args.batch_size}), history of "
          f"{args.history} accepted runs, levels warn {spec.warn:g} / fail {spec.fail:g}\n")
    print("| candidate | widened layers | achieved ratio p10 / median / p95 | trials | judged ratio median [min, max] | detected (fail) | alarms (warn or fail) | measurement s/decision (median) |")
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for target, v in variants.items():
        st = v["status"]
        fails = sum(s == "fail" for s in st) / len(st)
        alarms = sum(s in ("warn", "fail") for s in st) / len(st)
        p10, med, p95 = v["achieved"]
        vals = v["values"]
        name = "no change" if target == 0 else f"slowed {target:.0%}"
        print(f"| {name} | {v['extra']} | {p10:.3f} / {med:.3f} / {p95:.3f} | {len(st)} | "
              f"{statistics.median(vals):.3f} [{min(vals):.3f}, {max(vals):.3f}] | {fails:.1%} | {alarms:.1%} | "
              f"{statistics.median(v['seconds']):.2f} |")
        if target == 0:
            ok &= fails <= 0.01
        elif target == 0.10:
            ok &= fails >= 0.95
    worst_time = max(max(v["seconds"]) for v in variants.values())
    ok &= worst_time <= 30
    print(f"\nfloors (10% caught >= 95%, false alarms <= 1%, <= 30 s per revalidation, slowest {worst_time:.1f}s): "
          f"{'MET' if ok else 'NOT MET'}; total {time.monotonic() - t_start:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

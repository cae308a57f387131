"""Power of the performance checks on this machine: `make bench-perf` (not a test).

A pair like the bundled example (torch baseline, onnxruntime candidate) is revalidated over and
over, each trial one revalidation's measurement (sentinel.perf.measure_pair with the configured
budget) judged by the perf_history check exactly as the daemon does it: the reference is chosen
by sentinel.perf.accepted.choose_reference from a rolling history of accepted runs, and a
candidate file that differs from the accepted one is timed interleaved with it in the same run.

Variants, in a shuffled order within every round so machine drift hits all of them alike:

* no change, same file: the daemon's steady state (the accepted candidate again);
* no change, re-exported: the same model written again with other bytes (a new sha256), so it
  is judged against the accepted file timed alongside: the false-alarm rate of that judgement;
  every trial writes a new one;
* slowed 5%, 10%, 25%: a deeper trunk of identical layers (real extra compute, not sleeps; the
  same kind of work, so the slowdown itself does not wander with the machine), the depth
  calibrated by measurement against the unchanged candidate.

Prints, per variant: the slowdown actually achieved (the judge's Hodges-Lehmann ratio over the
unchanged candidate at batch 1 and at the serving batch, median of two measurements with two
fresh sessions of each file made in balanced order), the detection rate
(status fail) and alarm rate (warn or fail) over the trials, the judged ratio, and the
measurement time each decision needed. See docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sentinel.checks.base import RunData
from sentinel.checks.perf.judge import compare
from sentinel.checks.perf import PerfHistoryCheck
from sentinel.config import PerfConfig, default_checks
from sentinel.examples.slowed import write_mlp
from sentinel.examples.traffic import load_example_pair_dir, ordinary_traffic
from sentinel.perf.accepted import ab_sessions, choose_reference
from sentinel.perf.fingerprint import fingerprint
from sentinel.perf.measure import measure_pair, time_pooled
from sentinel.runners.base import load_runner

TARGETS = (0.05, 0.10, 0.25)
LAYERS, WIDTH = 60, 64
SAME, REEXPORT = "no change, same file", "no change, re-exported"


def achieved(path0: Path, path: Path, x, seconds: float, batch_size: int = 1, pairs: int = 2) -> float:
    """How much slower the model at ``path`` is than the one at ``path0``: the judge's
    Hodges-Lehmann ratio (fastest 20%), timed interleaved with two fresh sessions of each made in
    balanced order (sentinel.perf.accepted.ab_sessions), median over ``pairs`` repetitions."""
    ratios = []
    for _ in range(pairs):
        s = ab_sessions(lambda p, role: load_runner(p, runtime="onnxruntime", role=role, threads=1), path, path0, 2)
        pooled = time_pooled({}, s, x, batch_size, budget_seconds=seconds).seconds
        ratios.append(compare(pooled["accepted"], pooled["candidate"], n_boot=100).hl_ratio)
    return float(np.median(ratios))


def calibrate(path0: Path, write, x, target: float, per_layer: float, rounds: int = 2) -> int:
    """Extra trunk layers that make the candidate ``target`` slower at batch 1."""
    k = max(1, round(target / per_layer))
    for _ in range(rounds):
        got = achieved(path0, write(k), x, 2.0) - 1
        step = round((target - got) / per_layer)
        if step == 0:
            break
        k = max(1, k + step)
    return k


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=300, help="trials of the re-exported unchanged candidate "
                    "(false alarms of the judged comparison)")
    ap.add_argument("--same-file-trials", type=int, default=100, help="trials of the accepted file itself")
    ap.add_argument("--slowed-trials", type=int, default=40, help="trials of each slowed candidate")
    ap.add_argument("--budget", type=float, default=PerfConfig().budget_seconds, help="measurement budget (s)")
    ap.add_argument("--history", type=int, default=PerfConfig().history_runs, help="accepted runs in the history")
    ap.add_argument("--batch-size", type=int, default=16, help="serving batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dump", help="write every trial (variant, per-slice value and status) to this JSON-lines file")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    dump = open(args.dump, "w", encoding="utf-8") if args.dump else None
    rng = random.Random(args.seed)
    settings = PerfConfig(budget_seconds=args.budget, memory=False)
    spec = next(c for c in default_checks() if c.type == "perf_history")   # the shipped levels
    check = PerfHistoryCheck(spec)
    example = load_example_pair_dir()
    x, _ = ordinary_traffic(np.random.default_rng(args.seed), 512)
    x = x.astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-bench-"))
    baseline = load_runner(example / "baseline.pt2", runtime="torch", role="baseline", threads=1)

    def write(extra: int, tag: str = "") -> Path:
        return write_mlp(tmp / f"cand-{extra}{tag}.onnx", width=WIDTH, layers=LAYERS + extra, tag=tag)

    def build(extra: int, tag: str = ""):
        return load_runner(write(extra, tag), runtime="onnxruntime", role="candidate", threads=1)

    unchanged = build(0)
    per_layer = (achieved(unchanged.path, write(20), x, 2.0) - 1) / 20
    variants: dict[str, dict] = {}
    for name, extra in [(SAME, 0), (REEXPORT, 0)] + [
            (f"slowed {t:.0%}", calibrate(unchanged.path, write, x, t, per_layer)) for t in TARGETS]:
        runner = unchanged if name == SAME else build(extra, tag="re-exported" if name == REEXPORT else "")
        ratios = (achieved(unchanged.path, runner.path, x, 3.0), achieved(unchanged.path, runner.path, x, 3.0,
                                                                           args.batch_size))
        variants[name] = {"extra": extra, "runner": runner, "achieved": ratios,
                          "status": [], "seconds": [], "values": [], "kinds": set(),
                          "trials": args.same_file_trials if name == SAME else args.trials if name == REEXPORT
                          else args.slowed_trials}
        print(f"{name}: +{extra} layers; achieved ratio batch 1 {ratios[0]:.3f}, batch {args.batch_size} "
              f"{ratios[1]:.3f}", file=sys.stderr, flush=True)
        assert runner.sha256 != unchanged.sha256 or name == SAME

    fp = fingerprint({"baseline": baseline, "candidate": unchanged})["id"]
    accepted_entry = {"run_id": 0, "models": {"candidate": {"sha256": unchanged.sha256, "path": str(unchanged.path)}}}
    history: list[dict] = []
    for i in range(args.history):
        m = measure_pair(baseline, unchanged, x, serving_batch_size=args.batch_size, settings=settings)
        history.insert(0, {**m.to_record(), "accepted": True, **accepted_entry, "run_id": -i})

    def fresh(name: str, i: int):
        """The variant's candidate in a new session (a re-export: a new file too). Sessions of one
        file differ in speed by a few percent (memory placement), so every trial draws new ones."""
        if name == SAME:
            return unchanged
        if name == REEXPORT:
            return build(0, tag=f"re-exported-{i}")
        return variants[name]["runner"]

    def trial(runner) -> tuple[str, float, float, str]:
        ref = choose_reference(history, fingerprint_id=fp, control=baseline.sha256, candidate_sha=runner.sha256,
                               kept=None)
        accepted = None
        if ref["kind"] == "accepted_model":   # fresh sessions of both files, as the daemon makes them
            accepted = ab_sessions(lambda path, role: load_runner(path, runtime="onnxruntime", role=role, threads=1),
                                   runner.path, ref["path"], settings.ab_sessions)
        m = measure_pair(baseline, runner, x, serving_batch_size=args.batch_size, settings=settings,
                         accepted=accepted, reference=ref)
        data = RunData(pair="bench", classes=["a", "b"], critical_classes=[], baseline=np.zeros((0, 2)),
                       candidate=np.zeros((0, 2)), labels=None, attributes=[], latency={},
                       perf=m, perf_history=history)
        results = [r for r in check.evaluate(data) if r.slice.startswith("latency")]
        statuses = [r.status for r in results]
        worst = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass" \
            if all(s == "pass" for s in statuses) else statuses[0]
        if dump is not None:
            dump.write(json.dumps({"t": round(time.monotonic() - t_start, 1), "candidate": runner.path.name,
                                   "reference": ref["kind"], "elapsed": round(m.elapsed, 2),
                                   "slices": {r.slice: [r.status, r.value] for r in results}}) + "\n")
            dump.flush()
        if runner is unchanged and worst in ("pass", "insufficient_data"):   # accepted: history rolls on
            history.insert(0, {**m.to_record(), "accepted": True, **accepted_entry})
            del history[args.history:]
        return worst, m.elapsed, max((r.value or 0) for r in results), ref["kind"]

    rounds = max(v["trials"] for v in variants.values())
    for i in range(rounds):
        order = [name for name, v in variants.items() if v["trials"] > i]
        rng.shuffle(order)
        for name in order:
            v = variants[name]
            status, seconds, value, kind = trial(fresh(name, i))
            v["status"].append(status)
            v["values"].append(value)
            v["seconds"].append(seconds)
            v["kinds"].add(kind)
        if (i + 1) % 10 == 0:
            print(f"  round {i + 1}/{rounds} ({time.monotonic() - t_start:.0f}s)", file=sys.stderr, flush=True)

    print(f"\nbudget {args.budget:g}s per revalidation (batch 1 and batch {args.batch_size}), rolling history of "
          f"{args.history} accepted runs, levels warn {spec.warn:g} / fail {spec.fail:g}\n")
    print(f"| candidate | judged against | extra layers | achieved ratio batch 1; batch {args.batch_size} | trials | judged ratio median [min, max] | detected (fail) | alarms (warn or fail) "
          "| measurement s/decision (median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    ok = True
    for name, v in variants.items():
        st = v["status"]
        fails = sum(s == "fail" for s in st) / len(st)
        alarms = sum(s in ("warn", "fail") for s in st) / len(st)
        b1, bn = v["achieved"]
        vals = v["values"]
        kinds = ", ".join(sorted(v["kinds"])).replace("accepted_model", "accepted file, same run").replace(
            "identical", "history (same file)")
        print(f"| {name} | {kinds} | {v['extra']} | {b1:.3f}; {bn:.3f} | {len(st)} | "
              f"{statistics.median(vals):.3f} [{min(vals):.3f}, {max(vals):.3f}] | {fails:.1%} | {alarms:.1%} | "
              f"{statistics.median(v['seconds']):.2f} |")
        if name in (SAME, REEXPORT):
            ok &= fails <= 0.01
        elif name == "slowed 10%":
            ok &= fails >= 0.95
    worst_time = max(max(v["seconds"]) for v in variants.values())
    ok &= worst_time <= 30
    print(f"\nfloors (10% caught >= 95%, false alarms <= 1%, <= 30 s per revalidation, slowest {worst_time:.1f}s): "
          f"{'MET' if ok else 'NOT MET'}; total {time.monotonic() - t_start:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

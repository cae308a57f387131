#!/usr/bin/env python
"""The divergence plots in README.md and docs/diagnose.md, from the bundled triage pair.

    python scripts/make_diagnosis_figures.py [--rows 2000] [--seed 1]

What ``sentinel diagnose`` does for a run, without a store: ordinary traffic (the generator the
demo uses), the pair's baseline (baseline.pt2, through Sentinel's torch runner) and each candidate
on the same rows, the flipped rows and as many agreeing ones (at least 100), the diagnosis against
baseline.fp32.onnx. Prints each table and writes docs/diagnose-<candidate>.svg.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from sentinel.cli.diagnose import print_diagnosis  # noqa: E402
from sentinel.diagnose import diagnose_graphs, pick_rows, sqnr_svg  # noqa: E402
from sentinel.examples.traffic import load_example_pair_dir, load_reference, ordinary_traffic  # noqa: E402
from sentinel.runners import load_runner  # noqa: E402

CANDIDATES = {"damaged": "damaged.int8.onnx", "healthy": "candidate.int8.onnx"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    pair = load_example_pair_dir()
    x, _ = ordinary_traffic(np.random.default_rng(args.seed), args.rows, reference=load_reference(pair))
    x = x.astype(np.float32)
    base = load_runner(pair / "baseline.pt2", runtime="torch", role="baseline", threads=1).predict_proba(x)
    for label, file in CANDIDATES.items():
        cand = load_runner(pair / file, runtime="onnxruntime", role="candidate", threads=1).predict_proba(x)
        flipped = base.argmax(1) != cand.argmax(1)
        idx = pick_rows(flipped, 500, min_agreeing=100, seed=0)
        d = diagnose_graphs(pair / "baseline.fp32.onnx", pair / file, x[idx], flipped[idx],
                            baseline_out=base[idx], candidate_out=cand[idx])
        d.pair = f"triage, {label} candidate"
        print(f"== {label}: {file}, {int(flipped.sum())} of {len(x)} rows flipped")
        print_diagnosis(d)
        (args.out / f"diagnose-{label}.svg").write_text(sqnr_svg(d), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

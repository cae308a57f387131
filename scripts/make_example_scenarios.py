"""Write the example pair's scenario data sets under ``checks/triage/`` (deterministic from the
seed) and print each file's sha256 for ``checks/triage.yaml``.

* ``routine.jsonl``: ordinary traffic (jittered rows of the data set) with labels.
* ``edge_cases.jsonl``: data-set rows with three features pushed to the data set's minimum or
  maximum, and rows scaled to 0.6x / 1.4x: inputs at the edges of what the model was built for.
* ``adversarial.jsonl``: rows inside the narrow band around the baseline's decision boundary
  where int8 quantization moves decisions (see ``sentinel/examples/traffic.py``).

Usage: python scripts/make_example_scenarios.py [--out checks/triage] [--seed 11]
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from sentinel.examples.traffic import drifted_traffic, load_reference, ordinary_traffic

CLASSES = ["malignant", "benign"]
REGIONS = ["eu", "us", "apac"]


def lines(x: np.ndarray, y: np.ndarray | None, prefix: str, rng: np.random.Generator) -> list[str]:
    out = []
    for i, row in enumerate(x):
        msg = {"id": f"{prefix}-{i}", "inputs": [round(float(v), 6) for v in row],
               "attributes": {"region": REGIONS[int(rng.integers(0, len(REGIONS)))]}}
        if y is not None:
            msg["label"] = CLASSES[int(y[i])]
        out.append(json.dumps(msg, separators=(",", ":")))
    return out


def edge_cases(rng: np.random.Generator, n: int) -> np.ndarray:
    ref = load_reference()
    lo, hi = ref.x.min(axis=0), ref.x.max(axis=0)
    rows = ref.x[rng.integers(0, len(ref.x), size=n)].astype(np.float64)
    half = n // 2
    for i in range(half):
        cols = rng.choice(ref.x.shape[1], size=3, replace=False)
        rows[i, cols] = np.where(rng.random(3) < 0.5, lo[cols], hi[cols])
    rows[half:] *= np.where(rng.random(n - half) < 0.5, 0.6, 1.4)[:, None]
    return rows.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="checks/triage")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    x, y = ordinary_traffic(rng, 400)
    sets = {"routine.jsonl": lines(x, y, "routine", rng),
            "edge_cases.jsonl": lines(edge_cases(rng, 200), None, "edge", rng)}
    x, y = drifted_traffic(rng, 200)
    sets["adversarial.jsonl"] = lines(x, y, "adv", rng)
    for name, content in sets.items():
        blob = ("\n".join(content) + "\n").encode()
        (out / name).write_bytes(blob)
        print(f"{name}: {len(content)} rows, sha256 {hashlib.sha256(blob).hexdigest()}")


if __name__ == "__main__":
    main()

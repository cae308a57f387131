#!/usr/bin/env python
"""Write the scenario data sets of the ``support`` (text) and ``digits`` (image) example pairs under
``checks/support/`` and ``checks/digits/`` (deterministic from the seed) and print each file's
sha256 for the suites beside them (``checks/support/suite.yaml``, ``checks/digits/suite.yaml``).

* ``support/routine.jsonl``: 400 messages in traffic proportions, with labels.
* ``support/crisis.jsonl``: 200 messages that are all ``urgent`` or ``self_harm``, a third of them
  after an ordinary complaint: the messages a candidate must not bury.
* ``support/decoys.jsonl``: 200 routine/billing messages borrowing critical words ("killing me").
* ``digits/routine.jsonl``: 300 images with a little noise, with labels.
* ``digits/dim_camera.jsonl``: 200 images with contrast halved and more noise.

Usage: python scripts/make_typed_scenarios.py [--out checks] [--seed 17]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from sentinel.examples import digits, support  # noqa: E402


def text_lines(messages: list, prefix: str, rng: np.random.Generator) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "text": m.text,
             "attributes": {"region": support.REGIONS[int(rng.integers(3))]}, "label": m.label}
            for i, m in enumerate(messages)]


def crisis(rng: np.random.Generator, n: int) -> list:
    return [support.message(support.CRITICAL_CLASSES[i % 2], rng) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "checks")
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    sets = {
        "support/routine.jsonl": text_lines(support.traffic(rng, 400), "routine", rng),
        "support/crisis.jsonl": text_lines(crisis(rng, 200), "crisis", rng),
        "support/decoys.jsonl": text_lines(support.decoys(rng, 200), "decoy", rng),
        "digits/routine.jsonl": [{k: v for k, v in m.items() if k != "model"}
                                 for m in digits.traffic_messages(rng, 300, prefix="routine")],
        "digits/dim_camera.jsonl": [{k: v for k, v in m.items() if k != "model"}
                                    for m in digits.traffic_messages(rng, 200, drifted=True, prefix="dim")],
    }
    for name, rows in sets.items():
        path = args.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows))
        print(f"{name}: {len(rows)} rows, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()

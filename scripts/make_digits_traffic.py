"""Write ordinary traffic for the example digits pair as a JSON-lines file of Sentinel messages
(with labels), for ``sentinel compare`` / ``sentinel revalidate --input``:

    python scripts/make_digits_traffic.py OUT.jsonl [N] [SEED]
"""
from __future__ import annotations

import json
import sys

import numpy as np

from sentinel.examples.digits import traffic_messages


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    n = int(argv[1]) if len(argv) > 1 else 2000
    seed = int(argv[2]) if len(argv) > 2 else 0
    with open(argv[0], "w", encoding="utf-8") as f:
        for msg in traffic_messages(np.random.default_rng(seed), n):
            f.write(json.dumps(msg) + "\n")
    print(f"wrote {n} digits messages to {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

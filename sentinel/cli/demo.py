"""``sentinel demo``: the whole loop on embedded defaults."""
from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = ("triage", "support", "digits")   # sentinel.examples.demos.NAMES (not imported: keeps --help fast)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole loop on embedded defaults: broker, traffic, drift, incident")
    p.add_argument("--out", default="demo-output", help="folder for the demo's database, reports and logs")
    p.add_argument("--max-seconds", type=float, default=150.0,
                   help="give up after this long (building an example's models first does not count)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--example", choices=EXAMPLES, default="triage",
                   help="triage: tabular MLP, good int8 candidate, drift half-way; support: MiniLM text classifier "
                        "on raw-text messages (built into the cache on first use), damaged int8 candidate; "
                        "digits: image CNN on NCHW tensors, damaged int8 candidate")


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    return run_demo(out=Path(args.out), max_seconds=args.max_seconds, seed=args.seed, example=args.example)

"""``sentinel demo``: the whole loop on embedded defaults."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole loop on embedded defaults: broker, traffic, drift, incident")
    p.add_argument("--out", default="demo-output", help="folder for the demo's database, reports and logs")
    p.add_argument("--max-seconds", type=float, default=150.0, help="give up after this long")
    p.add_argument("--seed", type=int, default=7)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    return run_demo(out=Path(args.out), max_seconds=args.max_seconds, seed=args.seed)

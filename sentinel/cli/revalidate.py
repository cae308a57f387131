"""``sentinel revalidate``: one revalidation now; exit 0 all pass, 1 a check failed, 2 usage/config."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError
from .common import EXIT_OK, config_arg, load


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("revalidate", help="run one revalidation now and exit 0 (pass) / 1 (a check failed) / 2")
    config_arg(p)
    p.add_argument("--pair", help="only this model pair")
    p.add_argument("--input", help="a JSON-lines file of traffic messages to use instead of the stored window")
    p.add_argument("--json", action="store_true", help="print results as JSON")


def run(args: argparse.Namespace) -> int:
    from ..app import build

    cfg = load(args)
    if args.pair is not None and args.pair not in cfg.pairs:
        raise ConfigError(cfg.source, "pairs", f"no pair {args.pair!r}; configured pairs are {sorted(cfg.pairs)}")
    app = build(cfg, load_models=False, pairs=[args.pair] if args.pair else sorted(cfg.pairs))
    return revalidate(app, input_file=args.input, as_json=args.json)


def revalidate(app: Any, *, input_file: str | None, as_json: bool) -> int:
    """One revalidation of each of ``app.pair_names`` (on the stored window, or on ``input_file``)."""
    from ..printing import print_results
    from ..revalidation import overall_exit_code, read_input_file

    names = list(app.pair_names)
    loaded = app.pairs   # models first: a broken model file is reported before the store is opened
    reval = app.revalidator
    given: dict[str, list[Any]] | None = None
    source = None
    if input_file:
        given, source, _bad = read_input_file(input_file, {n: p.shape for n, p in loaded.items()})
    outcomes = []
    for name in names:
        samples = given.get(name, []) if given is not None else None
        if samples is not None and not samples:
            print(f"{name}: no messages for this pair in {input_file}", file=sys.stderr)
            continue
        o = reval.run(name, trigger="cli", samples=samples, source=source)
        if o is None:
            print(f"{name}: no pending samples in the store; nothing to revalidate", file=sys.stderr)
            continue
        outcomes.append(o)
    app.deliver_outbox()
    if as_json:
        print(json.dumps([{"run_id": o.run_id, "pair": o.pair, "status": o.status, "n_samples": o.n_samples,
                           "report": o.report_path, "results": [r.to_row() for r in o.results]}
                          for o in outcomes], indent=2))
    else:
        for o in outcomes:
            print_results(o)
    return max((overall_exit_code(o.results) for o in outcomes), default=EXIT_OK)

"""``sentinel compare``: a pair's candidates judged side by side on a traffic file, against the
same baseline outputs. Prints the trade-off table and exits 0 naming the smallest (or, with
``--prefer fastest``, the fastest) candidate that passed every safety check, 1 when none did,
2 on a config or input error.

Safety checks are every check but the performance ones (latency_p95, perf_history,
latency_served): see sentinel.checks.tradeoff. The run is stored (it shows on the console with
its report) but opens no incident and notifies no one: a comparison before deployment is not a
production problem."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError
from .common import EXIT_FAILED, EXIT_OK, config_arg, load


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="judge a pair's candidates side by side on a traffic file; exit 0 naming "
                                       "the chosen one, 1 when none passes every safety check, 2 on errors")
    config_arg(p)
    p.add_argument("--input", required=True, help="a JSON-lines file of traffic messages")
    p.add_argument("--pair", help="the pair (default: the only pair with several candidates)")
    p.add_argument("--prefer", choices=("smallest", "fastest"), default="smallest",
                   help="among the candidates that pass: the smallest model file (default) or the lowest "
                        "candidate/baseline latency ratio")
    p.add_argument("--json", action="store_true", help="print the run id, the trade-off table and the choice as JSON")


def _pair(cfg: Any, name: str | None) -> str:
    multi = [n for n, pc in cfg.pairs.items() if pc.multi]
    if name is None:
        if len(multi) != 1:
            raise ConfigError(cfg.source, "pairs", "give --pair: " + (
                f"several pairs list candidates ({', '.join(multi)})" if multi
                else "no pair lists several candidates (pairs.<name>.candidates)"))
        return multi[0]
    if name not in cfg.pairs:
        raise ConfigError(cfg.source, "pairs", f"no pair {name!r}; configured pairs are {sorted(cfg.pairs)}")
    if not cfg.pairs[name].multi:
        raise ConfigError(cfg.source, f"pairs.{name}", "has one candidate: list the ones to compare under "
                                                       f"pairs.{name}.candidates (or use sentinel revalidate)")
    return name


def run(args: argparse.Namespace) -> int:
    from ..app import build
    from ..revalidation import Revalidator, read_input_file

    cfg = load(args)
    name = _pair(cfg, args.pair)
    app = build(cfg, load_models=False, pairs=[name])
    loaded = app.pairs      # models first: a broken model file is reported before the input is read
    given, source, _bad = read_input_file(args.input, {n: p.shape for n, p in loaded.items()})
    samples = given.get(name, [])
    if not samples:
        raise ConfigError(args.input, "", f"no messages for pair {name!r} in this file")
    reval = Revalidator(cfg, app.store, loaded,
                        report_writer=lambda run, _loaded, data=None: app.write_report(run, data))
    outcome = reval.run(name, trigger="compare", samples=samples, source=source)
    if outcome is None:
        raise ConfigError(args.input, "", "the comparison was not completed")
    return report(outcome, args.prefer, as_json=args.json)


def report(outcome: Any, prefer: str, *, as_json: bool) -> int:
    """Print the outcome's trade-off table and choice; the exit code."""
    from ..checks.tradeoff import choose
    from ..printing import tradeoff_lines

    table = outcome.record.get("tradeoff") or {}
    chosen = choose(table, prefer)
    if as_json:
        print(json.dumps({"run_id": outcome.run_id, "pair": outcome.pair, "prefer": prefer,
                          "chosen": chosen["candidate"] if chosen else None, "tradeoff": table,
                          "report": outcome.report_path}, indent=2))
    else:
        print(f"run {outcome.run_id}  pair {outcome.pair}  {outcome.n_samples} samples")
        for line in tradeoff_lines(table):
            print(f"  {line}")
        if outcome.report_path:
            print(f"  report: {outcome.report_path}")
        if chosen:
            what = "smallest model file" if prefer == "smallest" else "lowest latency ratio"
            print(f"chosen: {chosen['candidate']} ({what} among the candidates that pass every safety check)")
        else:
            print("chosen: none (no candidate passes every safety check)", file=sys.stderr)
    return EXIT_OK if chosen else EXIT_FAILED

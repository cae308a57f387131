"""``sentinel report RUN_ID``: write (or find) a run's HTML report and print its path."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import NotFoundError
from .common import EXIT_OK, app_of, config_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write (or find) a run's HTML report and print its path")
    config_arg(p)
    p.add_argument("run_id", type=int)
    p.add_argument("--rewrite", action="store_true", help="write the report again even if its file exists")
    p.add_argument("--open", action="store_true", help="also open it in the default browser")


def run(args: argparse.Namespace) -> int:
    return report(app_of(args), args.run_id, rewrite=args.rewrite, open_it=args.open)


def report(app: Any, run_id: int, *, rewrite: bool = False, open_it: bool = False) -> int:
    """Print the path of the run's report, writing it first when it is missing (or --rewrite).
    A rewrite re-runs the models on the run's stored samples and reference window (when the pair
    is still configured) so the Evidently section can be rebuilt; otherwise it holds the stored
    results only."""
    from ..revalidation import run_samples

    cfg, store = app.cfg, app.store
    run = store.get_run(run_id)
    if run is None:
        raise NotFoundError("run", run_id)
    path = run.get("report_path")
    if rewrite or not path or not Path(path).exists():
        data = None
        if run["pair"] in cfg.pairs:
            loaded = app.pair(run["pair"])
            samples = run_samples(store, run, loaded.shape)
            if samples:
                data = app.evaluator(run["pair"]).build_data(
                    loaded, samples, before_run=run_id,
                    reference_runs=(run["record"].get("reference") or {}).get("run_ids"), measure=False)
        path = app.write_report(run, data)
        store.set_report_path(run_id, path)
    print(path)
    if open_it:
        import webbrowser
        webbrowser.open(Path(path).resolve().as_uri())
    return EXIT_OK

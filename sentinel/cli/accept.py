"""``sentinel accept RUN_ID``: accept a run's performance as the new normal."""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import StateError
from .common import EXIT_OK, app_of, config_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("accept", help="accept a run's performance as the new normal (e.g. a candidate that is "
                                      "slower on purpose): later candidates are judged against it")
    config_arg(p)
    p.add_argument("run_id", type=int)
    p.add_argument("--actor", default=os.environ.get("USER", "cli"))
    p.add_argument("--reason", required=True, help="why (kept in the run record)")


def run(args: argparse.Namespace) -> int:
    """``perf_history`` then judges later candidates against this run's candidate
    (sentinel.perf.accepted.accept_run)."""
    from ..perf.accepted import accept_run, kept_models

    app = app_of(args)
    kept = kept_models(app.cfg)
    try:
        out = accept_run(app.store, args.run_id, actor=args.actor, reason=args.reason, kept=kept)
    except ValueError as exc:
        raise StateError(str(exc)) from None
    by = out["accepted_by"] or {}
    print(f"run {args.run_id} ({out['pair']}): performance accepted by {by.get('actor')} at {by.get('at')}: "
          f"{by.get('reason')}")
    if out["kept"]:
        print(f"candidate kept at {out['kept']}")
    if out["warning"]:
        print(f"warning: {out['warning']}", file=sys.stderr)
    return EXIT_OK

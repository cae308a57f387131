"""``sentinel run``: the daemon."""
from __future__ import annotations

import argparse
import os
import sys

from .common import app_of, config_arg


def register(sub: argparse._SubParsersAction) -> None:
    config_arg(sub.add_parser("run", help="run the daemon"))


def run(args: argparse.Namespace) -> int:
    from ..daemon import Daemon
    from ..logs import setup_logging

    app = app_of(args)
    setup_logging(app.cfg.logging.level, app.cfg.logging.format)
    code = Daemon(app).run()
    sys.stdout.flush()
    sys.stderr.flush()
    # a revalidation abandoned at shutdown may still hold a worker thread: do not wait for it
    os._exit(code)

"""What several commands share: exit codes, the ``--config`` option, and the ``App``
(sentinel/app.py) a one-shot command works with."""
from __future__ import annotations

import argparse
import os
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=os.environ.get("SENTINEL_CONFIG", "sentinel.yaml"),
                   help="config file (default: $SENTINEL_CONFIG or sentinel.yaml)")


def load(args: argparse.Namespace) -> Any:
    from ..config import load_config
    return load_config(args.config)


def app_of(args: argparse.Namespace, *, pairs: Any = None) -> Any:
    """The ``App`` for ``--config``, every part resolved on first use (a command that only reads
    incidents loads no model). ``pairs``: only these configured pairs."""
    from ..app import build
    return build(load(args), load_models=False, pairs=pairs)

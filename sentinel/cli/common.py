"""What several commands share: exit codes, the ``--config`` option, and opening the store and
the incident engine the way one-shot commands do."""
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


def open_store(cfg: Any) -> Any:
    from ..storage import open_store as _open
    return _open(cfg.store.url, echo=cfg.store.echo)


def incident_engine(cfg: Any, store: Any) -> Any:
    from ..incidents.engine import IncidentEngine
    return IncidentEngine.from_config(cfg, store)


def deliver_outbox(cfg: Any, store: Any) -> None:
    """One-shot commands deliver what they queued (the daemon retries anything left pending)."""
    from ..notifiers.base import build_notifiers
    from ..notifiers.outbox import OutboxDispatcher

    if not cfg.notifiers:
        return
    notifiers = build_notifiers(cfg)
    OutboxDispatcher(store, notifiers, max_attempts={n: c.max_attempts for n, c in cfg.notifiers.items()}
                     ).dispatch_due()

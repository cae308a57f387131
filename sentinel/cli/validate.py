"""``sentinel validate FILE...``: daemon configs, escalation policy files and check suites."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from .common import EXIT_OK, EXIT_USAGE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check config, escalation policy and check suite files; exit 0 (valid) or 2")
    p.add_argument("files", nargs="+", help="daemon configs, policy files (alerts/*.yaml: a top-level "
                                            "'policies' key) and/or suite files (checks/*.yaml: a top-level "
                                            "'suite' key); policy targets are checked against the configs given, "
                                            "else --config")
    p.add_argument("--no-models", action="store_true", help="do not load the model files")
    p.add_argument("--config", "-c", default=os.environ.get("SENTINEL_CONFIG", "sentinel.yaml"),
                   help="the daemon config whose notifiers policy targets must name, when no config is among FILES")


def run(args: argparse.Namespace) -> int:
    return validate(args.files, load_models=not args.no_models, config=args.config)


def validate(files: Sequence[str], *, load_models: bool = True, config: str | None = None) -> int:
    """Validate daemon configs (models, notifiers, the policies they name) and escalation policy
    files (structure, delays, reachability, and targets against the configs' notifiers)."""
    from ..config import load_config
    from ..config_files import peek_yaml
    from ..incidents.escalation import is_policy_file

    kinds = {f: "policy" if is_policy_file(f, peek_yaml(f)) else "config" for f in files}
    worst, targets = EXIT_OK, None
    for f in (f for f in files if kinds[f] == "config"):
        try:
            targets = _validate_config(f, load_models=load_models, targets=targets)
        except ConfigError as exc:
            print(f"sentinel: error: {exc}", file=sys.stderr)
            worst = EXIT_USAGE
    policy_files = [f for f in files if kinds[f] == "policy"]
    if policy_files and targets is None and config and Path(config).exists():
        try:
            targets = set(load_config(config).notifiers)
        except ConfigError as exc:
            print(f"sentinel: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    for f in policy_files:
        try:
            _validate_policy_file(f, targets)
        except ConfigError as exc:
            print(f"sentinel: error: {exc}", file=sys.stderr)
            worst = EXIT_USAGE
    return worst


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _validate_config(f: str, *, load_models: bool, targets: set[str] | None) -> set[str] | None:
    """Check one config or suite file (raises ConfigError); returns the notifier names seen so far."""
    from ..checks.suites import load_suite, load_suites, specs_for_pair
    from ..config import load_config
    from ..config_files import is_suite_file, peek_yaml
    from ..incidents.escalation import load_policies
    from ..notifiers.base import check_notifier_types
    from ..revalidation import load_pair

    if is_suite_file(peek_yaml(f)):
        suite = load_suite(f)
        print(f"{f}: ok (suite {suite.name} version {suite.version}, {len(suite.specs)} checks and scenarios)")
        return targets
    cfg = load_config(f)
    targets = (targets or set()) | set(cfg.notifiers)
    check_notifier_types(cfg)   # not built: their secrets may live only where the daemon runs
    policies = load_policies(cfg.escalation, base_dir=cfg.base_dir, targets=cfg.notifiers, source=cfg.source)
    if load_models:
        for name in cfg.pairs:
            load_pair(cfg, name).close()
    else:       # the suites (and their data sets) are checked either way
        suites = load_suites(cfg)
        for name in cfg.pairs:
            specs_for_pair(cfg, name, suites)
    extra = f", {len(policies)} escalation {_plural(len(policies), 'policy', 'policies')}" if policies else ""
    print(f"{f}: ok ({len(cfg.pairs)} {_plural(len(cfg.pairs), 'pair', 'pairs')}{extra})")
    return targets


def _validate_policy_file(f: str, targets: set[str] | None) -> None:
    from ..incidents.escalation import configs_naming, load_policy_file

    own: Any = targets
    if own is None:
        # no config given: use the config(s) whose `escalation:` names this file
        found = configs_naming(f)
        own = set().union(*(set(c.notifiers) for c in found)) if found else None
    policies = load_policy_file(f, targets=own)
    note = "" if own is not None else "; targets not checked: give the daemon config too or --config"
    print(f"{f}: ok ({len(policies)} escalation {_plural(len(policies), 'policy', 'policies')}{note})")

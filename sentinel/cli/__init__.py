"""``sentinel`` command line, one module per command (each has ``register(sub)`` adding its parser
and ``run(args) -> int``). Only this package turns errors into exit codes: 0 success (all checks
pass), 1 a check failed, 2 a usage or configuration error."""
from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import Sequence

from ..errors import SentinelError
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

#: Command name -> module (in ``sentinel.cli``) defining ``register`` and ``run``, in help order.
COMMANDS = {"run": "run", "revalidate": "revalidate", "compare": "compare", "validate": "validate", "incidents": "incidents",
            "report": "report", "replay": "replay", "accept": "accept", "diagnose": "diagnose", "users": "users", "demo": "demo"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("sentinel-ml")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentinel", description="Keeps compressed ML models honest in production.")
    parser.add_argument("--version", action="version", version=f"sentinel {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, module in COMMANDS.items():
        import_module(f"{__name__}.{module}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return import_module(f"{__name__}.{COMMANDS[args.command]}").run(args)
    except SentinelError as exc:   # ConfigError, NotFoundError, StateError, SourceError...
        print(f"sentinel: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

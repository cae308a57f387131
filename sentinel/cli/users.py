"""``sentinel users add NAME --role ROLE`` and ``sentinel users list``: the people who may sign in
(``sentinel.users``). A new token is printed once; the users file keeps only its sha256."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .common import EXIT_OK, config_arg, load


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="add or list the people who may sign in (roles: viewer, responder, "
                                     "approver, admin)")
    users = p.add_subparsers(dest="users_command", required=True)
    add = users.add_parser("add", help="add a user; prints their new token once")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("viewer", "responder", "approver", "admin"))
    for q in (add, users.add_parser("list", help="who may sign in, with their roles")):
        config_arg(q)
        q.add_argument("--file", help="the users file (default: api.users_file of --config)")


def _file(args: argparse.Namespace) -> Path:
    if args.file:
        return Path(args.file)
    cfg = load(args)
    if not cfg.api.users_file:
        raise ConfigError(cfg.source, "api.users_file", "not set: name the users file there or with --file")
    return cfg.resolve_path(cfg.api.users_file)


def run(args: argparse.Namespace) -> int:
    from ..users import Users, add_user, describe

    file = _file(args)
    if args.users_command == "add":
        token = add_user(file, args.name, args.role)
        print(f"added {args.name} ({args.role}) to {file}")
        print(f"their token (shown once, give it to them privately): {token}")
        return EXIT_OK
    for line in describe(Users(file=file).all()):
        print(line)
    return EXIT_OK

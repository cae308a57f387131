"""``sentinel incidents list|show|ack|resolve|silence``."""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ..errors import SentinelError

# as sentinel.incidents.engine.LIST_STATES (the stored states and ``reopened``); spelled out so
# parsing the command line imports no engine (tests/test_cli_incidents.py keeps them equal)
LIST_STATES = ("open", "acknowledged", "resolved", "silenced", "reopened")
LABELS = ("pair", "check", "slice", "severity", "state", "candidate")   # as sentinel.incidents.matchers.LABELS
from .common import EXIT_OK, app_of, config_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("incidents", help="list, show, acknowledge, resolve or silence incidents")
    isub = p.add_subparsers(dest="action", required=True)
    q = isub.add_parser("list")
    config_arg(q)
    q.add_argument("--state", choices=LIST_STATES, help="a state, or reopened (open again after a resolution)")
    q.add_argument("--pair")
    q.add_argument("--json", action="store_true")
    for action in ("show", "ack", "resolve"):
        q = isub.add_parser(action)
        config_arg(q)
        q.add_argument("id", type=int)
        if action != "show":
            q.add_argument("--actor", default=os.environ.get("USER", "cli"))
            q.add_argument("--note")
        else:
            q.add_argument("--json", action="store_true")
    q = isub.add_parser("silence", help="silence matching incidents for a while (or --list, --expire ID)",
                        description="Silence incidents matching every --match (NAME=VALUE, NAME!=VALUE, NAME=~REGEX; "
                                    f"names: {', '.join(LABELS)}) for --for (90m, 2h, 1d).")
    config_arg(q)
    q.add_argument("--match", "-m", action="append", default=[], metavar="MATCHER")
    q.add_argument("--for", dest="duration", metavar="DURATION")
    q.add_argument("--author", default=os.environ.get("USER", "cli"))
    q.add_argument("--reason")
    q.add_argument("--list", action="store_true", help="list active silences (with --all: expired ones too)")
    q.add_argument("--all", action="store_true")
    q.add_argument("--expire", type=int, metavar="SILENCE_ID", help="end a silence now")
    q.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    app = app_of(args)
    engine = app.incidents
    if args.action == "list":
        return _list(engine, args)
    if args.action == "show":
        from ..printing import print_incident

        inc = engine.get(args.id)
        if args.json:
            print(json.dumps(inc, indent=2, default=str))
        else:
            print_incident(inc)
        return EXIT_OK
    if args.action == "silence":
        try:
            return _silence(engine, args)
        except ValueError as exc:   # a bad matcher, duration or missing reason
            raise SentinelError(f"incidents silence: {exc}") from None
    if args.action == "ack":
        engine.ack(args.id, args.actor, note=args.note)
    else:
        engine.resolve(args.id, args.actor, note=args.note)
    app.deliver_outbox()
    print(f"incident #{args.id}: {engine.get(args.id)['state']}")
    return EXIT_OK


def _list(engine: Any, args: argparse.Namespace) -> int:
    rows = engine.list(state=args.state, pair=args.pair, limit=500)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return EXIT_OK
    if not rows:
        print("no incidents")
    for r in rows:
        print(f"#{r['id']:<5} {r['state']:<13} {r['severity']:<9} {r['pair']}/{r['check']}/{r['slice']}  "
              f"x{r['occurrences']}  opened {r['opened_at']:%Y-%m-%d %H:%M:%S} UTC  {r['title']}")
    return EXIT_OK


def _silence(engine: Any, args: argparse.Namespace) -> int:
    from ..durations import parse_duration
    from ..incidents.matchers import parse_matcher

    if args.list:
        rows = engine.silences(active_only=not args.all)
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
        for r in [] if args.json else rows:
            print(f"silence {r['id']:<4} {'active ' if r['active'] else 'expired'} until {r['ends_at']:%Y-%m-%d %H:%M:%S} "
                  f"by {r['author']}: {' '.join(r['matchers'])}  ({r['reason']})")
        if not rows and not args.json:
            print("no silences")
        return EXIT_OK
    if args.expire is not None:
        s = engine.expire_silence(args.expire, args.author)
        print(f"silence {s['id']} expired")
        return EXIT_OK
    if not args.duration:
        raise ValueError("--for DURATION is required (e.g. --for 2h)")
    matchers = [parse_matcher(m) for m in args.match]
    duration = parse_duration(args.duration)
    s = engine.add_silence(matchers, author=args.author, reason=args.reason or "", duration=duration)
    moved = f"; silenced incidents {', '.join(f'#{i}' for i in s['silenced'])}" if s["silenced"] else ""
    print(f"silence {s['id']} active until {s['ends_at']:%Y-%m-%d %H:%M:%S} UTC: {' '.join(s['matchers'])}{moved}")
    return EXIT_OK

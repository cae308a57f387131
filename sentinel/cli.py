"""``sentinel`` command line. Only this module turns errors into exit codes:
0 success (all checks pass), 1 a check failed, 2 a usage or configuration error."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, NotFoundError, SentinelError, StateError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=os.environ.get("SENTINEL_CONFIG", "sentinel.yaml"),
                   help="config file (default: $SENTINEL_CONFIG or sentinel.yaml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentinel", description="Keeps compressed ML models honest in production.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon")
    _config_arg(p)

    p = sub.add_parser("revalidate", help="run one revalidation now and exit 0 (pass) / 1 (a check failed) / 2")
    _config_arg(p)
    p.add_argument("--pair", help="only this model pair")
    p.add_argument("--input", help="a JSON-lines file of traffic messages to use instead of the stored window")
    p.add_argument("--json", action="store_true", help="print results as JSON")

    p = sub.add_parser("validate", help="check config files and exit 0 (valid) or 2")
    p.add_argument("files", nargs="+")
    p.add_argument("--no-models", action="store_true", help="do not load the model files")

    p = sub.add_parser("incidents", help="list, show, acknowledge or resolve incidents")
    isub = p.add_subparsers(dest="action", required=True)
    q = isub.add_parser("list")
    _config_arg(q)
    q.add_argument("--state", choices=["open", "acknowledged", "resolved"])
    q.add_argument("--pair")
    q.add_argument("--json", action="store_true")
    for action in ("show", "ack", "resolve"):
        q = isub.add_parser(action)
        _config_arg(q)
        q.add_argument("id", type=int)
        if action != "show":
            q.add_argument("--actor", default=os.environ.get("USER", "cli"))
            q.add_argument("--note")
        else:
            q.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="write (or find) a run's HTML report and print its path")
    _config_arg(p)
    p.add_argument("run_id", type=int)

    p = sub.add_parser("replay", help="re-run the checks of a stored run on the same samples and compare")
    _config_arg(p)
    p.add_argument("run_id", type=int)

    p = sub.add_parser("demo", help="the whole loop on embedded defaults: broker, traffic, drift, incident")
    p.add_argument("--out", default="demo-output", help="folder for the demo's database, reports and logs")
    p.add_argument("--max-seconds", type=float, default=150.0, help="give up after this long")
    p.add_argument("--seed", type=int, default=7)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ConfigError, NotFoundError, StateError) as exc:
        print(f"sentinel: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SentinelError as exc:
        print(f"sentinel: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "validate":
        return cmd_validate(args.files, load_models=not args.no_models)
    if cmd == "demo":
        from .demo import run_demo
        return run_demo(out=Path(args.out), max_seconds=args.max_seconds, seed=args.seed)
    from .config import load_config
    cfg = load_config(args.config)
    if cmd == "run":
        return cmd_run(cfg)
    if cmd == "revalidate":
        return cmd_revalidate(cfg, pair=args.pair, input_file=args.input, as_json=args.json)
    if cmd == "incidents":
        return cmd_incidents(cfg, args)
    if cmd == "report":
        return cmd_report(cfg, args.run_id)
    if cmd == "replay":
        return cmd_replay(cfg, args.run_id)
    raise AssertionError(cmd)


def cmd_validate(files: Sequence[str], *, load_models: bool = True) -> int:
    from .config import load_config
    from .revalidation import load_pair

    worst = EXIT_OK
    for f in files:
        try:
            cfg = load_config(f)
            if load_models:
                for name in cfg.pairs:
                    load_pair(cfg, name).close()
            print(f"{f}: ok ({len(cfg.pairs)} pair{'s' if len(cfg.pairs) != 1 else ''})")
        except ConfigError as exc:
            print(f"sentinel: error: {exc}", file=sys.stderr)
            worst = EXIT_USAGE
    return worst


def cmd_run(cfg: Any) -> int:
    from .daemon import Daemon
    from .logs import setup_logging

    setup_logging(cfg.logging.level, cfg.logging.format)
    code = Daemon(cfg).run()
    sys.stdout.flush()
    sys.stderr.flush()
    # a revalidation abandoned at shutdown may still hold a worker thread: do not wait for it
    os._exit(code)


def _open_store(cfg: Any) -> Any:
    from .storage import open_store
    return open_store(cfg.store.url, echo=cfg.store.echo)


def _engine(cfg: Any, store: Any) -> Any:
    from .incidents.engine import IncidentEngine
    return IncidentEngine(store, targets=sorted(cfg.notifiers), open_on=cfg.incidents.open_on,
                          runbook_url=cfg.incidents.runbook_url)


def read_input_file(path: str, cfg: Any, shapes: dict[str, Any]) -> tuple[dict[str, list[Any]], dict[str, Any], int]:
    """Decode a JSON-lines file of traffic messages into per-pair samples. Bad lines are reported
    (file:line: reason) and skipped; the file's sha256 goes into the run record."""
    import hashlib

    from .errors import MessageError
    from .messages import decode_traffic
    from .storage.repository import Sample

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read input file ({exc.strerror})") from None
    by_pair: dict[str, list[Any]] = {}
    bad = 0
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            m = decode_traffic(line, shapes)
        except MessageError as exc:
            bad += 1
            print(f"{path}:{lineno}: skipped: {exc}", file=sys.stderr)
            continue
        by_pair.setdefault(m.pair, []).append(
            Sample(id=lineno, pair=m.pair, msg_id=m.id, ts=m.ts, topic=None, partition=None, offset=None,
                   inputs=m.inputs, attributes=m.attributes, label=m.label, extra=m.extra))
    source = {"kind": "file", "path": str(p.resolve()), "sha256": hashlib.sha256(data).hexdigest()}
    return by_pair, source, bad


def cmd_revalidate(cfg: Any, *, pair: str | None, input_file: str | None, as_json: bool) -> int:
    from .metrics import Metrics
    from .reports import write_run_report
    from .revalidation import Revalidator, load_pair, overall_exit_code, resolve_report_dir

    if pair is not None and pair not in cfg.pairs:
        raise ConfigError(cfg.source, "pairs", f"no pair {pair!r}; configured pairs are {sorted(cfg.pairs)}")
    names = [pair] if pair else sorted(cfg.pairs)
    loaded = {n: load_pair(cfg, n) for n in names}
    store = _open_store(cfg)
    reports = resolve_report_dir(cfg)
    reval = Revalidator(cfg, store, loaded, incidents=_engine(cfg, store), metrics=Metrics(),
                        report_writer=lambda run, lp: write_run_report(run, reports))
    given: dict[str, list[Any]] | None = None
    source = None
    if input_file:
        given, source, _bad = read_input_file(input_file, cfg, {n: p.shape for n, p in loaded.items()})
    outcomes = []
    for name in names:
        samples = given.get(name, []) if given is not None else None
        if samples is not None and not samples:
            print(f"{name}: no messages for this pair in {input_file}", file=sys.stderr)
            continue
        o = reval.run(name, trigger="cli", samples=samples, source=source)
        if o is None:
            print(f"{name}: no pending samples in the store; nothing to revalidate", file=sys.stderr)
            continue
        outcomes.append(o)
    _deliver_outbox(cfg, store)
    if as_json:
        print(json.dumps([{"run_id": o.run_id, "pair": o.pair, "status": o.status, "n_samples": o.n_samples,
                           "report": o.report_path, "results": [r.to_row() for r in o.results]}
                          for o in outcomes], indent=2))
    else:
        for o in outcomes:
            print_results(o)
    return max((overall_exit_code(o.results) for o in outcomes), default=EXIT_OK)


def _deliver_outbox(cfg: Any, store: Any) -> None:
    """One-shot commands deliver what they queued (the daemon retries anything left pending)."""
    from .notifiers.base import build_notifier
    from .notifiers.outbox import OutboxDispatcher

    if not cfg.notifiers:
        return
    notifiers = {n: build_notifier(n, c) for n, c in cfg.notifiers.items()}
    OutboxDispatcher(store, notifiers, max_attempts={n: c.max_attempts for n, c in cfg.notifiers.items()}
                     ).dispatch_due()


def print_results(o: Any) -> None:
    print(f"run {o.run_id}  pair {o.pair}  status {o.status.upper()}  samples {o.n_samples}")
    width = max([len(r.check) for r in o.results] + [5])
    swidth = max([len(r.slice) for r in o.results] + [5])
    print(f"  {'check':<{width}}  {'slice':<{swidth}}  {'status':<17}  {'value':>9}  {'n':>6}  detail")
    for r in o.results:
        value = "" if r.value is None else f"{r.value:.4g}"
        print(f"  {r.check:<{width}}  {r.slice:<{swidth}}  {r.status:<17}  {value:>9}  {r.n:>6}  {r.message}")
    if o.report_path:
        print(f"  report: {o.report_path}")
    for inc in o.incidents or []:
        print(f"  incident: {inc}")


def cmd_incidents(cfg: Any, args: argparse.Namespace) -> int:
    store = _open_store(cfg)
    engine = _engine(cfg, store)
    if args.action == "list":
        rows = engine.list(state=args.state, pair=args.pair, limit=500)
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
            return EXIT_OK
        if not rows:
            print("no incidents")
        for r in rows:
            print(f"#{r['id']:<5} {r['state']:<13} {r['severity']:<9} {r['pair']}/{r['check']}/{r['slice']}  "
                  f"x{r['occurrences']}  opened {r['opened_at']:%Y-%m-%d %H:%M:%S}  {r['title']}")
        return EXIT_OK
    if args.action == "show":
        inc = engine.get(args.id)
        if args.json:
            print(json.dumps(inc, indent=2, default=str))
        else:
            print_incident(inc)
        return EXIT_OK
    if args.action == "ack":
        engine.ack(args.id, args.actor, note=args.note)
    else:
        engine.resolve(args.id, args.actor, note=args.note)
    _deliver_outbox(cfg, store)
    print(f"incident #{args.id}: {engine.get(args.id)['state']}")
    return EXIT_OK


def print_incident(inc: dict[str, Any]) -> None:
    print(f"incident #{inc['id']}  [{inc['severity']}]  {inc['state']}")
    print(f"  {inc['title']}")
    print(f"  pair {inc['pair']}  check {inc['check']}  slice {inc['slice']}  fingerprint {inc['fingerprint']}")
    print(f"  opened {inc['opened_at']}  updated {inc['updated_at']}  occurrences {inc['occurrences']}")
    ev = inc.get("evidence") or {}
    res = ev.get("result") or {}
    for k in ("message", "value", "warn", "fail", "n"):
        if res.get(k) is not None:
            print(f"  {k}: {res[k]}")
    if res.get("details"):
        print(f"  evidence: {json.dumps(res['details'], default=str)[:800]}")
    print(f"  runs: {inc.get('run_ids') or ev.get('run_ids')}")
    if inc.get("report") or ev.get("report"):
        print(f"  report: {inc.get('report') or ev.get('report')}")
    if inc.get("runbook_url"):
        print(f"  runbook: {inc['runbook_url']}")
    for e in inc.get("events", []):
        print(f"  - {e['at']} {e['action']} by {e['actor']} ({e.get('from_state')} -> {e.get('to_state')})")
    for d in inc.get("deliveries", []):
        print(f"  > notify {d['target']}: {d['status']} (attempts {d['attempts']}){' ' + d['last_error'] if d.get('last_error') else ''}")


def cmd_report(cfg: Any, run_id: int) -> int:
    from .reports import write_run_report
    from .revalidation import resolve_report_dir

    store = _open_store(cfg)
    run = store.get_run(run_id)
    if run is None:
        raise NotFoundError("run", run_id)
    path = run.get("report_path")
    if not path or not Path(path).exists():
        path = write_run_report(run, resolve_report_dir(cfg))
        store.set_report_path(run_id, path)
    print(path)
    return EXIT_OK


def cmd_replay(cfg: Any, run_id: int) -> int:
    """Re-evaluate a run's stored samples with the configured models; prints old vs new status and
    whether the model hashes and config hash still match the run's record."""
    from .revalidation import Revalidator, load_pair

    store = _open_store(cfg)
    run = store.get_run(run_id)
    if run is None:
        raise NotFoundError("run", run_id)
    if run["pair"] not in cfg.pairs:
        raise ConfigError(cfg.source, "pairs", f"run {run_id} is for pair {run['pair']!r}, not in this config")
    loaded = load_pair(cfg, run["pair"])
    used = run["record"].get("samples", {})
    if used.get("kind") == "file":
        # a run on a file kept the file's path and sha256, not a copy: re-read it and verify
        by_pair, source, _ = read_input_file(used["path"], cfg, {run["pair"]: loaded.shape})
        if source["sha256"] != used.get("sha256"):
            raise ConfigError(used["path"], "", f"input file changed since run {run_id} "
                                                f"(sha256 {source['sha256'][:12]}, run used {used.get('sha256', '')[:12]})")
        samples = by_pair.get(run["pair"], [])
    else:
        samples = store.run_samples(run_id)
    results = Revalidator(cfg, store, {run["pair"]: loaded}).evaluate(loaded, samples)
    rec = run["record"]
    same_models = rec.get("models", {}) == loaded.hashes
    same_config = rec.get("config_hash") == cfg.config_hash()
    print(f"replay of run {run_id} ({run['pair']}): {len(samples)} samples; "
          f"models {'match' if same_models else 'DIFFER'}; config {'matches' if same_config else 'DIFFERS'}")
    old = {(r["check"], r["slice"]): r for r in run["results"]}
    differ = 0
    for r in results:
        if r.check.startswith(("latency", "perf")):
            continue  # timing is not reproducible by nature; everything else must be
        o = old.get((r.check, r.slice))
        same = o is not None and o["status"] == r.status and (
            (o["value"] is None and r.value is None) or (o["value"] is not None and r.value is not None
                                                        and abs(o["value"] - r.value) <= 1e-9))
        differ += not same
        print(f"  {r.check:<16} {r.slice:<20} then {o['status'] if o else '-':<17} now {r.status:<17} "
              f"{'same' if same else 'DIFFERENT'}")
    return EXIT_OK if differ == 0 else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

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

    p = sub.add_parser("validate", help="check config, escalation policy and check suite files; exit 0 (valid) or 2")
    p.add_argument("files", nargs="+", help="daemon configs, policy files (alerts/*.yaml: a top-level "
                                            "'policies' key) and/or suite files (checks/*.yaml: a top-level "
                                            "'suite' key); policy targets are checked against the configs given, "
                                            "else --config")
    p.add_argument("--no-models", action="store_true", help="do not load the model files")
    p.add_argument("--config", "-c", default=os.environ.get("SENTINEL_CONFIG", "sentinel.yaml"),
                   help="the daemon config whose notifiers policy targets must name, when no config is among FILES")

    p = sub.add_parser("incidents", help="list, show, acknowledge, resolve or silence incidents")
    isub = p.add_subparsers(dest="action", required=True)
    q = isub.add_parser("list")
    _config_arg(q)
    q.add_argument("--state", choices=["open", "acknowledged", "resolved", "silenced"])
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
    q = isub.add_parser("silence", help="silence matching incidents for a while (or --list, --expire ID)",
                        description="Silence incidents matching every --match (NAME=VALUE, NAME!=VALUE, NAME=~REGEX; "
                                    "names: pair, check, slice, severity, state) for --for (90m, 2h, 1d).")
    _config_arg(q)
    q.add_argument("--match", "-m", action="append", default=[], metavar="MATCHER")
    q.add_argument("--for", dest="duration", metavar="DURATION")
    q.add_argument("--author", default=os.environ.get("USER", "cli"))
    q.add_argument("--reason")
    q.add_argument("--list", action="store_true", help="list active silences (with --all: expired ones too)")
    q.add_argument("--all", action="store_true")
    q.add_argument("--expire", type=int, metavar="SILENCE_ID", help="end a silence now")
    q.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="write (or find) a run's HTML report and print its path")
    _config_arg(p)
    p.add_argument("run_id", type=int)
    p.add_argument("--rewrite", action="store_true", help="write the report again even if its file exists")
    p.add_argument("--open", action="store_true", help="also open it in the default browser")

    p = sub.add_parser("replay", help="re-run the checks of a stored run on the same samples and compare")
    _config_arg(p)
    p.add_argument("run_id", type=int)

    p = sub.add_parser("accept", help="accept a run's performance as the new normal (e.g. a candidate that is "
                                      "slower on purpose): later candidates are judged against it")
    _config_arg(p)
    p.add_argument("run_id", type=int)
    p.add_argument("--actor", default=os.environ.get("USER", "cli"))
    p.add_argument("--reason", required=True, help="why (kept in the run record)")

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
        return cmd_validate(args.files, load_models=not args.no_models, config=args.config)
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
        return cmd_report(cfg, args.run_id, rewrite=args.rewrite, open_it=args.open)
    if cmd == "replay":
        return cmd_replay(cfg, args.run_id)
    if cmd == "accept":
        return cmd_accept(cfg, args.run_id, actor=args.actor, reason=args.reason)
    raise AssertionError(cmd)


def cmd_validate(files: Sequence[str], *, load_models: bool = True, config: str | None = None) -> int:
    """Validate daemon configs (models, notifiers, the policies they name) and escalation policy
    files (structure, delays, reachability, and targets against the configs' notifiers)."""
    from .config import load_config
    from .incidents.escalation import is_policy_file, load_policies, load_policy_file
    from .notifiers.base import check_notifier_types
    from .revalidation import load_pair

    worst = EXIT_OK
    kinds = {f: "policy" if is_policy_file(f, _peek_yaml(f)) else "config" for f in files}
    targets: set[str] | None = None
    for f in (f for f in files if kinds[f] == "config"):
        try:
            if _is_suite_file(_peek_yaml(f)):
                from .checks.suites import load_suite
                suite = load_suite(f)
                print(f"{f}: ok (suite {suite.name} version {suite.version}, {len(suite.specs)} checks and scenarios)")
                continue
            cfg = load_config(f)
            targets = (targets or set()) | set(cfg.notifiers)
            check_notifier_types(cfg)   # not built: their secrets may live only where the daemon runs
            policies = load_policies(cfg.escalation, base_dir=cfg.base_dir, targets=cfg.notifiers, source=cfg.source)
            if load_models:
                for name in cfg.pairs:
                    load_pair(cfg, name).close()
            else:       # the suites (and their data sets) are checked either way
                from .checks.suites import load_suites, specs_for_pair
                suites = load_suites(cfg)
                for name in cfg.pairs:
                    specs_for_pair(cfg, name, suites)
            extra = f", {len(policies)} escalation polic{'ies' if len(policies) != 1 else 'y'}" if policies else ""
            print(f"{f}: ok ({len(cfg.pairs)} pair{'s' if len(cfg.pairs) != 1 else ''}{extra})")
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
            own = targets
            if own is None:
                # no config given: use the config(s) whose `escalation:` names this file
                found = _configs_naming(f)
                own = set().union(*(set(c.notifiers) for c in found)) if found else None
            policies = load_policy_file(f, targets=own)
            note = "" if own is not None else "; targets not checked: give the daemon config too or --config"
            print(f"{f}: ok ({len(policies)} escalation polic{'ies' if len(policies) != 1 else 'y'}{note})")
        except ConfigError as exc:
            print(f"sentinel: error: {exc}", file=sys.stderr)
            worst = EXIT_USAGE
    return worst


def _is_suite_file(raw: Any) -> bool:
    """A suite file (``checks/*.yaml``) has a top-level ``suite`` key; a daemon config's ``pairs``
    is a mapping where a suite's is a list of names."""
    return isinstance(raw, dict) and "suite" in raw and not isinstance(raw.get("pairs"), dict)


def _configs_naming(policy_file: str) -> list[Any]:
    """Daemon configs near ``policy_file`` (the current folder, the policy folder's parent, and a
    ``deploy/`` folder in either) whose ``escalation`` pattern matches it."""
    import glob as globlib

    from .config import load_config

    target = Path(policy_file).resolve()
    folders = {Path.cwd(), target.parent.parent, Path.cwd() / "deploy", target.parent.parent / "deploy"}
    found = []
    for folder in sorted(folders):
        for candidate in sorted(folder.glob("*.y*ml")):
            raw = _peek_yaml(str(candidate))
            if not isinstance(raw, dict) or not isinstance(raw.get("escalation"), str) or "pairs" not in raw:
                continue
            pattern = Path(raw["escalation"]).expanduser()
            pattern = pattern if pattern.is_absolute() else candidate.resolve().parent / pattern
            if target in {Path(m).resolve() for m in globlib.glob(str(pattern))}:
                try:
                    found.append(load_config(candidate))
                except ConfigError:
                    continue   # that config's own problems are reported when it is validated
    return found


def _peek_yaml(path: str) -> Any:
    """The parsed file, or None if it cannot be read or parsed (the loader reports why later)."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


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
    return IncidentEngine.from_config(cfg, store)


def cmd_revalidate(cfg: Any, *, pair: str | None, input_file: str | None, as_json: bool) -> int:
    from .metrics import Metrics
    from .reports import write_run_report
    from .revalidation import Revalidator, load_pair, overall_exit_code, read_input_file, resolve_report_dir

    if pair is not None and pair not in cfg.pairs:
        raise ConfigError(cfg.source, "pairs", f"no pair {pair!r}; configured pairs are {sorted(cfg.pairs)}")
    names = [pair] if pair else sorted(cfg.pairs)
    loaded = {n: load_pair(cfg, n) for n in names}
    store = _open_store(cfg)
    reports = resolve_report_dir(cfg)
    reval = Revalidator(cfg, store, loaded, incidents=_engine(cfg, store), metrics=Metrics(),
                        report_writer=lambda run, lp, data=None: write_run_report(run, reports, data))
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
    from .notifiers.base import build_notifiers
    from .notifiers.outbox import OutboxDispatcher

    if not cfg.notifiers:
        return
    notifiers = build_notifiers(cfg)
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
        notified = f", notified {', '.join(inc.notified)}" if inc.notified else ""
        print(f"  incident #{inc.incident_id} {inc.action} [{inc.severity}] {inc.check}/{inc.slice}"
              f" (occurrences {inc.occurrences}{notified})")


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
    if args.action == "silence":
        try:
            return cmd_silence(engine, args)
        except ValueError as exc:   # a bad matcher, duration or missing reason
            raise SentinelError(f"incidents silence: {exc}") from None
    if args.action == "ack":
        engine.ack(args.id, args.actor, note=args.note)
    else:
        engine.resolve(args.id, args.actor, note=args.note)
    _deliver_outbox(cfg, store)
    print(f"incident #{args.id}: {engine.get(args.id)['state']}")
    return EXIT_OK


def cmd_silence(engine: Any, args: argparse.Namespace) -> int:
    from .incidents.matchers import parse_duration, parse_matcher

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


def print_incident(inc: dict[str, Any]) -> None:
    print(f"incident #{inc['id']}  [{inc['severity']}]  {inc['state']}")
    print(f"  {inc['title']}")
    print(f"  pair {inc['pair']}  check {inc['check']}  slices {', '.join(inc.get('slices') or [inc['slice']])}  "
          f"fingerprint {inc['fingerprint']}")
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
    esc = inc.get("escalation")
    if esc and esc.get("policy"):
        nxt = f", next step at {esc['next_at']}" if esc.get("next_at") else ""
        print(f"  escalation: policy {esc['policy']} tier {esc['tier']} ({esc['status']}{nxt}); "
              f"notified {', '.join(esc['notified']) or 'nobody'}")
    for e in inc.get("events", []):
        print(f"  - {e['at']} {e['action']} by {e['actor']} ({e.get('from_state')} -> {e.get('to_state')})")
    for d in inc.get("deliveries", []):
        print(f"  > notify {d['target']}: {d['status']} (attempts {d['attempts']}){' ' + d['last_error'] if d.get('last_error') else ''}")


def cmd_accept(cfg: Any, run_id: int, *, actor: str, reason: str) -> int:
    """Accept a run's performance: ``perf_history`` then judges later candidates against this
    run's candidate (sentinel.perf.accepted.accept_run)."""
    from .perf.accepted import accept_run, kept_models

    kept = kept_models(cfg)
    try:
        out = accept_run(_open_store(cfg), run_id, actor=actor, reason=reason, kept=kept)
    except ValueError as exc:
        raise StateError(str(exc)) from None
    by = out["accepted_by"] or {}
    print(f"run {run_id} ({out['pair']}): performance accepted by {by.get('actor')} at {by.get('at')}: {by.get('reason')}")
    if out["kept"]:
        print(f"candidate kept at {out['kept']}")
    if out["warning"]:
        print(f"warning: {out['warning']}", file=sys.stderr)
    return EXIT_OK


def cmd_report(cfg: Any, run_id: int, *, rewrite: bool = False, open_it: bool = False) -> int:
    """Print the path of the run's report, writing it first when it is missing (or --rewrite).
    A rewrite re-runs the models on the run's stored samples and reference window (when the pair
    is still configured) so the Evidently section can be rebuilt; otherwise it holds the stored
    results only."""
    from .reports import write_run_report
    from .revalidation import Revalidator, load_pair, resolve_report_dir

    store = _open_store(cfg)
    run = store.get_run(run_id)
    if run is None:
        raise NotFoundError("run", run_id)
    path = run.get("report_path")
    if rewrite or not path or not Path(path).exists():
        data = None
        if run["pair"] in cfg.pairs:
            loaded = load_pair(cfg, run["pair"])
            samples = _stored_samples(cfg, store, run, loaded)
            if samples:
                data = Revalidator(cfg, store, {run["pair"]: loaded}).build_data(
                    loaded, samples, before_run=run_id,
                    reference_runs=(run["record"].get("reference") or {}).get("run_ids"), measure=False)
        path = write_run_report(run, resolve_report_dir(cfg), data)
        store.set_report_path(run_id, path)
    print(path)
    if open_it:
        import webbrowser
        webbrowser.open(Path(path).resolve().as_uri())
    return EXIT_OK


def _stored_samples(cfg: Any, store: Any, run: dict[str, Any], loaded: Any) -> list[Any]:
    """The samples a run used: its claimed window, or its input file re-read and verified."""
    from .revalidation import run_samples
    return run_samples(store, run, loaded.shape)


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
    samples = _stored_samples(cfg, store, run, loaded)
    rec = run["record"]
    results = Revalidator(cfg, store, {run["pair"]: loaded}).evaluate(
        loaded, samples, before_run=run_id, reference_runs=(rec.get("reference") or {}).get("run_ids"))
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

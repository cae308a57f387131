"""Plain-text rendering of a run's results and of an incident, for the CLI and the demo.
A bottom-layer helper: it takes the objects and dicts the engines return and imports nothing of
Sentinel's, so any command (and the demo) can print without importing the CLI."""
from __future__ import annotations

import json
from typing import Any


def print_results(o: Any) -> None:
    """One run (a ``RunOutcome``): its status line, a results table, the report and incidents."""
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


def print_incident(inc: dict[str, Any]) -> None:
    """One incident as ``IncidentEngine.get`` returns it: headline, evidence, escalation, events
    and deliveries."""
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
        error = f" {d['last_error']}" if d.get("last_error") else ""
        print(f"  > notify {d['target']}: {d['status']} (attempts {d['attempts']}){error}")

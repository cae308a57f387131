"""Plain-text rendering of a run's results and of an incident, for the CLI and the demo.
A bottom-layer helper: it takes the objects and dicts the engines return and imports only the
other bottom-layer text helpers (:mod:`sentinel.words`), so any command (and the demo) can print
without importing the CLI."""
from __future__ import annotations

from typing import Any

from .words import check_label, describe


def _when(value: Any) -> str:
    """A time to the second, UTC (``2026-12-01 16:59:52``): no microseconds, never ``None``."""
    if value is None:
        return "-"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value).replace("T", " ").split(".")[0].removesuffix("Z").split("+")[0]


def print_results(o: Any) -> None:
    """One run (a ``RunOutcome``): its status line, a results table (each row in the words of the
    test that decided it, :func:`sentinel.words.describe`), the report and incidents."""
    print(f"run {o.run_id}  pair {o.pair}  status {o.status.upper()}  samples {o.n_samples}")
    if any(r.candidate for r in o.results):   # several candidates: each row names its own
        print_tradeoff(o.record.get("tradeoff") or {})
    width = max([len(_label(r)) for r in o.results] + [5])
    swidth = max([len(r.slice) for r in o.results] + [5])
    print(f"  {'check':<{width}}  {'slice':<{swidth}}  {'status':<17}  {'value':>9}  {'n':>6}  detail")
    for r in o.results:
        value = "" if r.value is None else f"{r.value:.4g}"
        said = describe(r.to_row(), with_where=None)
        print(f"  {_label(r):<{width}}  {r.slice:<{swidth}}  {r.status:<17}  {value:>9}  {r.n:>6}  {said}")
    if o.report_path:
        print(f"  report: {o.report_path}")
    _print_diagnosis((o.record or {}).get("diagnosis"))
    for inc in o.incidents or []:
        notified = f", notified {', '.join(inc.notified)}" if inc.notified else ""
        who = f"candidate {inc.candidate} " if getattr(inc, "candidate", None) else ""
        print(f"  incident #{inc.incident_id} {inc.action} [{inc.severity}] {who}{inc.check}/{inc.slice}"
              f" (occurrences {inc.occurrences}{notified})")


def _print_diagnosis(entry: Any) -> None:
    """The automatic diagnosis of a run (sentinel.diagnose.auto), in its own sentences; with
    several candidates, each one's under its name."""
    if not isinstance(entry, dict):
        return
    if isinstance(entry.get("candidates"), dict):
        for name, one in entry["candidates"].items():
            _print_diagnosis_of(one, f"diagnosis of {name}: ")
    else:
        _print_diagnosis_of(entry, "diagnosis: ")


def _print_diagnosis_of(entry: Any, head: str) -> None:
    if not isinstance(entry, dict):
        return
    if "result" not in entry:
        print(f"  {head}none ({entry.get('error')})")
        return
    for i, line in enumerate(entry["result"].get("summary") or []):
        print(f"  {head if i == 0 else ' ' * len(head)}{line}")


def print_incident(inc: dict[str, Any]) -> None:
    """One incident as ``IncidentEngine.get`` returns it: headline, what decided it per slice,
    escalation, then the timeline: each event (with its note) and under it the notifications that
    announced it."""
    print(f"incident #{inc['id']}  [{inc['severity']}]  {inc['state']}")
    print(f"  {inc['title']}")
    who = (inc.get("evidence") or {}).get("candidate")
    print(f"  pair {inc['pair']}  " + (f"candidate {who}  " if who else "") + f"check {inc['check']}  slices {', '.join(inc.get('slices') or [inc['slice']])}  "
          f"fingerprint {inc['fingerprint']}")
    print(f"  opened {_when(inc['opened_at'])}  updated {_when(inc['updated_at'])}  occurrences {inc['occurrences']}"
          + (f"  resolved {_when(inc['resolved_at'])}" if inc.get("resolved_at") else ""))
    ev = inc.get("evidence") or {}
    for r in ev.get("slices") or ([{"slice": inc["slice"], **ev["result"]}] if ev.get("result") else []):
        print(f"  {r.get('slice')}: {r.get('status')}: {r.get('sentence') or r.get('message')}")
    runs = inc.get("run_ids") or ev.get("run_ids") or []
    if runs:
        print(f"  runs: {', '.join(str(r) for r in runs)}")
    if inc.get("report") or ev.get("report"):
        print(f"  report: {inc.get('report') or ev.get('report')}")
    if inc.get("runbook_url"):
        print(f"  runbook: {inc['runbook_url']}")
    esc = inc.get("escalation")
    if esc and esc.get("policy"):
        nxt = f", next step at {_when(esc['next_at'])}" if esc.get("next_at") else ""
        print(f"  escalation: policy {esc['policy']} tier {esc['tier']} ({esc['status']}{nxt}); "
              f"notified {', '.join(esc['notified']) or 'nobody'}")
    _print_timeline(inc.get("events", []), inc.get("deliveries", []))


def _print_timeline(events: list[dict[str, Any]], deliveries: list[dict[str, Any]]) -> None:
    by_event: dict[Any, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_event.setdefault(d.get("event_id"), []).append(d)
    if events:
        print("  timeline:")
    for e in events:
        src, dst = e.get("from_state"), e.get("to_state")
        states = f"{src} -> {dst}" if src and dst and src != dst else (f"now {dst}" if dst else "")
        run = f", run {e['run_id']}" if e.get("run_id") else ""
        print(f"  - {_when(e['at'])} {e['action']} by {e['actor']}" + (f" ({states}{run})" if states or run else ""))
        note = (e.get("detail") or {}).get("note")
        if note:
            print(f"      note: {note}")
        for d in by_event.pop(e.get("id"), []):
            _print_delivery(d, "      ")
    for d in [d for ds in by_event.values() for d in ds]:    # deliveries of events not shown
        _print_delivery(d, "  ")


def _print_delivery(d: dict[str, Any], indent: str) -> None:
    error = f": {d['last_error']}" if d.get("last_error") else ""
    sent = f" at {_when(d['sent_at'])}" if d.get("sent_at") else ""
    print(f"{indent}> {d.get('event') or 'notification'} to {d['target']}: {d['status']}{sent} "
          f"(attempt{'s' if d['attempts'] != 1 else ''} {d['attempts']}){error}")


def _label(r: Any) -> str:
    return check_label(r.check, getattr(r, "candidate", None))


def print_tradeoff(table: dict[str, Any]) -> None:
    """The trade-off table of a run of several candidates (sentinel.checks.tradeoff)."""
    for line in tradeoff_lines(table):
        print(f"  {line}")


TRADEOFF_COLUMNS = ("candidate", "flips", "critical miss", "ECE change", "latency", "peak memory", "file size",
                    "energy", "safety")


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _bytes(v: Any) -> str:
    if v is None:
        return "—"
    return f"{v / 2**20:.1f} MiB" if v >= 2**20 else f"{v / 1024:.1f} KiB"


def tradeoff_cells(row: dict[str, Any]) -> list[str]:
    """One candidate's trade-off row in words, in TRADEOFF_COLUMNS order: shares in %, the latency
    ratio as ×, energy in J per 1,000 inferences or ``unavailable``, safety ``pass`` or the checks
    that failed."""
    miss = _pct(row.get("critical_miss_rate"))
    if row.get("critical_class") is not None:
        miss += f" ({row['critical_class']})"
    elif row.get("critical_miss_rate") is None:
        miss = "— (no critical class)"
    ece = row.get("calibration_change")
    ratio = row.get("latency_ratio")
    energy = row.get("energy") or {}
    joules = energy.get("joules_per_1000")
    watt = f"{joules:.3g} J/1000" if energy.get("status") == "measured" and joules is not None else "unavailable"
    failed = row.get("failed_checks") or []
    safety = "pass" if row.get("safety_pass") else ("FAIL: " + ", ".join(failed) if failed else "FAIL: nothing judged")
    return [str(row.get("candidate")), _pct(row.get("flip_rate")), miss,
            "—" if ece is None else f"{ece:+.4f}", "—" if ratio is None else f"×{ratio:.2f}",
            _bytes(row.get("peak_memory_bytes")), _bytes(row.get("model_bytes")), watt, safety]


def tradeoff_lines(table: dict[str, Any]) -> list[str]:
    """The trade-off table as aligned text lines, with the baseline's figures and, when energy
    was not measured, why."""
    rows = [list(TRADEOFF_COLUMNS)] + [tradeoff_cells(r) for r in table.get("candidates", [])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TRADEOFF_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    base = table.get("baseline") or {}
    lines.append(f"baseline: file size {_bytes(base.get('model_bytes'))}, peak memory "
                 f"{_bytes(base.get('peak_memory_bytes'))}; latency is candidate/baseline at batch 1; "
                 f"safety: {table.get('safety_checks', '')}")
    reason = (base.get("energy") or {}).get("reason")
    if reason:
        lines.append(f"energy unavailable: {reason}")
    return lines

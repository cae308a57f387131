"""Human-readable pieces of an incident event payload, shared by the notifiers that write for
people (Slack, PagerDuty, email, Alertmanager annotations)."""
from __future__ import annotations

from typing import Any, Mapping

def is_trigger(payload: Mapping[str, Any]) -> bool:
    """The event means "someone should look at this" (opened, reopened, escalated,
    unsilenced...): anything but acknowledged and resolved."""
    return payload.get("event") not in ("acknowledged", "resolved")


def what_happened(payload: Mapping[str, Any]) -> str:
    """``opened``, ``escalated to tier 2 (policy triage-oncall)``, ``acknowledged by alice``..."""
    event, actor = payload.get("event", "updated"), payload.get("actor")
    esc = payload.get("escalation") or {}
    if event == "escalated" and esc:
        repeat = f", repeat {esc['loop']}" if esc.get("loop") else ""
        return f"escalated to tier {esc.get('tier')} (policy {esc.get('policy')}{repeat})"
    if actor and event in ("acknowledged", "resolved"):
        return f"{event} by {actor}"
    return str(event)


def summary(payload: Mapping[str, Any], limit: int = 1024) -> str:
    inc = payload["incident"]
    return f"[{str(inc['severity']).upper()}] {inc['title']}"[:limit]


def evidence_lines(payload: Mapping[str, Any], limit: int = 10) -> list[str]:
    """One line per failing slice, in the words of the test that decided it (``sentence``, from
    :func:`sentinel.words.describe`; payloads written before it carry the check's message):
    ``class=malignant: missed malignant rate rose from 0.0% ... at or above the fail level of ...``."""
    inc = payload["incident"]
    rows = inc.get("slice_results") or [{"slice": inc["slice"], **(inc.get("evidence") or {})}]
    lines = [f"{r.get('slice')}: {r.get('sentence') or r.get('message') or r.get('status')}" for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more slices")
    return lines


def links(payload: Mapping[str, Any], base_url: str | None) -> list[tuple[str, str]]:
    """(text, href) pairs: the incident's console page and its latest run's report (under the
    notifier's ``base_url``, else the payload's own links when ``api.public_url`` made them
    absolute) and the runbook."""
    inc = payload["incident"]
    out = []
    base = base_url.rstrip("/") if base_url else None
    if base or str(inc.get("url") or "").startswith(("http://", "https://")):
        out.append((f"Incident #{inc['id']}", f"{base}/incidents/{inc['id']}" if base else inc["url"]))
        if inc.get("run_ids") and (base or inc.get("report")):
            run = inc["run_ids"][-1]
            out.append((f"Report (run {run})", f"{base}/runs/{run}/report" if base else inc["report"]))
    if inc.get("runbook_url"):
        out.append(("Runbook", inc["runbook_url"]))
    return out


def ack_hint(payload: Mapping[str, Any], base_url: str | None) -> str:
    iid = payload["incident"]["id"]
    hint = f"Acknowledge to stop escalation: `sentinel incidents ack {iid}`"
    if base_url:
        hint += f" or `POST {base_url.rstrip('/')}/api/v1/incidents/{iid}/ack`"
    return hint


def text_body(payload: Mapping[str, Any], base_url: str | None) -> str:
    """A plain-text rendering (email body, fallbacks)."""
    inc = payload["incident"]
    lines = [summary(payload), "", f"Incident #{inc['id']} {what_happened(payload)} at {payload.get('at')}.",
             f"State: {inc['state']}   Pair: {inc['pair']}   "
             + (f"Candidate: {inc['candidate']}   " if inc.get("candidate") else "") + f"Check: {inc['check']}   "
             f"Occurrences: {inc['occurrences']}", "", "Evidence:"]
    lines += [f"  - {line}" for line in evidence_lines(payload)]
    for text, href in links(payload, base_url):
        lines.append(f"{text}: {href}")
    if is_trigger(payload):
        lines += ["", ack_hint(payload, base_url)]
    return "\n".join(lines) + "\n"

"""What an incident says, built from the check results that opened it: its severity, title,
stored evidence, the labels silences and policies match on, and the notification payload."""
from __future__ import annotations

import datetime as dt
from typing import Any, Mapping, Sequence

from ..checks.base import CheckResult
from ..links import Links
from ..storage.repository import as_utc
from ..words import describe, subject

PAYLOAD_VERSION = 1
SYSTEM_ACTOR = "sentinel"          # the actor of events Sentinel causes itself (audit rows)
SEVERITY_RANK = {"warning": 1, "high": 2, "critical": 3}


def severity_of(result: CheckResult) -> str:
    """``critical`` for a failure concerning a safety-critical class, ``high`` for other failures,
    ``warning`` for warnings."""
    if result.status == "fail":
        return "critical" if result.critical else "high"
    return "warning"


def primary(failing: Sequence[CheckResult]) -> CheckResult:
    """The result an incident is titled by: the most severe, ``overall`` first among equals."""
    return max(failing, key=lambda r: (SEVERITY_RANK[severity_of(r)], r.slice == "overall"))


def worst_severity(failing: Sequence[CheckResult]) -> str:
    return max((severity_of(r) for r in failing), key=SEVERITY_RANK.__getitem__)


def evidence(primary: CheckResult, failing: Sequence[CheckResult], report_path: str | None) -> dict[str, Any]:
    """The incident's stored ``evidence``: the primary result, a summary per failing slice, and the
    run's report (the runs that counted are in the audit events, see ``storage.incidents``)."""
    def summary(result: CheckResult) -> dict[str, Any]:
        # to_row() makes numpy values and non-finite floats JSON-safe.
        row = result.to_row()
        threshold = result.fail if result.status == "fail" else result.warn
        return {"status": row["status"], "message": row["message"], "sentence": describe(row, with_where=None),
                "value": row["value"], "n": row["n"],
                "warn": row["warn"], "fail": row["fail"], "threshold": threshold,
                "critical": result.critical, "details": row["evidence"]}

    slices = [{"slice": r.slice, **{k: v for k, v in summary(r).items() if k != "details"}} for r in failing]
    out = {"result": summary(primary), "slices": slices, "report": report_path}
    if primary.candidate is not None:   # a pair with several candidates: which one this is about
        out["candidate"] = primary.candidate
    return out


def incident_candidate(incident: Mapping[str, Any]) -> str | None:
    """The candidate an incident is about (pairs with several), None for a single candidate."""
    return (incident.get("evidence") or {}).get("candidate")


def _title(pair: str, result: CheckResult, failing: Sequence[CheckResult] = ()) -> str:
    """``triage: decision_flips failed on class=malignant and 2 more slices: missed malignant rate
    rose from 0.0% (reference window) to 3.1% of 455 (+3.1 points), at or above the fail level of
    +2.0 points; significant (p_adj = 0.00014 ≤ 0.01)``: the words of the deciding test
    (:func:`sentinel.words.describe`), never the result's value beside another test's level."""
    verb = "failed" if result.status == "fail" else "warned"
    said = describe(result.to_row(), with_where=None)
    more = len(failing) - 1
    where = result.slice + (f" and {more} more slice{'s' if more > 1 else ''}" if more > 0 else "")
    title = f"{subject(pair, result.candidate)}: {result.check} {verb} on {where}"
    return f"{title}: {said}" if said else title


def labels(incident: Mapping[str, Any]) -> dict[str, Any]:
    """What silences and policies match on (an incident as ``load_incident`` reads it)."""
    return match_labels(incident["pair"], incident["check"], incident["severity"], incident["state"],
                        incident.get("slices") or [incident["slice"]], incident_candidate(incident))


def match_labels(pair: str, check: str, severity: str, state: str, slices: Sequence[str],
                 candidate: str | None) -> dict[str, Any]:
    """The labels of :data:`sentinel.incidents.matchers.LABELS`: ``candidate`` is the candidate's
    name in a pair with several, None (matched as ``""``) for a single-candidate pair's."""
    return {"pair": pair, "check": check, "severity": severity, "state": state, "slice": list(slices),
            "candidate": candidate}


def build_payload(event: str, incident: dict[str, Any], at: dt.datetime, *, actor: str | None,
                  escalation: dict[str, Any] | None = None, links: Links | None = None) -> dict[str, Any]:
    """The notification body (format version 1) for ``event`` on ``incident`` (as from ``get``).

    ``event`` is one of opened, reopened, escalated, unsilenced (all mean "this needs someone"),
    acknowledged, resolved. ``escalation`` (policy, 1-based tier, loop) is set when a policy
    chose the recipients. ``url`` and ``report`` are console links (``links``: under
    ``api.public_url``), never the daemon's file paths."""
    pages = (links or Links()).incident_fields(incident)
    payload = {
        "version": PAYLOAD_VERSION,
        "event": event,
        "at": iso(at),
        "incident": {
            "id": incident["id"],
            "fingerprint": incident["fingerprint"],
            "pair": incident["pair"],
            "check": incident["check"],
            "slice": incident["slice"],
            "slices": incident["slices"],
            "severity": incident["severity"],
            "state": incident["state"],
            "title": incident["title"],
            "opened_at": iso(incident["opened_at"]),
            "occurrences": incident["occurrences"],
            "run_ids": incident["run_ids"],
            "url": pages["url"],
            "report": pages["report"],
            "runbook_url": incident["runbook_url"],
            **({"candidate": incident_candidate(incident)} if incident_candidate(incident) else {}),
            "evidence": incident["evidence"].get("result", {}),
            "slice_results": incident["evidence"].get("slices", []),
        },
        "actor": actor,
    }
    if escalation:
        payload["escalation"] = escalation
    return payload


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat().replace("+00:00", "Z")

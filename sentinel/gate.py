"""The rollout gate: one verdict on one candidate file of one pair, for a rollout controller (Argo
Rollouts, Flagger: ``GET /api/v1/gate``, sentinel/api_gate.py) and for the ``kafka_guard`` action,
which both decide with :func:`judge`, so they cannot disagree about what counts as failing.

The verdict on (pair, candidate sha256), from the pair's stored runs whose record names that file
(``record.models.candidate.sha256``); running and abandoned runs are not judgements and are skipped:

1. No finished run of that file (among its newest ``LOOKBACK`` runs): **inconclusive**.
   An unresolved incident (open, acknowledged or silenced) that a run of that file opened or
   updated, and whose results :func:`judge` fails, makes it **fail** whatever the runs say after
   it: that is the incident the ``kafka_guard`` action keeps active until a person resolves it,
   so the gate and the guard hold the candidate back together (only when ``incidents`` is given).
2. The newest run of the file that did not end in error decides: any result of any check with
   status ``fail`` (any slice) makes the verdict **fail**. A failure is not undone by a later run
   that ended in error: an error cannot clear it.
3. Otherwise, when the file's newest run ended in error: **inconclusive** (it judged nothing; a
   candidate that breaks its runtime never passes).
4. Otherwise the required checks must have judged: every result of type ``decision_flips`` (or the
   checks named in ``require``) must be on its ``overall`` slice with status ``pass`` or ``warn``;
   one that says ``insufficient_data`` (the window is below its ``min_samples``) or ``error``, or
   none at all, makes it **inconclusive**, naming the check and its own message.
5. Otherwise **pass** (warnings pass: they are shown in ``checks``).

In a pair with several candidates (``candidates:``) one run judges them all: only the results of
the candidate with that sha256 (``record.models.by_sha256``) count, and only its incidents hold it.

``ok`` is ``verdict == "pass"``. A bottom-layer module: it reads the store through the duck-typed
``runs_of_candidate``/``get_run`` it is given and imports nothing above it.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import NotFoundError, SentinelError
from .verdict import result_type

VERDICTS = ("pass", "fail", "inconclusive")
#: the checks that must have judged before a pass, by type (they need no labels; see docs/deploy.md)
REQUIRED_TYPES = ("decision_flips",)
#: how many of the candidate file's newest runs are read (the newest judged one decides)
LOOKBACK = 50
NOT_JUDGEMENTS = ("running", "abandoned")
UNRESOLVED = ("open", "acknowledged", "silenced")     # sentinel.incidents.lifecycle.ACTIVE_STATES
OVERALL = "overall"     # the whole-window slice (sentinel.checks.data.OVERALL)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class GateError(SentinelError, ValueError):
    """A gate question that cannot be answered as asked (a malformed sha256...)."""


@dataclass
class Verdict:
    verdict: str
    reason: str
    n: int = 0                                   # samples the deciding run judged
    run: int | None = None                       # the deciding run
    runs: list[int] = field(default_factory=list)    # the file's finished runs, newest first
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    at: str | None = None                        # when the deciding run finished

    @property
    def ok(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self, pair: str | None = None, candidate: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "verdict": self.verdict, "n": self.n, "runs": self.runs,
                               "run": self.run, "checks": self.checks, "reason": self.reason, "at": self.at}
        if pair is not None:
            out = {**out, "pair": pair, "candidate": candidate}
        return out


def summarize(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per check: ``status`` (``fail`` when any slice failed, else its overall slice's status),
    the overall ``value`` and ``n``, its ``type``, and the message of the slice that set the status."""
    by_check: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        by_check.setdefault(str(r.get("check")), []).append(r)
    out = {}
    for name, rows in by_check.items():
        overall = next((r for r in rows if r.get("slice") == OVERALL), None)
        failed = next((r for r in rows if r.get("status") == "fail"), None)
        shown = failed or overall or rows[0]
        head = overall or rows[0]
        out[name] = {"status": shown.get("status"), "type": result_type(head), "value": head.get("value"),
                     "n": head.get("n"), "slice": shown.get("slice"), "message": shown.get("message"),
                     "overall": overall is not None}
    return out


def judge(results: Sequence[Mapping[str, Any]], *, required: Sequence[str] | None = REQUIRED_TYPES) -> Verdict:
    """The verdict of one set of stored result rows (rules 2, 4 and 5 of the module docstring).
    ``required``: check names or types that must have judged on their overall slice; ``()`` or
    None requires nothing (an incident's failing slices, for the guard)."""
    checks = summarize(results)
    failed = [(name, c) for name, c in checks.items() if c["status"] == "fail"]
    if failed:
        name, c = failed[0]
        more = f" (and {len(failed) - 1} more failing check{'s' if len(failed) > 2 else ''})" if len(failed) > 1 else ""
        return Verdict("fail", f"{name} failed on {c['slice']}: {c['message']}{more}", checks=checks)
    wanted = [(name, c) for name, c in checks.items() if name in (required or ()) or c["type"] in (required or ())]
    if required and not wanted:
        return Verdict("inconclusive", f"no result of {', '.join(required)} to judge", checks=checks)
    for name, c in wanted:
        if not c["overall"] or c["status"] not in ("pass", "warn"):
            return Verdict("inconclusive", f"{name} has not judged: {c['status']}: {c['message']}", checks=checks)
    warned = [name for name, c in checks.items() if c["status"] == "warn"]
    return Verdict("pass", "no check failed" + (f"; warnings: {', '.join(warned)}" if warned else ""), checks=checks)


def check_sha256(candidate: str) -> str:
    sha = str(candidate or "").strip().lower()
    if not _SHA256.match(sha):
        raise GateError(f"candidate must be the candidate file's sha256 (64 hex digits), got {str(candidate)[:80]!r}")
    return sha


def gate_verdict(store: Any, cfg: Any, pair: str, sha256: str, *, require: Sequence[str] | None = None,
                 configured: str | None = None, incidents: Any = None, lookback: int = LOOKBACK) -> Verdict:
    """The verdict on candidate file ``sha256`` of ``pair`` (see the module docstring). ``cfg`` (a
    Config, or None) names the pairs there are (NotFoundError otherwise); ``require`` overrides
    :data:`REQUIRED_TYPES`; ``configured`` is the sha256 of the candidate the pair is configured
    with now, named when the asked file has no run yet; ``incidents`` (the IncidentEngine, or
    anything with its ``list(state=, pair=)``) adds the unresolved incidents of the file's runs."""
    sha = check_sha256(sha256)
    if cfg is not None and pair not in cfg.pairs:
        raise NotFoundError("pair", pair)
    mine = [r for r in store.runs_of_candidate(pair, sha, limit=lookback) if r.get("status") not in NOT_JUDGEMENTS]
    ids = [int(r["id"]) for r in mine]
    if not mine:
        hint = f"; the pair is configured with candidate {configured[:12]}" if configured and configured != sha else ""
        return Verdict("inconclusive", f"no finished run of candidate {sha[:12]} of pair {pair!r} yet{hint}")
    latest = mine[0]
    judged = next((r for r in mine if r.get("status") != "error"), None)
    if judged is None:
        return Verdict("inconclusive", f"every run of this candidate ended in error; run {latest['id']}: "
                                       f"{latest.get('error') or 'no error recorded'}", run=int(latest["id"]), runs=ids)
    full = store.get_run(int(judged["id"])) or {"results": []}
    name = judged.get("candidate")     # in a pair with several candidates: this file's name
    rows = [r for r in full.get("results") or [] if r.get("candidate") == name]
    v = judge(rows, required=require or REQUIRED_TYPES)
    v.n, v.run, v.runs, v.at = int(judged.get("n_samples") or 0), int(judged["id"]), ids, _iso(judged.get("finished_at"))
    v.reason = f"run {judged['id']}: {v.reason}"
    if v.verdict != "fail" and latest is not judged:
        v.verdict = "inconclusive"
        v.reason = (f"run {latest['id']} of this candidate ended in error ({latest.get('error') or 'no error recorded'}); "
                    f"the last run that judged, {v.reason}")
    held = held_by_incident(incidents, pair, set(ids), name) if v.verdict != "fail" else None
    if held is not None:
        v.verdict, v.reason = "fail", f"{held}; {v.reason}"
    return v


def held_by_incident(incidents: Any, pair: str, run_ids: set[int], candidate: str | None = None) -> str | None:
    """Why an unresolved incident of one of ``run_ids`` holds the candidate back, or None.
    ``candidate``: in a pair with several, only that candidate's incidents count."""
    if incidents is None or not run_ids:
        return None
    for state in UNRESOLVED:
        for inc in incidents.list(state=state, pair=pair, limit=1000):
            if (inc.get("evidence") or {}).get("candidate") != candidate:
                continue
            mine = sorted(run_ids.intersection(inc.get("run_ids") or ()))
            if mine and incident_verdict({"incident": inc}).verdict == "fail":
                return (f"incident #{inc['id']} ({inc.get('check')}) is {state}: run {mine[-1]} of this candidate "
                        "failed it, and it holds until it is resolved")
    return None


def incident_verdict(payload: Mapping[str, Any]) -> Verdict:
    """The verdict on the results an incident event carries (its failing slices): what the
    ``kafka_guard`` action acts on. Nothing is required: the incident is not a whole run."""
    inc = payload.get("incident") or {}
    slices = inc.get("slice_results") or (inc.get("evidence") or {}).get("slices") or []   # payload or stored
    rows = [{"check": inc.get("check"), **s} for s in slices]
    if not rows and inc.get("evidence"):     # the primary result alone
        ev = inc["evidence"].get("result", inc["evidence"])
        rows = [{"check": inc.get("check"), "slice": inc.get("slice"), **ev}]
    return judge(rows, required=())


def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return None if value is None else str(value)

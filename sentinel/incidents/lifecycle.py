"""The incident lifecycle: check results counted into streaks per fingerprint, incidents opened,
reopened, updated and auto-resolved from them, and the audited state transitions people (and
silences) make. Every transition writes its ``incident_events`` row and, in the same transaction,
the outbox rows for the people it concerns."""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..checks.base import CheckResult
from ..errors import NotFoundError, StateError
from ..notifiers.outbox import enqueue
from ..storage.incidents import IncidentRecords, IncidentStore
from ..links import Links
from .escalation import Escalator
from .payload import (SEVERITY_RANK, SYSTEM_ACTOR, _title, build_payload, evidence, incident_candidate, iso,
                      match_labels, primary, worst_severity)
from .silences import matching_silence

GROUP = "*"                         # the slice part of a grouped (per-check) fingerprint

STATES = ("open", "acknowledged", "resolved", "silenced")
# States in which an incident absorbs new failures of its fingerprint instead of a new one being
# opened (a silenced problem must not open again either).
ACTIVE_STATES = ("open", "acknowledged", "silenced")
# action -> (states it may start from, state it leads to, event name). "silence" notifies nobody
# (an acknowledged incident pages nobody already, so it is left alone); "unsilence" restarts the
# escalation as if the incident had just opened.
TRANSITIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "ack": (("open",), "acknowledged", "acknowledged"),
    "resolve": (("open", "acknowledged", "silenced"), "resolved", "resolved"),
    "silence": (("open",), "silenced", "silenced"),
    "unsilence": (("silenced",), "open", "unsilenced"),
}


@dataclass(frozen=True)
class IncidentChange:
    """What ``process_run`` did for one fingerprint: ``action`` is ``opened``, ``reopened``,
    ``updated`` or ``resolved`` (auto-resolution after passing runs)."""
    incident_id: int
    event_id: int
    action: str
    fingerprint: str
    pair: str
    check: str
    slice: str
    severity: str
    state: str
    occurrences: int
    notified: tuple[str, ...] = ()     # targets an outbox row was written for
    candidate: str | None = None       # the candidate, in a pair with several


def fingerprint(pair: str, check: str, slice_: str = GROUP, candidate: str | None = None) -> str:
    """The identity of a problem: same pair, check and slice → same incident while it is active.
    Grouped incidents use the slice ``"*"``. In a pair with several candidates the candidate is
    part of it (two candidates failing one check are two incidents); a single candidate's
    fingerprint is unchanged."""
    who = "" if candidate is None else f"\x1f{candidate}"
    return hashlib.sha256(f"{pair}\x1f{check}\x1f{slice_}{who}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class LifecycleRules:
    """How results become incidents (see ``IncidentEngine`` for each)."""
    open_on: frozenset[str] = frozenset(("fail",))
    runbook_url: str | None = None
    runbooks: Mapping[str, str] | None = None
    open_after: int = 1
    resolve_after: int = 0
    reopen_window: dt.timedelta = dt.timedelta(0)
    group_slices: bool = True


@dataclass(frozen=True)
class _Run:
    """One run's failing results for one fingerprint, as the writers below need them."""
    pair: str
    run_id: int
    fp: str
    failing: list[CheckResult]
    report_path: str | None
    now: dt.datetime


class Lifecycle:
    """Opens, reopens, updates and resolves incidents; moves them between states."""

    def __init__(self, incidents: IncidentStore, escalator: Escalator, rules: LifecycleRules):
        self.incidents = incidents
        self.escalator = escalator
        self.rules = rules
        self.links = Links()     # console URLs in the payloads (IncidentEngine sets api.public_url's)

    # -- from check results --------------------------------------------------------------------
    def process_run(self, pair: str, run_id: int, results: Sequence[CheckResult], report_path: str | None,
                    now: dt.datetime) -> list[IncidentChange]:
        """See ``IncidentEngine.process_run``."""
        groups: dict[str, list[CheckResult]] = {}
        for r in results:
            groups.setdefault(fingerprint(pair, r.check, GROUP if self.rules.group_slices else r.slice, r.candidate), []).append(r)
        if not groups:
            return []
        changes: list[IncidentChange] = []
        with self.incidents.begin() as tx:
            tx.lock_fingerprints(sorted(groups))
            for fp in sorted(groups):
                change = self._apply(tx, pair, run_id, fp, groups[fp], report_path, now)
                if change is not None:
                    changes.append(change)
        return changes

    def _apply(self, tx: IncidentRecords, pair: str, run_id: int, fp: str, results: list[CheckResult],
               report_path: str | None, now: dt.datetime) -> IncidentChange | None:
        failing = [r for r in results if r.status in self.rules.open_on]
        # insufficient_data / error say nothing either way: they neither break nor extend a streak
        passing = not failing and all(r.status in ("pass", "warn") for r in results)
        verdict = "fail" if failing else ("pass" if passing else None)
        streak = self._count(tx, fp, pair, results[0].check, run_id, verdict, now)
        if streak is None:
            return None                                   # this run was counted already
        fails, passes = streak
        run = _Run(pair, run_id, fp, failing, report_path, now)
        if verdict == "fail":
            existing = tx.latest(fp, states=ACTIVE_STATES)
            if existing is not None:
                return self._update(tx, existing, run)
            if fails < self.rules.open_after:
                return None                               # not yet: could be a flap
            recent = None
            if self.rules.reopen_window:
                recent = tx.latest(fp, states=("resolved",), resolved_since=now - self.rules.reopen_window)
            return self._reopen(tx, recent, run) if recent is not None else self._open(tx, run)
        if verdict == "pass" and self.rules.resolve_after and passes >= self.rules.resolve_after:
            existing = tx.latest(fp, states=ACTIVE_STATES)
            if existing is not None:
                note = f"passed {passes} consecutive run(s)"
                event_id, targets = self.transition_in(tx, existing, "resolve", SYSTEM_ACTOR, note, now, run_id=run_id)
                return _change(load_incident(tx, existing["id"]), event_id, "resolved", targets)
        return None

    @staticmethod
    def _count(tx: IncidentRecords, fp: str, pair: str, check: str, run_id: int, verdict: str | None,
               now: dt.datetime) -> tuple[int, int] | None:
        """Extend the fingerprint's streak by this run; None if the run was already counted."""
        row = tx.streak(fp)
        if row is not None and row.last_run_id == run_id:
            return None
        fails, passes = (row.fails, row.passes) if row is not None else (0, 0)
        if verdict == "fail":
            fails, passes = fails + 1, 0
        elif verdict == "pass":
            fails, passes = 0, passes + 1
        tx.save_streak(fp, pair=pair, check=check, fails=fails, passes=passes, run_id=run_id, now=now,
                       exists=row is not None)
        return fails, passes

    def _open(self, tx: IncidentRecords, run: _Run) -> IncidentChange:
        first, severity, now = primary(run.failing), worst_severity(run.failing), run.now
        slices = [r.slice for r in run.failing]
        silence = matching_silence(tx, match_labels(run.pair, first.check, severity, "open", slices, first.candidate),
                                   now)
        state = "silenced" if silence else "open"
        runbooks = self.rules.runbooks or {}
        incident_id = tx.add_incident(
            fingerprint=run.fp, pair=run.pair, check=first.check, slice=first.slice, severity=severity, state=state,
            title=_title(run.pair, first, run.failing), opened_at=now, updated_at=now, resolved_at=None,
            first_run_id=run.run_id, last_run_id=run.run_id, occurrences=1,
            evidence=evidence(first, run.failing, run.report_path),
            runbook_url=runbooks.get(first.check, self.rules.runbook_url))
        detail: dict[str, Any] = {"status": first.status, "severity": severity, "message": first.message,
                                  "slices": slices}
        if silence:
            detail["silence_id"] = silence
        event_id = tx.add_event(incident_id, at=now, actor=SYSTEM_ACTOR, action="opened", from_state=None,
                                to_state=state, run_id=run.run_id, detail=detail)
        incident = load_incident(tx, incident_id)
        targets: tuple[str, ...] = ()
        if silence:
            self.escalator.hold(tx, incident_id, now)
        else:
            targets = self.escalator.start(tx, incident, event_id, "opened", now)
        return _change(incident, event_id, "opened", targets)

    def _reopen(self, tx: IncidentRecords, old: dict[str, Any], run: _Run) -> IncidentChange | None:
        first, severity, now = primary(run.failing), worst_severity(run.failing), run.now
        silence = matching_silence(tx, match_labels(old["pair"], old["check"], severity, "open",
                                                    [r.slice for r in run.failing], first.candidate), now)
        state = "silenced" if silence else "open"
        if not tx.update_incident(old["id"], states=("resolved",), occurrence=True, values=dict(
                state=state, resolved_at=None, updated_at=now, severity=severity, slice=first.slice,
                last_run_id=run.run_id, title=_title(old["pair"], first, run.failing),
                evidence=evidence(first, run.failing, run.report_path))):
            return None
        event_id = tx.add_event(old["id"], at=now, actor=SYSTEM_ACTOR, action="reopened", from_state="resolved",
                                to_state=state, run_id=run.run_id, detail={
                                    "status": first.status, "message": first.message,
                                    "resolved_at": iso(old["resolved_at"]),
                                    **({"silence_id": silence} if silence else {})})
        incident = load_incident(tx, old["id"])
        targets: tuple[str, ...] = ()
        if not silence:
            targets = self.escalator.start(tx, incident, event_id, "reopened", now)
        return _change(incident, event_id, "reopened", targets)

    def _update(self, tx: IncidentRecords, old: dict[str, Any], run: _Run) -> IncidentChange | None:
        if run.run_id in old["run_ids"]:
            return None
        first, severity, now = primary(run.failing), worst_severity(run.failing), run.now
        if SEVERITY_RANK.get(old["severity"], 0) >= SEVERITY_RANK[severity]:
            severity = old["severity"]  # raised when worse, never lowered by a milder repeat
        # Conditional on the state still being active: an ack/resolve committed since we read the
        # row must not be overwritten (a resolved incident then gets no more updates; the failure
        # opens a new one below).
        if not tx.update_incident(old["id"], states=ACTIVE_STATES, occurrence=True, values=dict(
                last_run_id=run.run_id, updated_at=now, severity=severity, slice=first.slice,
                evidence=evidence(first, run.failing, run.report_path))):
            return self._open(tx, run)
        detail: dict[str, Any] = {"status": first.status, "message": first.message,
                                  "occurrences": old["occurrences"] + 1, "slices": [r.slice for r in run.failing]}
        if severity != old["severity"]:
            detail["severity"] = {"from": old["severity"], "to": severity}
        event_id = tx.add_event(old["id"], at=now, actor=SYSTEM_ACTOR, action="updated", from_state=old["state"],
                                to_state=old["state"], run_id=run.run_id, detail=detail)
        # No outbox rows: repeats are visible in the incident, not pushed to people.
        return _change(load_incident(tx, old["id"]), event_id, "updated", ())

    # -- transitions ---------------------------------------------------------------------------
    def transition(self, action: str, incident_id: int, actor: str, note: str | None, now: dt.datetime
                   ) -> dict[str, Any]:
        """Move one incident by ``action`` in its own transaction; returns it. Raises
        NotFoundError, StateError, or ValueError without an actor."""
        if not actor:
            raise ValueError("an actor is required: every transition is audited")
        with self.incidents.begin() as tx:
            self.transition_in(tx, load_incident(tx, incident_id), action, actor, note, now)
            return load_incident(tx, incident_id)

    def transition_in(self, tx: IncidentRecords, incident: dict[str, Any], action: str, actor: str,
                      note: str | None, now: dt.datetime, *, run_id: int | None = None,
                      detail: dict[str, Any] | None = None) -> tuple[int, tuple[str, ...]]:
        """Move ``incident`` by ``action`` inside the caller's transaction; returns (event id, targets told)."""
        allowed_from, to_state, event = TRANSITIONS[action]
        state = incident["state"]
        if state not in allowed_from:
            raise _state_error(action, incident["id"], state, to_state)
        values: dict[str, Any] = {"state": to_state, "updated_at": now}
        if to_state == "resolved":
            values["resolved_at"] = now
        # Compare-and-set on the state we checked: of two concurrent transitions only one
        # wins; the other sees no update and reports the state it lost to.
        if not tx.update_incident(incident["id"], states=(state,), values=values):
            raise _state_error(action, incident["id"], tx.state_of(incident["id"]), to_state)
        event_id = tx.add_event(incident["id"], at=now, actor=actor, action=event, from_state=state,
                                to_state=to_state, run_id=run_id,
                                detail={**({"note": note} if note else {}), **(detail or {})})
        moved = load_incident(tx, incident["id"])
        if action == "unsilence":
            return event_id, self.escalator.start(tx, moved, event_id, event, now)
        notified = self.escalator.stop(tx, incident["id"], now)
        if action == "silence":
            return event_id, ()
        enqueue(tx.conn, incident_id=incident["id"], event_id=event_id, targets=notified,
                payload=build_payload(event, moved, now, actor=actor, links=self.links), now=now)
        return event_id, notified


def load_incident(tx: IncidentRecords, incident_id: int) -> dict[str, Any]:
    """The incident, or NotFoundError."""
    incident = tx.incident(incident_id)
    if incident is None:
        raise NotFoundError("incident", incident_id)
    return incident


def _change(incident: dict[str, Any], event_id: int, action: str, targets: Sequence[str]) -> IncidentChange:
    return IncidentChange(incident_id=incident["id"], event_id=event_id, action=action,
                          fingerprint=incident["fingerprint"], pair=incident["pair"], check=incident["check"],
                          slice=incident["slice"], severity=incident["severity"], state=incident["state"],
                          occurrences=incident["occurrences"], notified=tuple(targets),
                          candidate=incident_candidate(incident))


def _state_error(action: str, incident_id: int, state: str, to_state: str) -> StateError:
    if state == to_state:
        return StateError(f"incident {incident_id} is already {state}")
    verb = {"ack": "acknowledge", "resolve": "resolve", "silence": "silence", "unsilence": "unsilence"}[action]
    return StateError(f"cannot {verb} incident {incident_id}: it is {state}")

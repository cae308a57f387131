"""The incident engine: turns failing check results into incidents, and audits every transition.

An incident is keyed by a fingerprint of (model pair, check, slice). While an incident with that
fingerprint is active, further failures only update it (occurrences, latest evidence, run ids),
and do not notify: a check failing on every run must not page someone every run. Opening,
acknowledging and resolving each write an ``incident_events`` row and, in the same transaction,
one outbox row per notification target (see ``sentinel.notifiers.outbox``).
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sqlalchemy import Connection, and_, func, insert, select, update

from ..checks.base import CheckResult
from ..errors import NotFoundError, StateError
from ..notifiers.outbox import enqueue, row_dict
from ..storage import tables as t
from ..storage.repository import Store, as_utc, utcnow

PAYLOAD_VERSION = 1
SYSTEM_ACTOR = "sentinel"          # the actor of events Sentinel causes itself (audit rows)
MAX_RUN_IDS = 50                    # run ids kept in an incident's evidence (most recent)

STATES = ("open", "acknowledged", "resolved", "silenced")
# States in which an incident absorbs new failures of its fingerprint instead of a new one being
# opened. ("silenced" has no transition into it yet; a silenced problem must not re-open either.)
ACTIVE_STATES = ("open", "acknowledged", "silenced")
# action -> (states it may start from, state it leads to, outbox event name)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "ack": (("open",), "acknowledged", "acknowledged"),
    "resolve": (("open", "acknowledged", "silenced"), "resolved", "resolved"),
}
SEVERITY_RANK = {"warning": 1, "high": 2, "critical": 3}


@dataclass(frozen=True)
class IncidentChange:
    """What ``process_run`` did for one fingerprint: ``action`` is ``opened`` or ``updated``."""
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


def fingerprint(pair: str, check: str, slice_: str) -> str:
    """The identity of a problem: same pair, check and slice → same incident while it is active."""
    return hashlib.sha256(f"{pair}\x1f{check}\x1f{slice_}".encode()).hexdigest()[:32]


def severity_of(result: CheckResult) -> str:
    if result.status == "fail":
        return "critical" if result.critical else "high"
    return "warning"


class IncidentEngine:
    """Opens, updates, acknowledges and resolves incidents in the store.

    Args:
        store: the Sentinel store.
        targets: notifier target names every opened/acknowledged/resolved event is owed to.
        open_on: result statuses that open (or update) an incident; ``("fail",)`` by default,
            ``("warn", "fail")`` to be told earlier.
        runbook_url: put on every new incident and its notifications.
        clock: returns the current UTC time.
    """

    def __init__(self, store: Store, *, targets: Sequence[str], open_on: Sequence[str] = ("fail",),
                 runbook_url: str | None = None, clock: Callable[[], dt.datetime] = utcnow):
        self.store = store
        self.targets = tuple(dict.fromkeys(targets))
        self.open_on = frozenset(open_on)
        self.runbook_url = runbook_url
        self._clock = clock

    def _now(self) -> dt.datetime:
        return as_utc(self._clock())

    # -- from check results --------------------------------------------------------------------
    def process_run(self, pair: str, run_id: int, results: Sequence[CheckResult],
                    report_path: str | None = None) -> list[IncidentChange]:
        """Open or update incidents for ``run_id``'s results whose status is in ``open_on``.

        One transaction for the whole run: either every incident change and its notifications are
        recorded or none is. Processing the same run twice is a no-op for incidents that already
        list it (a retried run hand-off does not double-count).
        """
        chosen: dict[str, CheckResult] = {}
        for r in results:
            if r.status not in self.open_on:
                continue
            fp = fingerprint(pair, r.check, r.slice)
            # One result per fingerprint per run: keep the most severe, the first among equals.
            if fp not in chosen or SEVERITY_RANK[severity_of(r)] > SEVERITY_RANK[severity_of(chosen[fp])]:
                chosen[fp] = r
        if not chosen:
            return []
        changes: list[IncidentChange] = []
        now = self._now()
        with self.store.engine.begin() as conn:
            self._serialize(conn, sorted(chosen))
            for fp, result in chosen.items():
                change = self._apply(conn, pair, run_id, fp, result, report_path, now)
                if change is not None:
                    changes.append(change)
        return changes

    def _serialize(self, conn: Connection, fingerprints: Sequence[str]) -> None:
        # "Look for an active incident, else insert one" must not interleave with another
        # process doing the same for the same fingerprint, or the problem opens twice.
        # PostgreSQL: a transaction-scoped advisory lock per fingerprint (taken in sorted order,
        # so two runs never deadlock). SQLite: a no-op UPDATE makes the driver BEGIN and take the
        # database write lock now, before the reads, instead of at the first INSERT.
        dialect = conn.dialect.name
        if dialect == "postgresql":
            for fp in fingerprints:
                key = int.from_bytes(bytes.fromhex(fp[:16]), "big", signed=True)
                conn.execute(select(func.pg_advisory_xact_lock(key)))
        elif dialect == "sqlite":
            conn.execute(update(t.incidents).where(t.incidents.c.id == -1).values(id=t.incidents.c.id))

    def _find_active(self, conn: Connection, fp: str, now: dt.datetime) -> Any | None:
        """The incident a new failure of ``fp`` belongs to, or None to open a new one.

        Today: the newest incident with that fingerprint in an active state. (A reopen window,
        i.e. also matching an incident resolved less than N minutes ago, goes here.)
        """
        return conn.execute(select(t.incidents).where(and_(
            t.incidents.c.fingerprint == fp, t.incidents.c.state.in_(ACTIVE_STATES)))
            .order_by(t.incidents.c.id.desc()).limit(1)).first()

    def _apply(self, conn: Connection, pair: str, run_id: int, fp: str, result: CheckResult,
               report_path: str | None, now: dt.datetime) -> IncidentChange | None:
        existing = self._find_active(conn, fp, now)
        if existing is not None:
            return self._update(conn, existing, run_id, result, report_path, now)
        return self._open(conn, pair, run_id, fp, result, report_path, now)

    def _open(self, conn: Connection, pair: str, run_id: int, fp: str, result: CheckResult,
              report_path: str | None, now: dt.datetime) -> IncidentChange:
        severity = severity_of(result)
        evidence = _evidence(result, report_path, [run_id])
        incident_id = conn.execute(insert(t.incidents).values(
            fingerprint=fp, pair=pair, check=result.check, slice=result.slice, severity=severity, state="open",
            title=_title(pair, result), opened_at=now, updated_at=now, resolved_at=None, first_run_id=run_id,
            last_run_id=run_id, occurrences=1, evidence=evidence, runbook_url=self.runbook_url,
        )).inserted_primary_key[0]
        event_id = self._event(conn, incident_id, now, SYSTEM_ACTOR, "opened", None, "open", run_id,
                               {"status": result.status, "severity": severity, "message": result.message})
        incident = self._load(conn, incident_id)
        enqueue(conn, incident_id=incident_id, event_id=event_id, targets=self.targets,
                payload=build_payload("opened", incident, now, actor=None), now=now)
        return _change(incident, event_id, "opened", self.targets)

    def _update(self, conn: Connection, row: Any, run_id: int, result: CheckResult, report_path: str | None,
                now: dt.datetime) -> IncidentChange | None:
        run_ids = list((row.evidence or {}).get("run_ids") or [])
        if run_id in run_ids:
            return None
        run_ids = (run_ids + [run_id])[-MAX_RUN_IDS:]
        severity = severity_of(result)
        if SEVERITY_RANK.get(row.severity, 0) >= SEVERITY_RANK[severity]:
            severity = row.severity  # raised when worse, never lowered by a milder repeat
        # Conditional on the state still being active: an ack/resolve committed since we read the
        # row must not be overwritten (a resolved incident then gets no more updates; the failure
        # opens a new one below).
        res = conn.execute(update(t.incidents).where(and_(
            t.incidents.c.id == row.id, t.incidents.c.state.in_(ACTIVE_STATES))).values(
            occurrences=t.incidents.c.occurrences + 1, last_run_id=run_id, updated_at=now, severity=severity,
            evidence=_evidence(result, report_path, run_ids)))
        if res.rowcount != 1:
            return self._open(conn, row.pair, run_id, row.fingerprint, result, report_path, now)
        detail: dict[str, Any] = {"status": result.status, "message": result.message,
                                  "occurrences": row.occurrences + 1}
        if severity != row.severity:
            detail["severity"] = {"from": row.severity, "to": severity}
        event_id = self._event(conn, row.id, now, SYSTEM_ACTOR, "updated", row.state, row.state, run_id, detail)
        # No outbox rows: repeats are visible in the incident, not pushed to people.
        return _change(self._load(conn, row.id), event_id, "updated", ())

    # -- by people -----------------------------------------------------------------------------
    def ack(self, incident_id: int, actor: str, note: str | None = None) -> dict[str, Any]:
        """``open → acknowledged``; returns the incident. Raises StateError from any other state."""
        return self._transition("ack", incident_id, actor, note)

    def resolve(self, incident_id: int, actor: str, note: str | None = None) -> dict[str, Any]:
        """``open | acknowledged → resolved``; returns the incident. Raises StateError if resolved."""
        return self._transition("resolve", incident_id, actor, note)

    def _transition(self, action: str, incident_id: int, actor: str, note: str | None) -> dict[str, Any]:
        allowed_from, to_state, event = TRANSITIONS[action]
        if not actor:
            raise ValueError("an actor is required: every transition is audited")
        now = self._now()
        with self.store.engine.begin() as conn:
            row = conn.execute(select(t.incidents).where(t.incidents.c.id == incident_id)).first()
            if row is None:
                raise NotFoundError("incident", incident_id)
            if row.state not in allowed_from:
                raise _state_error(action, incident_id, row.state, to_state)
            values: dict[str, Any] = {"state": to_state, "updated_at": now}
            if to_state == "resolved":
                values["resolved_at"] = now
            # Compare-and-set on the state we checked: of two concurrent transitions only one
            # wins; the other sees rowcount 0 and reports the state it lost to.
            res = conn.execute(update(t.incidents).where(and_(
                t.incidents.c.id == incident_id, t.incidents.c.state == row.state)).values(**values))
            if res.rowcount != 1:
                current = conn.execute(select(t.incidents.c.state).where(t.incidents.c.id == incident_id)).scalar_one()
                raise _state_error(action, incident_id, current, to_state)
            event_id = self._event(conn, incident_id, now, actor, event, row.state, to_state, None,
                                   {"note": note} if note else {})
            incident = self._load(conn, incident_id)
            enqueue(conn, incident_id=incident_id, event_id=event_id, targets=self.targets,
                    payload=build_payload(event, incident, now, actor=actor), now=now)
        return incident

    # -- reads ---------------------------------------------------------------------------------
    def list(self, state: str | None = None, pair: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Incidents, most recently updated first, optionally filtered by state and pair."""
        if state is not None and state not in STATES:
            raise ValueError(f"unknown incident state {state!r}; states are: {', '.join(STATES)}")
        q = select(t.incidents).order_by(t.incidents.c.updated_at.desc(), t.incidents.c.id.desc()).limit(limit)
        if state is not None:
            q = q.where(t.incidents.c.state == state)
        if pair is not None:
            q = q.where(t.incidents.c.pair == pair)
        with self.store.engine.connect() as conn:
            return [_incident(r) for r in conn.execute(q)]

    def get(self, incident_id: int) -> dict[str, Any]:
        """One incident with its ``events`` (oldest first) and outbox ``deliveries``."""
        with self.store.engine.connect() as conn:
            incident = self._load(conn, incident_id)
            incident["events"] = [_event_dict(r) for r in conn.execute(
                select(t.incident_events).where(t.incident_events.c.incident_id == incident_id)
                .order_by(t.incident_events.c.id))]
            deliveries = []
            for r in conn.execute(select(t.outbox).where(t.outbox.c.incident_id == incident_id).order_by(t.outbox.c.id)):
                d = row_dict(r)
                payload = d.pop("payload") or {}
                d["event"] = payload.get("event")
                deliveries.append(d)
            incident["deliveries"] = deliveries
        return incident

    def open_counts(self) -> dict[tuple[str, str], int]:
        """Active incidents by (pair, severity): the ``sentinel_incidents_open`` gauge."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(t.incidents.c.pair, t.incidents.c.severity, func.count())
                                .where(t.incidents.c.state.in_(("open", "acknowledged")))
                                .group_by(t.incidents.c.pair, t.incidents.c.severity))
            return {(p, s): n for p, s, n in rows}

    # -- helpers -------------------------------------------------------------------------------
    def _load(self, conn: Connection, incident_id: int) -> dict[str, Any]:
        row = conn.execute(select(t.incidents).where(t.incidents.c.id == incident_id)).first()
        if row is None:
            raise NotFoundError("incident", incident_id)
        return _incident(row)

    @staticmethod
    def _event(conn: Connection, incident_id: int, at: dt.datetime, actor: str, action: str, from_state: str | None,
               to_state: str | None, run_id: int | None, detail: dict[str, Any]) -> int:
        return conn.execute(insert(t.incident_events).values(
            incident_id=incident_id, at=at, actor=actor, action=action, from_state=from_state,
            to_state=to_state, run_id=run_id, detail=detail)).inserted_primary_key[0]


def build_payload(event: str, incident: dict[str, Any], at: dt.datetime, *, actor: str | None) -> dict[str, Any]:
    """The notification body (format version 1) for ``event`` on ``incident`` (as from ``get``)."""
    return {
        "version": PAYLOAD_VERSION,
        "event": event,
        "at": _iso(at),
        "incident": {
            "id": incident["id"],
            "fingerprint": incident["fingerprint"],
            "pair": incident["pair"],
            "check": incident["check"],
            "slice": incident["slice"],
            "severity": incident["severity"],
            "state": incident["state"],
            "title": incident["title"],
            "opened_at": _iso(incident["opened_at"]),
            "occurrences": incident["occurrences"],
            "run_ids": incident["run_ids"],
            "report": incident["report"],
            "runbook_url": incident["runbook_url"],
            "evidence": incident["evidence"].get("result", {}),
        },
        "actor": actor,
    }


# ---------------------------------------------------------------------------------------------


def _evidence(result: CheckResult, report_path: str | None, run_ids: list[int]) -> dict[str, Any]:
    # to_row() makes numpy values and non-finite floats JSON-safe.
    row = result.to_row()
    threshold = result.fail if result.status == "fail" else result.warn
    return {
        "result": {"status": row["status"], "message": row["message"], "value": row["value"], "n": row["n"],
                   "warn": row["warn"], "fail": row["fail"], "threshold": threshold,
                   "critical": result.critical, "details": row["evidence"]},
        "report": report_path,
        "run_ids": run_ids,
    }


def _title(pair: str, result: CheckResult) -> str:
    verb = "failed" if result.status == "fail" else "warned"
    threshold = result.fail if result.status == "fail" else result.warn
    # Check messages read "<what> = <value> (...)"; reuse <what> so the title names the measure.
    what = result.message.partition(" = ")[0].strip() if " = " in result.message else ""
    if result.value is not None and threshold is not None:
        measure = f"{what} {result.value:.3g} >= {threshold:g}".strip()
    else:
        measure = result.message
    title = f"{pair}: {result.check} {verb} on {result.slice}"
    return f"{title} ({measure})" if measure else title


def _incident(row: Any) -> dict[str, Any]:
    d = dict(row._mapping)
    for k in ("opened_at", "updated_at", "resolved_at"):
        d[k] = as_utc(d[k])
    evidence = d.get("evidence") or {}
    d["run_ids"] = list(evidence.get("run_ids") or [])
    d["report"] = evidence.get("report")
    return d


def _event_dict(row: Any) -> dict[str, Any]:
    d = dict(row._mapping)
    d["at"] = as_utc(d["at"])
    return d


def _change(incident: dict[str, Any], event_id: int, action: str, targets: Sequence[str]) -> IncidentChange:
    return IncidentChange(incident_id=incident["id"], event_id=event_id, action=action,
                          fingerprint=incident["fingerprint"], pair=incident["pair"], check=incident["check"],
                          slice=incident["slice"], severity=incident["severity"], state=incident["state"],
                          occurrences=incident["occurrences"], notified=tuple(targets))


def _state_error(action: str, incident_id: int, state: str, to_state: str) -> StateError:
    if state == to_state:
        return StateError(f"incident {incident_id} is already {state}")
    verb = {"ack": "acknowledge", "resolve": "resolve"}[action]
    return StateError(f"cannot {verb} incident {incident_id}: it is {state}")


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat().replace("+00:00", "Z")

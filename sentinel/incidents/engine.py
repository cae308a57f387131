"""The incident engine: turns check results into incidents, escalates them, and audits every
transition.

An incident is keyed by a fingerprint of (model pair, check, slice); with ``group_slices`` (the
default) all slices of one check share one fingerprint and the incident lists its failing slices.
While an incident with that fingerprint is active, further failures only update it (occurrences,
latest evidence, run ids) and do not notify: a check failing on every run must not page someone
every run. Flapping control: an incident opens after ``open_after`` consecutive failing runs and
resolves itself after ``resolve_after`` consecutive passing runs; a failure within
``reopen_window`` seconds of resolution reopens the old incident instead of opening a new one.

Every transition writes an ``incident_events`` row and, in the same transaction, the outbox rows
for the people it concerns (see ``sentinel.notifiers.outbox``): an opening goes to the first tier
of the matching escalation policy (or every target when none matches); ``tick()`` moves
unacknowledged incidents up the tiers on the timers stored in ``escalations``; acknowledgement and
resolution go to everyone notified so far. Silenced incidents notify nobody.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from sqlalchemy import Connection, and_, func, insert, select, update

from ..checks.base import CheckResult
from ..verdict import sentence
from ..errors import NotFoundError, StateError
from ..notifiers.outbox import enqueue, row_dict
from ..storage import tables as t
from ..storage.repository import Store, as_utc, utcnow
from .escalation import EscalationPolicy, policy_for
from .matchers import Matcher, matcher_from_dict, matches_all

PAYLOAD_VERSION = 1
SYSTEM_ACTOR = "sentinel"          # the actor of events Sentinel causes itself (audit rows)
MAX_RUN_IDS = 50                    # run ids kept in an incident's evidence (most recent)
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
SEVERITY_RANK = {"warning": 1, "high": 2, "critical": 3}


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


def fingerprint(pair: str, check: str, slice_: str = GROUP) -> str:
    """The identity of a problem: same pair, check and slice → same incident while it is active.
    Grouped incidents use the slice ``"*"``."""
    return hashlib.sha256(f"{pair}\x1f{check}\x1f{slice_}".encode()).hexdigest()[:32]


def severity_of(result: CheckResult) -> str:
    """``critical`` for a failure concerning a safety-critical class, ``high`` for other failures,
    ``warning`` for warnings."""
    if result.status == "fail":
        return "critical" if result.critical else "high"
    return "warning"


class IncidentEngine:
    """Opens, updates, escalates, silences, acknowledges and resolves incidents in the store.

    Args:
        store: the Sentinel store.
        targets: every notifier target name; incidents no policy matches notify all of them.
        open_on: result statuses that count as failing; ``("fail",)`` by default, ``("warn",
            "fail")`` to be told earlier.
        runbook_url, runbooks: the runbook link on new incidents (``runbooks[check]`` wins).
        policies: escalation policies, first match wins (see ``escalation.py``).
        open_after: consecutive failing runs before an incident opens (flapping control).
        resolve_after: consecutive passing runs that resolve an incident; 0 = only people resolve.
        reopen_window: seconds after resolution during which a new failure reopens the incident.
        group_slices: one incident per (pair, check) listing its slices, rather than per slice.
        clock: returns the current UTC time.
    """

    def __init__(self, store: Store, *, targets: Sequence[str], open_on: Sequence[str] = ("fail",),
                 runbook_url: str | None = None, runbooks: Mapping[str, str] | None = None,
                 policies: Sequence[EscalationPolicy] = (), open_after: int = 1, resolve_after: int = 0,
                 reopen_window: float = 0.0, group_slices: bool = True,
                 clock: Callable[[], dt.datetime] = utcnow):
        self.store = store
        self.targets = tuple(dict.fromkeys(targets))
        self.open_on = frozenset(open_on)
        self.runbook_url = runbook_url
        self.runbooks = dict(runbooks or {})
        self.policies = list(policies)
        self.open_after = max(1, int(open_after))
        self.resolve_after = max(0, int(resolve_after))
        self.reopen_window = dt.timedelta(seconds=float(reopen_window))
        self.group_slices = group_slices
        self._clock = clock

    @classmethod
    def from_config(cls, cfg: Any, store: Store, *, policies: Sequence[EscalationPolicy] | None = None,
                    clock: Callable[[], dt.datetime] = utcnow) -> "IncidentEngine":
        """The engine a ``Config`` describes: its notifiers, ``incidents:`` section and escalation
        policy files (loaded unless given, checked against the notifier names; raises ConfigError)."""
        from .escalation import load_policies
        from ..durations import parse_duration

        ic = cfg.incidents
        if policies is None:
            policies = load_policies(cfg.escalation, base_dir=cfg.base_dir, targets=cfg.notifiers, source=cfg.source)
        return cls(store, targets=sorted(cfg.notifiers), open_on=ic.open_on, runbook_url=ic.runbook_url,
                   runbooks=ic.runbooks, policies=policies, open_after=ic.open_after,
                   resolve_after=ic.resolve_after, reopen_window=parse_duration(ic.reopen_window),
                   group_slices=ic.group_slices, clock=clock)

    def _now(self) -> dt.datetime:
        return as_utc(self._clock())

    # -- from check results --------------------------------------------------------------------
    def process_run(self, pair: str, run_id: int, results: Sequence[CheckResult],
                    report_path: str | None = None) -> list[IncidentChange]:
        """Count ``run_id``'s results towards each fingerprint's failing/passing streak, and open,
        reopen, update or auto-resolve incidents accordingly. Pass *all* results (passes too).

        One transaction for the whole run: either every incident change and its notifications are
        recorded or none is. Processing the same run twice is a no-op.
        """
        groups: dict[str, list[CheckResult]] = {}
        for r in results:
            groups.setdefault(fingerprint(pair, r.check, GROUP if self.group_slices else r.slice), []).append(r)
        if not groups:
            return []
        changes: list[IncidentChange] = []
        now = self._now()
        with self.store.engine.begin() as conn:
            self._serialize(conn, sorted(groups))
            for fp in sorted(groups):
                change = self._apply(conn, pair, run_id, fp, groups[fp], report_path, now)
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

    def _apply(self, conn: Connection, pair: str, run_id: int, fp: str, results: list[CheckResult],
               report_path: str | None, now: dt.datetime) -> IncidentChange | None:
        failing = [r for r in results if r.status in self.open_on]
        # insufficient_data / error say nothing either way: they neither break nor extend a streak
        passing = not failing and all(r.status in ("pass", "warn") for r in results)
        verdict = "fail" if failing else ("pass" if passing else None)
        streak = self._count(conn, fp, pair, results[0].check, run_id, verdict, now)
        if streak is None:
            return None                                   # this run was counted already
        fails, passes = streak
        if verdict == "fail":
            existing = self._find_active(conn, fp)
            if existing is not None:
                return self._update(conn, existing, run_id, failing, report_path, now)
            if fails < self.open_after:
                return None                               # not yet: could be a flap
            recent = self._find_recent(conn, fp, now)
            if recent is not None:
                return self._reopen(conn, recent, run_id, failing, report_path, now)
            return self._open(conn, pair, run_id, fp, failing, report_path, now)
        if verdict == "pass" and self.resolve_after and passes >= self.resolve_after:
            existing = self._find_active(conn, fp)
            if existing is not None:
                note = f"passed {passes} consecutive run(s)"
                event_id, targets = self._transition_in(conn, existing, "resolve", SYSTEM_ACTOR, note, now,
                                                        run_id=run_id)
                return _change(self._load(conn, existing.id), event_id, "resolved", targets)
        return None

    def _count(self, conn: Connection, fp: str, pair: str, check: str, run_id: int, verdict: str | None,
               now: dt.datetime) -> tuple[int, int] | None:
        """Extend the fingerprint's streak by this run; None if the run was already counted."""
        row = conn.execute(select(t.incident_streaks).where(t.incident_streaks.c.fingerprint == fp)).first()
        if row is not None and row.last_run_id == run_id:
            return None
        fails, passes = (row.fails, row.passes) if row is not None else (0, 0)
        if verdict == "fail":
            fails, passes = fails + 1, 0
        elif verdict == "pass":
            fails, passes = 0, passes + 1
        values = dict(fails=fails, passes=passes, last_run_id=run_id, updated_at=now)
        if row is None:
            conn.execute(insert(t.incident_streaks).values(fingerprint=fp, pair=pair, check=check, **values))
        else:
            conn.execute(update(t.incident_streaks).where(t.incident_streaks.c.fingerprint == fp).values(**values))
        return fails, passes

    def _find_active(self, conn: Connection, fp: str) -> Any | None:
        """The active incident a new failure of ``fp`` belongs to, if any."""
        return conn.execute(select(t.incidents).where(and_(
            t.incidents.c.fingerprint == fp, t.incidents.c.state.in_(ACTIVE_STATES)))
            .order_by(t.incidents.c.id.desc()).limit(1)).first()

    def _find_recent(self, conn: Connection, fp: str, now: dt.datetime) -> Any | None:
        """The newest incident of ``fp`` resolved within the reopen window, if any."""
        if not self.reopen_window:
            return None
        return conn.execute(select(t.incidents).where(and_(
            t.incidents.c.fingerprint == fp, t.incidents.c.state == "resolved",
            t.incidents.c.resolved_at >= now - self.reopen_window))
            .order_by(t.incidents.c.id.desc()).limit(1)).first()

    def _open(self, conn: Connection, pair: str, run_id: int, fp: str, failing: list[CheckResult],
              report_path: str | None, now: dt.datetime) -> IncidentChange:
        primary = _primary(failing)
        severity = _worst_severity(failing)
        silence = self._silence_for(conn, {"pair": pair, "check": primary.check, "severity": severity,
                                           "state": "open", "slice": [r.slice for r in failing]}, now)
        state = "silenced" if silence else "open"
        incident_id = conn.execute(insert(t.incidents).values(
            fingerprint=fp, pair=pair, check=primary.check, slice=primary.slice, severity=severity, state=state,
            title=_title(pair, primary, failing), opened_at=now, updated_at=now, resolved_at=None,
            first_run_id=run_id, last_run_id=run_id, occurrences=1,
            evidence=_evidence(primary, failing, report_path, [run_id]),
            runbook_url=self.runbooks.get(primary.check, self.runbook_url),
        )).inserted_primary_key[0]
        detail: dict[str, Any] = {"status": primary.status, "severity": severity, "message": primary.message,
                                  "slices": [r.slice for r in failing]}
        if silence:
            detail["silence_id"] = silence
        event_id = self._event(conn, incident_id, now, SYSTEM_ACTOR, "opened", None, state, run_id, detail)
        incident = self._load(conn, incident_id)
        targets: tuple[str, ...] = ()
        if silence:
            self._set_escalation(conn, incident_id, policy=None, tier=0, loop=0, status="stopped", next_at=None,
                                 notified=(), now=now)
        else:
            targets = self._start_escalation(conn, incident, event_id, "opened", now)
        return _change(incident, event_id, "opened", targets)

    def _reopen(self, conn: Connection, row: Any, run_id: int, failing: list[CheckResult], report_path: str | None,
                now: dt.datetime) -> IncidentChange | None:
        primary = _primary(failing)
        run_ids = ([r for r in (row.evidence or {}).get("run_ids") or [] if r != run_id] + [run_id])[-MAX_RUN_IDS:]
        severity = _worst_severity(failing)
        labels = {"pair": row.pair, "check": row.check, "severity": severity, "state": "open",
                  "slice": [r.slice for r in failing]}
        silence = self._silence_for(conn, labels, now)
        state = "silenced" if silence else "open"
        res = conn.execute(update(t.incidents).where(and_(t.incidents.c.id == row.id, t.incidents.c.state == "resolved"))
                           .values(state=state, resolved_at=None, updated_at=now, severity=severity,
                                   slice=primary.slice, occurrences=t.incidents.c.occurrences + 1, last_run_id=run_id,
                                   title=_title(row.pair, primary, failing),
                                   evidence=_evidence(primary, failing, report_path, run_ids)))
        if res.rowcount != 1:
            return None
        event_id = self._event(conn, row.id, now, SYSTEM_ACTOR, "reopened", "resolved", state, run_id,
                               {"status": primary.status, "message": primary.message,
                                "resolved_at": _iso(row.resolved_at), **({"silence_id": silence} if silence else {})})
        incident = self._load(conn, row.id)
        targets: tuple[str, ...] = ()
        if not silence:
            targets = self._start_escalation(conn, incident, event_id, "reopened", now)
        return _change(incident, event_id, "reopened", targets)

    def _update(self, conn: Connection, row: Any, run_id: int, failing: list[CheckResult], report_path: str | None,
                now: dt.datetime) -> IncidentChange | None:
        run_ids = list((row.evidence or {}).get("run_ids") or [])
        if run_id in run_ids:
            return None
        run_ids = (run_ids + [run_id])[-MAX_RUN_IDS:]
        primary = _primary(failing)
        severity = _worst_severity(failing)
        if SEVERITY_RANK.get(row.severity, 0) >= SEVERITY_RANK[severity]:
            severity = row.severity  # raised when worse, never lowered by a milder repeat
        # Conditional on the state still being active: an ack/resolve committed since we read the
        # row must not be overwritten (a resolved incident then gets no more updates; the failure
        # opens a new one below).
        res = conn.execute(update(t.incidents).where(and_(
            t.incidents.c.id == row.id, t.incidents.c.state.in_(ACTIVE_STATES))).values(
            occurrences=t.incidents.c.occurrences + 1, last_run_id=run_id, updated_at=now, severity=severity,
            slice=primary.slice, evidence=_evidence(primary, failing, report_path, run_ids)))
        if res.rowcount != 1:
            return self._open(conn, row.pair, run_id, row.fingerprint, failing, report_path, now)
        detail: dict[str, Any] = {"status": primary.status, "message": primary.message,
                                  "occurrences": row.occurrences + 1, "slices": [r.slice for r in failing]}
        if severity != row.severity:
            detail["severity"] = {"from": row.severity, "to": severity}
        event_id = self._event(conn, row.id, now, SYSTEM_ACTOR, "updated", row.state, row.state, run_id, detail)
        # No outbox rows: repeats are visible in the incident, not pushed to people.
        return _change(self._load(conn, row.id), event_id, "updated", ())

    # -- escalation ----------------------------------------------------------------------------
    def _start_escalation(self, conn: Connection, incident: dict[str, Any], event_id: int, event: str,
                          now: dt.datetime) -> tuple[str, ...]:
        """Notify the first tier of the matching policy (every target if none) and store the timer
        for the next tier. Returns the targets notified."""
        policy = policy_for(self.policies, _labels(incident))
        before = self._escalation(conn, incident["id"])
        notified = tuple(before.notified) if before is not None else ()
        if policy is None:
            targets, status, next_at, name = self.targets, "done", None, None
        else:
            targets = policy.tiers[0].targets
            step = policy.next_step(0, 0)
            status = "active" if step else "done"
            next_at = now + dt.timedelta(seconds=policy.tiers[0].delay or 0) if step else None
            name = policy.name
        escalation = {"policy": name, "tier": 1, "loop": 0} if policy else None
        enqueue(conn, incident_id=incident["id"], event_id=event_id, targets=targets,
                payload=build_payload(event, incident, now, actor=None, escalation=escalation), now=now)
        self._set_escalation(conn, incident["id"], policy=name, tier=0, loop=0, status=status, next_at=next_at,
                             notified=tuple(dict.fromkeys((*notified, *targets))), now=now)
        return tuple(targets)

    def _escalation(self, conn: Connection, incident_id: int) -> Any | None:
        return conn.execute(select(t.escalations).where(t.escalations.c.incident_id == incident_id)).first()

    def _set_escalation(self, conn: Connection, incident_id: int, *, policy: str | None, tier: int, loop: int,
                        status: str, next_at: dt.datetime | None, notified: Sequence[str], now: dt.datetime) -> None:
        values = dict(policy=policy, tier=tier, loop=loop, status=status, next_at=next_at, notified=list(notified),
                      updated_at=now)
        if self._escalation(conn, incident_id) is None:
            conn.execute(insert(t.escalations).values(incident_id=incident_id, **values))
        else:
            conn.execute(update(t.escalations).where(t.escalations.c.incident_id == incident_id).values(**values))

    def tick(self) -> dict[str, int]:
        """Do what is due now: escalate unacknowledged incidents whose tier delay has passed (one
        transaction per step, fenced on the stored timer, so two daemons never escalate the same
        step twice), and re-open silenced incidents whose silences have all expired. The daemon
        calls this every second; it is safe to call from several processes."""
        now = self._now()
        counts = {"escalated": 0, "unsilenced": self._unsilence_expired(now)}
        with self.store.engine.connect() as conn:
            due = conn.execute(select(t.escalations.c.incident_id).where(and_(
                t.escalations.c.status == "active", t.escalations.c.next_at <= now))
                .order_by(t.escalations.c.next_at)).scalars().all()
        policies = {p.name: p for p in self.policies}
        for incident_id in due:
            while self._escalate_step(incident_id, policies, now):
                counts["escalated"] += 1
        return counts

    def _escalate_step(self, incident_id: int, policies: Mapping[str, EscalationPolicy], now: dt.datetime) -> bool:
        with self.store.engine.begin() as conn:
            esc = self._escalation(conn, incident_id)
            if esc is None or esc.status != "active" or esc.next_at is None or as_utc(esc.next_at) > now:
                return False
            policy = policies.get(esc.policy or "")
            step = policy.next_step(esc.tier, esc.loop) if policy and esc.tier < len(policy.tiers) else None
            incident = self._load(conn, incident_id)
            if step is None or incident["state"] != "open":
                # the policy changed or was removed since the timer was set, or the state moved on
                conn.execute(update(t.escalations).where(t.escalations.c.incident_id == incident_id)
                             .values(status="done", next_at=None, updated_at=now))
                return False
            tier, loop = step
            due_at = as_utc(esc.next_at)
            # the next timer counts from when this step was due, not from when it ran, so a late
            # tick (a restart) does not push every later tier back as well
            nxt = policy.next_step(tier, loop)
            next_at = due_at + dt.timedelta(seconds=policy.tiers[tier].delay or 0) if nxt else None
            targets = policy.tiers[tier].targets
            res = conn.execute(update(t.escalations).where(and_(
                t.escalations.c.incident_id == incident_id, t.escalations.c.status == "active",
                t.escalations.c.tier == esc.tier, t.escalations.c.loop == esc.loop,
                t.escalations.c.next_at == esc.next_at)).values(
                tier=tier, loop=loop, status="active" if nxt else "done", next_at=next_at, updated_at=now,
                notified=list(dict.fromkeys((*esc.notified, *targets)))))
            if res.rowcount != 1:
                return False                      # another process took this step
            detail = {"policy": policy.name, "tier": tier + 1, "loop": loop, "targets": list(targets),
                      "due_at": _iso(due_at)}
            event_id = self._event(conn, incident_id, now, SYSTEM_ACTOR, "escalated", "open", "open", None, detail)
            enqueue(conn, incident_id=incident_id, event_id=event_id, targets=targets, now=now,
                    payload=build_payload("escalated", incident, now, actor=None,
                                          escalation={"policy": policy.name, "tier": tier + 1, "loop": loop}))
            return True

    # -- by people -----------------------------------------------------------------------------
    def ack(self, incident_id: int, actor: str, note: str | None = None) -> dict[str, Any]:
        """``open → acknowledged``: stops the escalation and tells everyone notified so far.
        Returns the incident; raises StateError from any other state."""
        return self._transition("ack", incident_id, actor, note)

    def resolve(self, incident_id: int, actor: str, note: str | None = None) -> dict[str, Any]:
        """``open | acknowledged | silenced → resolved``; tells everyone notified so far. Returns
        the incident; raises StateError if it is resolved already."""
        return self._transition("resolve", incident_id, actor, note)

    def _transition(self, action: str, incident_id: int, actor: str, note: str | None,
                    detail: dict[str, Any] | None = None) -> dict[str, Any]:
        if not actor:
            raise ValueError("an actor is required: every transition is audited")
        now = self._now()
        with self.store.engine.begin() as conn:
            row = conn.execute(select(t.incidents).where(t.incidents.c.id == incident_id)).first()
            if row is None:
                raise NotFoundError("incident", incident_id)
            self._transition_in(conn, row, action, actor, note, now, detail=detail)
            return self._load(conn, incident_id)

    def _transition_in(self, conn: Connection, row: Any, action: str, actor: str, note: str | None,
                       now: dt.datetime, *, run_id: int | None = None,
                       detail: dict[str, Any] | None = None) -> tuple[int, tuple[str, ...]]:
        """Move ``row`` by ``action`` inside the caller's transaction; returns (event id, targets told)."""
        allowed_from, to_state, event = TRANSITIONS[action]
        if row.state not in allowed_from:
            raise _state_error(action, row.id, row.state, to_state)
        values: dict[str, Any] = {"state": to_state, "updated_at": now}
        if to_state == "resolved":
            values["resolved_at"] = now
        # Compare-and-set on the state we checked: of two concurrent transitions only one
        # wins; the other sees rowcount 0 and reports the state it lost to.
        res = conn.execute(update(t.incidents).where(and_(
            t.incidents.c.id == row.id, t.incidents.c.state == row.state)).values(**values))
        if res.rowcount != 1:
            current = conn.execute(select(t.incidents.c.state).where(t.incidents.c.id == row.id)).scalar_one()
            raise _state_error(action, row.id, current, to_state)
        event_id = self._event(conn, row.id, now, actor, event, row.state, to_state, run_id,
                               {**({"note": note} if note else {}), **(detail or {})})
        incident = self._load(conn, row.id)
        if action == "unsilence":
            return event_id, self._start_escalation(conn, incident, event_id, event, now)
        esc = self._escalation(conn, row.id)
        # incidents from before escalation was stored have no row: they were announced to everyone
        notified = tuple(esc.notified) if esc is not None else self.targets
        if esc is not None:
            conn.execute(update(t.escalations).where(t.escalations.c.incident_id == row.id)
                         .values(status="stopped", next_at=None, updated_at=now))
        if action == "silence":
            return event_id, ()
        enqueue(conn, incident_id=row.id, event_id=event_id, targets=notified,
                payload=build_payload(event, incident, now, actor=actor), now=now)
        return event_id, notified

    # -- silences ------------------------------------------------------------------------------
    def add_silence(self, matchers: Sequence[Matcher], *, author: str, reason: str, duration: float | None = None,
                    ends_at: dt.datetime | None = None, starts_at: dt.datetime | None = None) -> dict[str, Any]:
        """Silence incidents matching every matcher until ``ends_at`` (or for ``duration`` seconds).
        Open incidents it matches move to ``silenced`` at once (audited with the
        author and reason, escalation stopped, nobody notified); new matching incidents open
        silenced. Returns the silence with ``silenced``: the ids it moved."""
        if not matchers:
            raise ValueError("a silence needs at least one matcher (e.g. pair=triage)")
        if not (author or "").strip():
            raise ValueError("a silence needs an author")
        if not (reason or "").strip():
            raise ValueError("a silence needs a reason")
        now = self._now()
        start = as_utc(starts_at) if starts_at else now
        if ends_at is None:
            if duration is None or duration <= 0:
                raise ValueError(f"a silence needs a positive duration, got {duration!r}")
            ends_at = start + dt.timedelta(seconds=duration)
        ends_at = as_utc(ends_at)
        if ends_at <= start:
            raise ValueError("a silence must end after it starts")
        with self.store.engine.begin() as conn:
            silence_id = conn.execute(insert(t.silences).values(
                matchers=[m.to_dict() for m in matchers], starts_at=start, ends_at=ends_at, author=author,
                reason=reason, created_at=now)).inserted_primary_key[0]
            moved = []
            if start <= now:
                for row in conn.execute(select(t.incidents).where(t.incidents.c.state == "open")).all():
                    if matches_all(matchers, _labels(_incident(row))):
                        self._transition_in(conn, row, "silence", author, reason, now,
                                            detail={"silence_id": silence_id})
                        moved.append(row.id)
            silence = _silence_dict(conn.execute(select(t.silences).where(t.silences.c.id == silence_id)).one(), now)
        silence["silenced"] = moved
        return silence

    def expire_silence(self, silence_id: int, actor: str) -> dict[str, Any]:
        """End a silence now; incidents no other silence covers go back to ``open`` (and escalate)."""
        now = self._now()
        with self.store.engine.begin() as conn:
            row = conn.execute(select(t.silences).where(t.silences.c.id == silence_id)).first()
            if row is None:
                raise NotFoundError("silence", silence_id)
            if as_utc(row.ends_at) <= now:
                raise StateError(f"silence {silence_id} has already expired")
            conn.execute(update(t.silences).where(t.silences.c.id == silence_id).values(ends_at=now))
        self._unsilence_expired(now, actor=actor, note=f"silence {silence_id} expired by {actor}")
        return self.silences(active_only=False, silence_id=silence_id)[0]

    def silences(self, *, active_only: bool = True, silence_id: int | None = None) -> list[dict[str, Any]]:
        now = self._now()
        q = select(t.silences).order_by(t.silences.c.id.desc())
        if active_only:
            q = q.where(t.silences.c.ends_at > now)
        if silence_id is not None:
            q = q.where(t.silences.c.id == silence_id)
        with self.store.engine.connect() as conn:
            return [_silence_dict(r, now) for r in conn.execute(q)]

    def _silence_for(self, conn: Connection, labels: Mapping[str, Any], now: dt.datetime) -> int | None:
        for row in conn.execute(select(t.silences).where(and_(t.silences.c.starts_at <= now,
                                                              t.silences.c.ends_at > now))):
            if matches_all([matcher_from_dict(m) for m in row.matchers], labels):
                return row.id
        return None

    def _unsilence_expired(self, now: dt.datetime, *, actor: str = SYSTEM_ACTOR, note: str = "silence expired") -> int:
        with self.store.engine.connect() as conn:
            ids = conn.execute(select(t.incidents.c.id).where(t.incidents.c.state == "silenced")).scalars().all()
        n = 0
        for incident_id in ids:
            with self.store.engine.begin() as conn:
                row = conn.execute(select(t.incidents).where(t.incidents.c.id == incident_id)).first()
                if row is None or row.state != "silenced" or self._silence_for(conn, _labels(_incident(row)), now):
                    continue
                self._transition_in(conn, row, "unsilence", actor, note, now)
                n += 1
        return n

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
            esc = self._escalation(conn, incident_id)
            incident["escalation"] = None if esc is None else {
                "policy": esc.policy, "tier": esc.tier + 1, "loop": esc.loop, "status": esc.status,
                "next_at": as_utc(esc.next_at), "notified": list(esc.notified)}
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


def build_payload(event: str, incident: dict[str, Any], at: dt.datetime, *, actor: str | None,
                  escalation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The notification body (format version 1) for ``event`` on ``incident`` (as from ``get``).

    ``event`` is one of opened, reopened, escalated, unsilenced (all mean "this needs someone"),
    acknowledged, resolved. ``escalation`` (policy, 1-based tier, loop) is set when a policy
    chose the recipients."""
    payload = {
        "version": PAYLOAD_VERSION,
        "event": event,
        "at": _iso(at),
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
            "opened_at": _iso(incident["opened_at"]),
            "occurrences": incident["occurrences"],
            "run_ids": incident["run_ids"],
            "report": incident["report"],
            "runbook_url": incident["runbook_url"],
            "evidence": incident["evidence"].get("result", {}),
            "slice_results": incident["evidence"].get("slices", []),
        },
        "actor": actor,
    }
    if escalation:
        payload["escalation"] = escalation
    return payload


# ---------------------------------------------------------------------------------------------


def _primary(failing: Sequence[CheckResult]) -> CheckResult:
    """The result an incident is titled by: the most severe, ``overall`` first among equals."""
    return max(failing, key=lambda r: (SEVERITY_RANK[severity_of(r)], r.slice == "overall"))


def _worst_severity(failing: Sequence[CheckResult]) -> str:
    return max((severity_of(r) for r in failing), key=SEVERITY_RANK.__getitem__)


def _evidence(primary: CheckResult, failing: Sequence[CheckResult], report_path: str | None,
              run_ids: list[int]) -> dict[str, Any]:
    def summary(result: CheckResult) -> dict[str, Any]:
        # to_row() makes numpy values and non-finite floats JSON-safe.
        row = result.to_row()
        threshold = result.fail if result.status == "fail" else result.warn
        return {"status": row["status"], "message": row["message"], "value": row["value"], "n": row["n"],
                "warn": row["warn"], "fail": row["fail"], "threshold": threshold,
                "critical": result.critical, "details": row["evidence"]}

    slices = [{"slice": r.slice, **{k: v for k, v in summary(r).items() if k != "details"}} for r in failing]
    return {"result": summary(primary), "slices": slices, "report": report_path, "run_ids": run_ids}


def _title(pair: str, result: CheckResult, failing: Sequence[CheckResult] = ()) -> str:
    verb = "failed" if result.status == "fail" else "warned"
    if result.decision is not None:     # the test that set the status, in its own words
        measure = sentence(result.decision)
    else:   # a result built without one: its value against the level of its status
        threshold = result.fail if result.status == "fail" else result.warn
        # Check messages read "<what> = <value> (...)"; reuse <what> so the title names the measure.
        what = result.message.partition(" = ")[0].strip() if " = " in result.message else ""
        if result.value is not None and threshold is not None:
            measure = f"{what} {result.value:.3g} >= {threshold:g}".strip()
        else:
            measure = result.message
    more = len(failing) - 1
    where = result.slice + (f" and {more} more slice{'s' if more > 1 else ''}" if more > 0 else "")
    title = f"{pair}: {result.check} {verb} on {where}"
    return f"{title} ({measure})" if measure else title


def _labels(incident: Mapping[str, Any]) -> dict[str, Any]:
    """What silences and policies match on."""
    return {"pair": incident["pair"], "check": incident["check"], "severity": incident["severity"],
            "state": incident["state"], "slice": incident.get("slices") or [incident["slice"]]}


def _silence_dict(row: Any, now: dt.datetime) -> dict[str, Any]:
    d = dict(row._mapping)
    for k in ("starts_at", "ends_at", "created_at"):
        d[k] = as_utc(d[k])
    d["matchers"] = [str(matcher_from_dict(m)) for m in d["matchers"]]
    d["active"] = d["starts_at"] <= now < d["ends_at"]
    return d


def _incident(row: Any) -> dict[str, Any]:
    d = dict(row._mapping)
    for k in ("opened_at", "updated_at", "resolved_at"):
        d[k] = as_utc(d[k])
    evidence = d.get("evidence") or {}
    d["run_ids"] = list(evidence.get("run_ids") or [])
    d["report"] = evidence.get("report")
    d["slices"] = [x["slice"] for x in evidence.get("slices") or []] or [d["slice"]]
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
    verb = {"ack": "acknowledge", "resolve": "resolve", "silence": "silence", "unsilence": "unsilence"}[action]
    return StateError(f"cannot {verb} incident {incident_id}: it is {state}")


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat().replace("+00:00", "Z")

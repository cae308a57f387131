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

``IncidentEngine`` is the one door; the work is split by concern: ``lifecycle.py`` (streaks,
open / reopen / update, transitions), ``escalation.py`` (policies and their timers),
``silences.py``, ``payload.py`` (titles, evidence, notification bodies), and every read and write
in ``sentinel.storage.incidents``.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Callable, Mapping, Sequence

from ..checks.base import CheckResult
from ..links import Links
from ..storage.incidents import MAX_RUN_IDS, IncidentStore  # noqa: F401  (MAX_RUN_IDS: re-exported)
from ..storage.repository import Store, as_utc, utcnow
from .escalation import EscalationPolicy, Escalator
from .lifecycle import (ACTIVE_STATES, GROUP, STATES, TRANSITIONS, IncidentChange,  # noqa: F401  (re-exported)
                        Lifecycle, LifecycleRules, fingerprint, load_incident)
from .matchers import Matcher
from .payload import PAYLOAD_VERSION, SEVERITY_RANK, SYSTEM_ACTOR, build_payload, severity_of  # noqa: F401
from .silences import Silences

#: what ``list(state=...)`` (and ``sentinel incidents list --state``) accepts: the stored states and
#: ``reopened`` (open again after a resolution; README lists it with the states)
LIST_STATES = STATES + ("reopened",)


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
        links: the console's URLs for notification payloads (``api.public_url``).
    """

    def __init__(self, store: Store, *, targets: Sequence[str], open_on: Sequence[str] = ("fail",),
                 runbook_url: str | None = None, runbooks: Mapping[str, str] | None = None,
                 policies: Sequence[EscalationPolicy] = (), open_after: int = 1, resolve_after: int = 0,
                 reopen_window: float = 0.0, group_slices: bool = True,
                 clock: Callable[[], dt.datetime] = utcnow, links: Links | None = None):
        self.store = store
        self.targets = tuple(dict.fromkeys(targets))
        self.policies = list(policies)
        self.rules = LifecycleRules(
            open_on=frozenset(open_on), runbook_url=runbook_url, runbooks=dict(runbooks or {}),
            open_after=max(1, int(open_after)), resolve_after=max(0, int(resolve_after)),
            reopen_window=dt.timedelta(seconds=float(reopen_window)), group_slices=group_slices)
        self._clock = clock
        self.records = IncidentStore(store)
        self.escalator = Escalator(self.records, self.policies, self.targets)
        self.lifecycle = Lifecycle(self.records, self.escalator, self.rules)
        self._silences = Silences(self.records, self.lifecycle)
        self.links = links or Links()
        self.lifecycle.links = self.escalator.links = self.links
        # told after each transition by a person commits: (action, incident, actor, note); the
        # app points it at the Grafana annotator. It is a side channel: its failure is logged
        self.on_people: Callable[[str, dict[str, Any], str, str | None], Any] | None = None

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
                   group_slices=ic.group_slices, clock=clock, links=Links.from_config(cfg))

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
        return self.lifecycle.process_run(pair, run_id, results, report_path, self._now())

    # -- timers --------------------------------------------------------------------------------
    def tick(self) -> dict[str, int]:
        """Do what is due now: escalate unacknowledged incidents whose tier delay has passed (one
        transaction per step, fenced on the stored timer, so two daemons never escalate the same
        step twice), and re-open silenced incidents whose silences have all expired. The daemon
        calls this every second; it is safe to call from several processes."""
        now = self._now()
        unsilenced = self._silences.unsilence_expired(now)
        return {"escalated": self.escalator.tick(now), "unsilenced": unsilenced}

    # -- by people -----------------------------------------------------------------------------
    def ack(self, incident_id: int, actor: str, note: str | None = None) -> dict[str, Any]:
        """``open → acknowledged``: stops the escalation and tells everyone notified so far.
        Returns the incident; raises StateError from any other state."""
        return self._told("ack", self.lifecycle.transition("ack", incident_id, actor, note, self._now()), actor, note)

    def resolve(self, incident_id: int, actor: str, note: str | None = None) -> dict[str, Any]:
        """``open | acknowledged | silenced → resolved``; tells everyone notified so far. Returns
        the incident; raises StateError if it is resolved already."""
        return self._told("resolve", self.lifecycle.transition("resolve", incident_id, actor, note, self._now()),
                          actor, note)

    def _told(self, action: str, incident: dict[str, Any], actor: str, note: str | None) -> dict[str, Any]:
        """Tell ``on_people`` about a committed transition; returns the incident."""
        if self.on_people is not None:
            try:
                self.on_people(action, incident, actor, note)
            except Exception:   # an optional side channel never undoes or fails a person's action
                logging.getLogger("sentinel.incidents").exception("transition observer failed",
                                                                  extra={"incident_id": incident.get("id")})
        return incident

    # -- silences ------------------------------------------------------------------------------
    def add_silence(self, matchers: Sequence[Matcher], *, author: str, reason: str, duration: float | None = None,
                    ends_at: dt.datetime | None = None, starts_at: dt.datetime | None = None) -> dict[str, Any]:
        """Silence incidents matching every matcher until ``ends_at`` (or for ``duration`` seconds).
        Open incidents it matches move to ``silenced`` at once (audited with the
        author and reason, escalation stopped, nobody notified); new matching incidents open
        silenced. Returns the silence with ``silenced``: the ids it moved."""
        return self._silences.add(matchers, author=author, reason=reason, duration=duration, ends_at=ends_at,
                                  starts_at=starts_at, now=self._now())

    def expire_silence(self, silence_id: int, actor: str) -> dict[str, Any]:
        """End a silence now; incidents no other silence covers go back to ``open`` (and escalate)."""
        return self._silences.expire(silence_id, actor, self._now())

    def silences(self, *, active_only: bool = True, silence_id: int | None = None) -> list[dict[str, Any]]:
        return self._silences.list(self._now(), active_only=active_only, silence_id=silence_id)

    # -- reads ---------------------------------------------------------------------------------
    def list(self, state: str | None = None, pair: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Incidents, most recently updated first, optionally filtered by state (one of
        ``LIST_STATES``: a stored state, or ``reopened``) and pair."""
        if state is not None and state not in LIST_STATES:
            raise ValueError(f"unknown incident state {state!r}; states are: {', '.join(LIST_STATES)}")
        with self.records.read() as tx:
            return tx.incidents(state=state, pair=pair, limit=limit)

    def page(self, *, state: str | None = None, severity: str | None = None, pair: str | None = None,
             limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """One page of incidents, most recently updated first, and the number matching in all."""
        if state is not None and state not in STATES:
            raise ValueError(f"unknown incident state {state!r}; states are: {', '.join(STATES)}")
        with self.records.read() as tx:
            return tx.page(state=state, severity=severity, pair=pair, limit=limit, offset=offset)

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Active incidents by (pair, state, severity): the console's overview."""
        with self.records.read() as tx:
            return tx.counts_by(ACTIVE_STATES)

    def get(self, incident_id: int) -> dict[str, Any]:
        """One incident with its ``events`` (oldest first), outbox ``deliveries`` and ``escalation``."""
        with self.records.read() as tx:
            incident = load_incident(tx, incident_id)
            incident["events"] = tx.events(incident_id)
            incident["deliveries"] = tx.outbox.for_incident(incident_id)
            incident["escalation"] = self.escalator.status(tx, incident_id)
        return incident

    def open_counts(self) -> dict[tuple[str, str], int]:
        """Active incidents by (pair, severity): the ``sentinel_incidents_open`` gauge."""
        with self.records.read() as tx:
            return tx.open_counts(("open", "acknowledged"))

"""Every read and write of the incident tables: ``incidents``, ``incident_events`` (the audit
trail), ``incident_streaks``, ``escalations`` and ``silences`` (what they mean:
``sentinel.incidents``).

``IncidentRecords`` works on one connection, so one incident transition (incident row, audit event,
escalation timer, outbox rows) commits or rolls back as one; ``IncidentStore.begin()`` and
``read()`` hand one out.

One source of truth for what an incident read returns (``incident_dict``): the row's columns; its
``evidence`` JSON (the latest check results: ``result``, ``slices``, ``report``); ``run_ids``, the
runs that counted towards it, read from its audit events (every opening, reopening and update
records its run), the most recent ``MAX_RUN_IDS``; ``slices`` and ``report`` taken from the
evidence. Rows written before this layout also carry ``run_ids`` inside the evidence: that copy is
ignored (the events say the same).
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import Connection, and_, func, insert, select, update

from . import tables as t
from .outbox import OutboxRecords
from .records import RecordsStore, utc_dict

MAX_RUN_IDS = 50                      # run ids an incident read lists (most recent)
RUN_EVENTS = ("opened", "reopened", "updated")   # the audit events that count a run towards an incident

I, E, S, X, Q = t.incidents, t.incident_events, t.incident_streaks, t.escalations, t.silences
_COUNTED = and_(E.c.action.in_(RUN_EVENTS), E.c.run_id.is_not(None))    # built once: every read uses it


class IncidentRecords:
    """The incident tables' SQL on one connection (the caller owns the transaction)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.outbox = OutboxRecords(conn)

    # -- serialisation ---------------------------------------------------------------------------
    def lock_fingerprints(self, fingerprints: Sequence[str]) -> None:
        """Hold off other writers of these fingerprints until this transaction ends."""
        # "Look for an active incident, else insert one" must not interleave with another
        # process doing the same for the same fingerprint, or the problem opens twice.
        # PostgreSQL: a transaction-scoped advisory lock per fingerprint (taken in sorted order,
        # so two runs never deadlock). SQLite: a no-op UPDATE makes the driver BEGIN and take the
        # database write lock now, before the reads, instead of at the first INSERT.
        dialect = self.conn.dialect.name
        if dialect == "postgresql":
            for fp in sorted(fingerprints):
                key = int.from_bytes(bytes.fromhex(fp[:16]), "big", signed=True)
                self.conn.execute(select(func.pg_advisory_xact_lock(key)))
        elif dialect == "sqlite":
            self.conn.execute(update(I).where(I.c.id == -1).values(id=I.c.id))

    # -- streaks ---------------------------------------------------------------------------------
    def streak(self, fp: str) -> Any | None:
        return self.conn.execute(select(S).where(S.c.fingerprint == fp)).first()

    def save_streak(self, fp: str, *, pair: str, check: str, fails: int, passes: int, run_id: int,
                    now: dt.datetime, exists: bool) -> None:
        values = dict(fails=fails, passes=passes, last_run_id=run_id, updated_at=now)
        if exists:
            self.conn.execute(update(S).where(S.c.fingerprint == fp).values(**values))
        else:
            self.conn.execute(insert(S).values(fingerprint=fp, pair=pair, check=check, **values))

    # -- incidents -------------------------------------------------------------------------------
    def incident(self, incident_id: int) -> dict[str, Any] | None:
        row = self.conn.execute(select(I).where(I.c.id == incident_id)).first()
        return None if row is None else self._dicts([row])[0]

    def latest(self, fp: str, *, states: Iterable[str], resolved_since: dt.datetime | None = None
               ) -> dict[str, Any] | None:
        """The newest incident of ``fp`` in one of ``states`` (resolved at or after ``resolved_since``)."""
        q = select(I).where(and_(I.c.fingerprint == fp, I.c.state.in_(tuple(states))))
        if resolved_since is not None:
            q = q.where(I.c.resolved_at >= resolved_since)
        row = self.conn.execute(q.order_by(I.c.id.desc()).limit(1)).first()
        return None if row is None else self._dicts([row])[0]

    def incidents(self, *, state: str | None = None, pair: str | None = None, limit: int = 100
                  ) -> list[dict[str, Any]]:
        """Most recently updated first. ``state="reopened"``: the unresolved incidents that were
        reopened (a reopened incident is ``open`` again; its ``reopened`` event says so)."""
        q = select(I).order_by(I.c.updated_at.desc(), I.c.id.desc()).limit(limit)
        if state == "reopened":
            q = q.where(I.c.state != "resolved", I.c.id.in_(select(E.c.incident_id).where(E.c.action == "reopened")))
        elif state is not None:
            q = q.where(I.c.state == state)
        if pair is not None:
            q = q.where(I.c.pair == pair)
        return self._dicts(self.conn.execute(q).all())

    def page(self, *, state: str | None = None, severity: str | None = None, pair: str | None = None,
             limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """One page of incidents (most recently updated first) and how many match in all."""
        where = [c == v for c, v in ((I.c.state, state), (I.c.severity, severity), (I.c.pair, pair)) if v is not None]
        q = select(I).order_by(I.c.updated_at.desc(), I.c.id.desc()).limit(limit).offset(offset)
        total = select(func.count()).select_from(I)
        if where:
            q, total = q.where(and_(*where)), total.where(and_(*where))
        return self._dicts(self.conn.execute(q).all()), self.conn.execute(total).scalar_one()

    def counts_by(self, states: Iterable[str]) -> dict[tuple[str, str, str], int]:
        """Incidents in ``states`` by (pair, state, severity)."""
        rows = self.conn.execute(select(I.c.pair, I.c.state, I.c.severity, func.count())
                                 .where(I.c.state.in_(tuple(states))).group_by(I.c.pair, I.c.state, I.c.severity))
        return {(p, st, sev): n for p, st, sev, n in rows}

    def ids_in_state(self, state: str) -> list[int]:
        return list(self.conn.execute(select(I.c.id).where(I.c.state == state)).scalars())

    def open_counts(self, states: Iterable[str]) -> dict[tuple[str, str], int]:
        rows = self.conn.execute(select(I.c.pair, I.c.severity, func.count())
                                 .where(I.c.state.in_(tuple(states))).group_by(I.c.pair, I.c.severity))
        return {(p, s): n for p, s, n in rows}

    def add_incident(self, **values: Any) -> int:
        return self.conn.execute(insert(I).values(**values)).inserted_primary_key[0]

    def update_incident(self, incident_id: int, *, states: Iterable[str], values: Mapping[str, Any],
                        occurrence: bool = False) -> bool:
        """Compare-and-set: update only while the incident is in one of ``states`` (an ack or
        resolution committed since the caller read it wins); ``occurrence`` counts one more.
        True if the row was updated."""
        extra = {"occurrences": I.c.occurrences + 1} if occurrence else {}
        res = self.conn.execute(update(I).where(and_(I.c.id == incident_id, I.c.state.in_(tuple(states))))
                                .values(**values, **extra))
        return res.rowcount == 1

    def state_of(self, incident_id: int) -> str:
        return self.conn.execute(select(I.c.state).where(I.c.id == incident_id)).scalar_one()

    def _dicts(self, rows: Sequence[Any]) -> list[dict[str, Any]]:
        runs = self.run_ids([r.id for r in rows])
        return [incident_dict(r, runs.get(r.id, [])) for r in rows]

    # -- audit events ----------------------------------------------------------------------------
    def add_event(self, incident_id: int, *, at: dt.datetime, actor: str, action: str, from_state: str | None,
                  to_state: str | None, run_id: int | None, detail: dict[str, Any]) -> int:
        return self.conn.execute(insert(E).values(
            incident_id=incident_id, at=at, actor=actor, action=action, from_state=from_state,
            to_state=to_state, run_id=run_id, detail=detail)).inserted_primary_key[0]

    def events(self, incident_id: int) -> list[dict[str, Any]]:
        """Oldest first."""
        return [utc_dict(r) for r in
                self.conn.execute(select(E).where(E.c.incident_id == incident_id).order_by(E.c.id))]

    def run_ids(self, incident_ids: Sequence[int], limit: int = MAX_RUN_IDS) -> dict[int, list[int]]:
        """The runs that counted towards each incident, oldest first, the most recent ``limit``."""
        if len(incident_ids) == 1:
            # the common case (every transition reads its incident back): a LIMIT walks the
            # incident's index from its newest event, where the window below would rank them all
            rows = [(incident_ids[0], r) for r in self.conn.execute(
                select(E.c.run_id).where(E.c.incident_id == incident_ids[0], _COUNTED)
                .order_by(E.c.id.desc()).limit(limit)).scalars()][::-1]
        elif incident_ids:
            rank = func.row_number().over(partition_by=E.c.incident_id, order_by=E.c.id.desc()).label("rank")
            ranked = (select(E.c.incident_id, E.c.run_id, E.c.id, rank)
                      .where(E.c.incident_id.in_(list(incident_ids)), _COUNTED).subquery())
            rows = self.conn.execute(select(ranked.c.incident_id, ranked.c.run_id).where(ranked.c.rank <= limit)
                                     .order_by(ranked.c.incident_id, ranked.c.id)).all()
        else:
            rows = []
        out: dict[int, list[int]] = {}
        for incident_id, run_id in rows:
            out.setdefault(incident_id, []).append(run_id)
        return {k: list(dict.fromkeys(v)) for k, v in out.items()}

    # -- escalation timers -----------------------------------------------------------------------
    def escalation(self, incident_id: int, *, claim: bool = False) -> Any | None:
        """The incident's timer; ``claim``: hold its row for this transaction, or None when another
        replica holds it now (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite ignores it and relies
        on the fenced :meth:`advance_escalation`)."""
        q = select(X).where(X.c.incident_id == incident_id)
        return self.conn.execute(q.with_for_update(skip_locked=True) if claim else q).first()

    def save_escalation(self, incident_id: int, *, policy: str | None, tier: int, loop: int, status: str,
                        next_at: dt.datetime | None, notified: Sequence[str], now: dt.datetime) -> None:
        values = dict(policy=policy, tier=tier, loop=loop, status=status, next_at=next_at, notified=list(notified),
                      updated_at=now)
        if self.escalation(incident_id) is None:
            self.conn.execute(insert(X).values(incident_id=incident_id, **values))
        else:
            self.conn.execute(update(X).where(X.c.incident_id == incident_id).values(**values))

    def end_escalation(self, incident_id: int, status: str, now: dt.datetime) -> None:
        """Stop the timer: ``status`` is ``stopped`` (by a person) or ``done`` (nothing left)."""
        self.conn.execute(update(X).where(X.c.incident_id == incident_id)
                          .values(status=status, next_at=None, updated_at=now))

    def advance_escalation(self, current: Any, *, tier: int, loop: int, status: str, next_at: dt.datetime | None,
                           notified: Sequence[str], now: dt.datetime) -> bool:
        """Move the timer on from ``current`` (a row read in this transaction), fenced on it: True
        for the one process whose update found the timer unchanged."""
        res = self.conn.execute(update(X).where(and_(
            X.c.incident_id == current.incident_id, X.c.status == "active", X.c.tier == current.tier,
            X.c.loop == current.loop, X.c.next_at == current.next_at)).values(
            tier=tier, loop=loop, status=status, next_at=next_at, updated_at=now, notified=list(notified)))
        return res.rowcount == 1

    def due_escalations(self, now: dt.datetime) -> list[int]:
        """Incidents whose active timer is due by ``now``, soonest first."""
        return list(self.conn.execute(select(X.c.incident_id).where(and_(X.c.status == "active", X.c.next_at <= now))
                                      .order_by(X.c.next_at)).scalars())

    # -- silences --------------------------------------------------------------------------------
    def add_silence(self, *, matchers: list[dict[str, Any]], starts_at: dt.datetime, ends_at: dt.datetime,
                    author: str, reason: str, now: dt.datetime) -> int:
        return self.conn.execute(insert(Q).values(matchers=matchers, starts_at=starts_at, ends_at=ends_at,
                                                  author=author, reason=reason, created_at=now)).inserted_primary_key[0]

    def silences(self, *, active_at: dt.datetime | None = None, ending_after: dt.datetime | None = None,
                 silence_id: int | None = None) -> list[dict[str, Any]]:
        """Newest first: those active at ``active_at``, ending after ``ending_after``, or one by id."""
        q = select(Q).order_by(Q.c.id.desc())
        if active_at is not None:
            q = q.where(and_(Q.c.starts_at <= active_at, Q.c.ends_at > active_at))
        if ending_after is not None:
            q = q.where(Q.c.ends_at > ending_after)
        if silence_id is not None:
            q = q.where(Q.c.id == silence_id)
        return [utc_dict(r) for r in self.conn.execute(q)]

    def end_silence(self, silence_id: int, now: dt.datetime) -> None:
        self.conn.execute(update(Q).where(Q.c.id == silence_id).values(ends_at=now))


def incident_dict(row: Any, run_ids: Sequence[int]) -> dict[str, Any]:
    """What every incident read returns (see the module docstring)."""
    d = utc_dict(row)
    evidence = {k: v for k, v in (d.get("evidence") or {}).items() if k != "run_ids"}
    d["evidence"] = evidence
    d["run_ids"] = list(run_ids)
    d["report"] = evidence.get("report")
    d["slices"] = [x["slice"] for x in evidence.get("slices") or []] or [d["slice"]]
    return d


class IncidentStore(RecordsStore[IncidentRecords]):
    """The incident tables of one store: ``begin()`` / ``read()`` hand out ``IncidentRecords``."""
    records = IncidentRecords

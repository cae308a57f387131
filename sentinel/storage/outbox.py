"""Every read and write of the ``outbox`` table (what the rows mean, and how they are claimed and
sent: ``sentinel.notifiers.outbox``).

``OutboxRecords`` works on one connection, so the incident engine can owe a notification in the
transaction of the transition it announces; ``OutboxStore`` opens a connection (or transaction)
per call for the dispatcher, whose claims and outcomes each commit on their own.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from . import tables as t
from .records import RecordsStore, utc_dict

PENDING, SENT, FAILED = "pending", "sent", "failed"


def row_dict(row: Any) -> dict[str, Any]:
    """An outbox row as a dict, its datetimes in UTC."""
    return utc_dict(row)


class OutboxRecords:
    """The outbox's SQL on one connection (the caller owns the transaction)."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def add(self, *, incident_id: int, event_id: int, target: str, idempotency_key: str, payload: dict[str, Any],
            now: dt.datetime) -> int:
        """One ``pending`` row, due at once."""
        return self.conn.execute(insert(t.outbox).values(
            event_id=event_id, incident_id=incident_id, target=target, idempotency_key=idempotency_key,
            payload=payload, status=PENDING, attempts=0, next_attempt_at=now, created_at=now)).inserted_primary_key[0]

    def for_incident(self, incident_id: int) -> list[dict[str, Any]]:
        """The incident's deliveries, oldest first: each row without its payload, plus the ``event``
        it announces."""
        out = []
        for r in self.conn.execute(select(t.outbox).where(t.outbox.c.incident_id == incident_id).order_by(t.outbox.c.id)):
            d = row_dict(r)
            payload = d.pop("payload") or {}
            d["event"] = payload.get("event")
            out.append(d)
        return out

    def due(self, now: dt.datetime, limit: int) -> list[Any]:
        """Pending rows due by ``now``, oldest first."""
        return self.conn.execute(
            select(t.outbox.c.id, t.outbox.c.target, t.outbox.c.idempotency_key, t.outbox.c.payload,
                   t.outbox.c.attempts)
            .where(and_(t.outbox.c.status == PENDING, t.outbox.c.next_attempt_at <= now))
            .order_by(t.outbox.c.next_attempt_at, t.outbox.c.id).limit(limit)).all()

    def claim(self, row_id: int, now: dt.datetime, lease_until: dt.datetime, owner: str | None = None) -> bool:
        """Push a due row's ``next_attempt_at`` to ``lease_until`` (``claimed_by``: ``owner``);
        True for the one caller that did."""
        # The conditional UPDATE is the lock: it succeeds for exactly one dispatcher, because the
        # winner moves next_attempt_at past `now` and a loser's WHERE no longer matches. It works
        # the same on SQLite (writers serialised) and PostgreSQL (row lock, re-check after wait).
        res = self.conn.execute(update(t.outbox).where(and_(
            t.outbox.c.id == row_id, t.outbox.c.status == PENDING, t.outbox.c.next_attempt_at <= now))
            .values(next_attempt_at=lease_until, claimed_by=owner))
        return res.rowcount == 1

    def claim_next(self, owner: str | None, now: dt.datetime, lease_until: dt.datetime) -> Any | None:
        """Claim the oldest due pending row for ``owner`` until ``lease_until``; None when none is
        left. The row is read with FOR UPDATE SKIP LOCKED (PostgreSQL: replicas claiming at once
        each take another row instead of queueing on the same one; SQLite ignores it) and taken
        by the conditional update of :meth:`claim`, which alone decides on SQLite."""
        o = t.outbox
        while True:
            row = self.conn.execute(
                select(o.c.id, o.c.target, o.c.idempotency_key, o.c.payload, o.c.attempts)
                .where(and_(o.c.status == PENDING, o.c.next_attempt_at <= now))
                .order_by(o.c.next_attempt_at, o.c.id).limit(1).with_for_update(skip_locked=True)).first()
            if row is None:
                return None
            if self.claim(row.id, now, lease_until, owner):
                return row

    def mark_sent(self, row_id: int, now: dt.datetime, attempts: int) -> None:
        # Not fenced on the lease: if our claim expired and another dispatcher also sent the
        # row, it was still delivered, and "sent" is the truth either way.
        self.conn.execute(update(t.outbox).where(and_(t.outbox.c.id == row_id, t.outbox.c.status == PENDING))
                          .values(status=SENT, sent_at=now, attempts=attempts, last_error=None))

    def finish(self, row_id: int, lease_until: dt.datetime, values: dict[str, Any]) -> None:
        """Record a failed attempt's outcome (``values``) on a row still held by our lease."""
        # Fenced on our lease: if it expired and another dispatcher re-claimed the row, that
        # dispatcher owns the outcome now and ours must not overwrite it.
        self.conn.execute(update(t.outbox).where(and_(
            t.outbox.c.id == row_id, t.outbox.c.status == PENDING, t.outbox.c.next_attempt_at == lease_until))
            .values(**values))

    def pending_count(self) -> int:
        return self.conn.execute(select(func.count()).select_from(t.outbox)
                                 .where(t.outbox.c.status == PENDING)).scalar_one()

    def failed(self, limit: int) -> list[dict[str, Any]]:
        """Rows given up on, newest first."""
        rows = self.conn.execute(select(t.outbox).where(t.outbox.c.status == FAILED)
                                 .order_by(t.outbox.c.id.desc()).limit(limit))
        return [row_dict(r) for r in rows]


class OutboxStore(RecordsStore[OutboxRecords]):
    """The outbox of one store, a connection per call (see ``OutboxRecords`` for each method)."""
    records = OutboxRecords

    def due(self, now: dt.datetime, limit: int) -> list[Any]:
        with self.read() as rows:
            return rows.due(now, limit)

    def claim(self, row_id: int, now: dt.datetime, lease_until: dt.datetime, owner: str | None = None) -> bool:
        with self.begin() as rows:
            return rows.claim(row_id, now, lease_until, owner)

    def claim_next(self, owner: str | None, now: dt.datetime, lease_until: dt.datetime) -> Any | None:
        with self.begin() as rows:
            return rows.claim_next(owner, now, lease_until)

    def mark_sent(self, row_id: int, now: dt.datetime, attempts: int) -> None:
        with self.begin() as rows:
            rows.mark_sent(row_id, now, attempts)

    def finish(self, row_id: int, lease_until: dt.datetime, values: dict[str, Any]) -> None:
        with self.begin() as rows:
            rows.finish(row_id, lease_until, values)

    def pending_count(self) -> int:
        with self.read() as rows:
            return rows.pending_count()

    def failed(self, limit: int) -> list[dict[str, Any]]:
        with self.read() as rows:
            return rows.failed(limit)

"""Every read and write of the ``replicas`` table, and the take-over of a dead replica's work
(its runs left 'running', its schedule leases). What the rows mean and when they are written:
``sentinel.replicas``."""
from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from . import tables as t
from .records import RecordsStore, utc_dict

R = t.replicas


class ReplicaRecords:
    """The replicas' SQL on one connection (the caller owns the transaction)."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def put(self, owner: str, *, host: str, pid: int, api: str | None, now: dt.datetime) -> None:
        """Register ``owner`` (a write first: on SQLite it takes the write lock, so two daemons
        starting together are told apart in turn)."""
        self.conn.execute(delete(R).where(R.c.owner == owner))
        self.conn.execute(insert(R).values(owner=owner, host=host, pid=pid, api=api, started_at=now, heartbeat_at=now))

    def beat(self, owner: str, now: dt.datetime) -> bool:
        """Renew ``owner``'s heartbeat; False when its row is gone (another replica took it for dead)."""
        return self.conn.execute(update(R).where(R.c.owner == owner).values(heartbeat_at=now)).rowcount == 1

    def all(self) -> list[dict[str, Any]]:
        """Every registered replica, oldest first."""
        return [utc_dict(r) for r in self.conn.execute(select(R).order_by(R.c.started_at, R.c.owner))]

    def remove(self, owners: Sequence[str]) -> None:
        if owners:
            self.conn.execute(delete(R).where(R.c.owner.in_(list(owners))))

    def drop_schedule_leases(self, owners: Sequence[str] | None) -> int:
        """End the schedule leases of ``owners`` (dead replicas; None: every lease): their pairs
        are claimable at once."""
        s = t.schedules
        if owners is not None and not owners:
            return 0
        held = s.c.lease_owner.is_not(None) if owners is None else s.c.lease_owner.in_(list(owners))
        return self.conn.execute(update(s).where(held).values(lease_owner=None, lease_until=None)).rowcount

    def orphaned_runs(self, live: Sequence[str], *, unowned: bool) -> list[tuple[int, str]]:
        """Runs still 'running' whose replica is not among ``live``, as (run id, pair); with
        ``unowned`` also those with no owner (from before replicas were recorded, or a CLI run)."""
        r = t.runs
        dead = r.c.owner.not_in(list(live))
        q = select(r.c.id, r.c.pair).where(and_(r.c.status == "running",
                                                or_(r.c.owner.is_(None), dead) if unowned else dead))
        return [(row.id, row.pair) for row in self.conn.execute(q.order_by(r.c.id))]


class ReplicaStore(RecordsStore[ReplicaRecords]):
    """The replicas of one store, a connection per call (see ``ReplicaRecords``)."""
    records = ReplicaRecords

    def all(self) -> list[dict[str, Any]]:
        with self.read() as rows:
            return rows.all()

    def beat(self, owner: str, now: dt.datetime) -> bool:
        with self.begin() as rows:
            return rows.beat(owner, now)

    def remove(self, owners: Sequence[str]) -> None:
        with self.begin() as rows:
            rows.remove(owners)

    def orphaned_runs(self, live: Sequence[str], *, unowned: bool) -> list[tuple[int, str]]:
        with self.read() as rows:
            return rows.orphaned_runs(live, unowned=unowned)

"""Replicas: the ``replicas`` table (its SQL: ``ReplicaRecords``) and a daemon's registration in
it (``Replica``). Each daemon registers and renews a heartbeat every third of
``replicas.lease_seconds``. What runs where is decided in the database, never
between processes: schedules are leased rows (sentinel.scheduler), outbox rows are claimed with
FOR UPDATE SKIP LOCKED (sentinel.notifiers.outbox), escalation steps are fenced row updates
(sentinel.incidents.escalation). The heartbeat only adds what a lease cannot: a replica that
died is noticed, its runs left 'running' are marked abandoned (their samples go back to the
window) and its schedule leases are dropped, within one lease.

SQLite is one replica: a second daemon on the same database is refused at start while the first
one's heartbeat is fresh. A row left by a daemon that was killed is taken over: at once when it
names this host and a process that no longer exists (or this very pid: a container restarted),
after the lease otherwise.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from typing import Any, Callable, Sequence

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from ..errors import SentinelError
from . import tables as t
from .records import RecordsStore, as_utc, utc_dict

log = logging.getLogger("sentinel.replicas")

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



class ReplicaRefused(SentinelError):
    """Another live daemon already runs on this SQLite store. ``other`` is its replicas row."""

    def __init__(self, url: str, other: dict[str, Any], age_seconds: float, lease_seconds: float):
        self.other = other
        super().__init__(
            f"another Sentinel daemon is running on this SQLite store ({url}): {other['owner']} "
            f"(host {other['host']}, pid {other['pid']}, heartbeat {age_seconds:.0f} s ago). SQLite allows one "
            f"replica: stop that one, or use PostgreSQL (store.url: postgresql+psycopg://...) to run several. "
            f"A daemon that was killed is taken over {lease_seconds:g} s after its last heartbeat "
            f"(replicas.lease_seconds)")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


class Replica:
    """This daemon's registration on ``store`` (a ``repository.Store``) as ``owner``.

    Args:
        lease_seconds: a replica whose heartbeat is older than this is dead.
        api: where this daemon's API listens (shown in /healthz).
        clock: the current UTC time (tests step it).
    """

    def __init__(self, store: Any, owner: str, *, lease_seconds: float, api: str | None = None,
                 clock: Callable[[], dt.datetime] | None = None, host: str | None = None):
        self.store, self.owner, self.lease_seconds, self.api = store, owner, lease_seconds, api
        self.host = host or socket.gethostname()
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.replicas = ReplicaStore(store)
        self.single = store.engine.url.get_backend_name() == "sqlite"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: list[dict[str, Any]] = []   # the replicas rows at the last heartbeat (for /healthz)
        self._seen_at: dt.datetime | None = None

    # -- registration --------------------------------------------------------------------------
    def register(self) -> int:
        """Register, take over dead replicas' work; returns the runs marked abandoned. Raises
        :class:`ReplicaRefused` on SQLite when another daemon's heartbeat is fresh."""
        now = self._clock()
        with self.replicas.begin() as rows:
            rows.put(self.owner, host=self.host, pid=os.getpid(), api=self.api, now=now)
            self._note(rows.all(), now)
            others = [r for r in self._seen if r["owner"] != self.owner]
            live = [r for r in others if self._is_live(r, now)]
            if self.single and live:
                age = (now - as_utc(live[0]["heartbeat_at"])).total_seconds()
                raise ReplicaRefused(str(self.store.engine.url), live[0], age, self.lease_seconds)
            self._take_over(rows, [r["owner"] for r in others if r not in live])
            if self.single:   # the only daemon: every lease left was a predecessor's
                rows.drop_schedule_leases(None)
        log.info("replica registered", extra={"owner": self.owner, "replicas": 1 + len(live), "single": self.single})
        # runs without an owner are a predecessor's (before 0007) unless other daemons are live
        return self._abandon_orphans(include_unowned=self.single or not live)

    def _is_live(self, row: dict[str, Any], now: dt.datetime) -> bool:
        if row["host"] == self.host and (row["pid"] == os.getpid() or not pid_alive(row["pid"])):
            return False   # a killed daemon on this host (or this container before a restart)
        return (now - as_utc(row["heartbeat_at"])).total_seconds() <= self.lease_seconds

    def _take_over(self, rows: ReplicaRecords, dead: list[str]) -> None:
        if dead:
            rows.remove(dead)
            dropped = rows.drop_schedule_leases(dead)
            log.warning("dead replicas taken over", extra={"replicas": dead, "schedule_leases": dropped})

    def _abandon_orphans(self, *, include_unowned: bool) -> int:
        """Mark runs of replicas no longer registered abandoned, their samples back in the window.
        Runs without an owner (from before replicas were recorded, or a CLI revalidation) only at
        registration: one in progress now would be a CLI run, which is alive."""
        live = [r["owner"] for r in self.replicas.all()]
        n = 0
        for run_id, pair in self.replicas.orphaned_runs(live, unowned=include_unowned):
            if self.store.finish_run(run_id, status="abandoned", n_samples=0, record=None, results=[],
                                     release_window=True,
                                     error="the daemon running it stopped; its samples went back to the window"):
                log.warning("abandoned run recovered", extra={"run_id": run_id, "pair": pair})
                n += 1
        return n

    # -- heartbeat -------------------------------------------------------------------------------
    def beat(self) -> int:
        """Renew the heartbeat (re-registering if another replica took this one for dead) and
        take over replicas whose heartbeat is older than the lease. Returns runs abandoned."""
        now = self._clock()
        with self.replicas.begin() as rows:
            if not rows.beat(self.owner, now):
                log.warning("replica row was gone (taken for dead): registering again", extra={"owner": self.owner})
                rows.put(self.owner, host=self.host, pid=os.getpid(), api=self.api, now=now)
            self._note(rows.all(), now)
            dead = [r["owner"] for r in self._seen if r["owner"] != self.owner and not self._is_live(r, now)]
            self._take_over(rows, dead)
        # every beat, not only after a take-over: a reaper that died between the two still has
        # its victims' runs recovered by the next one
        return self._abandon_orphans(include_unowned=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sentinel-replica-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                self.beat()
            except Exception:   # the store is down: others take this replica for dead after the lease
                log.warning("replica heartbeat failed", exc_info=True)

    def stop(self) -> None:
        """Stop the heartbeat and unregister (a clean stop: nobody waits for the lease)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        try:
            self.replicas.remove([self.owner])
        except Exception:
            log.warning("replica not unregistered; its row lapses with the lease", exc_info=True)

    def _note(self, rows: list[dict[str, Any]], now: dt.datetime) -> None:
        self._seen, self._seen_at = rows, now

    def status(self) -> dict[str, Any]:
        """This replica and the registered ones as of the last heartbeat (no store round trip:
        /healthz shows it and must not fail when the store does)."""
        at = self._seen_at
        return {"owner": self.owner, "as_of": at.isoformat() if at else None, "replicas": [
            {"owner": r["owner"], "host": r["host"], "pid": r["pid"], "api": r["api"],
             "heartbeat_at": as_utc(r["heartbeat_at"]).isoformat(),
             "alive": r["owner"] == self.owner or (at is not None and self._is_live(r, at))} for r in self._seen]}

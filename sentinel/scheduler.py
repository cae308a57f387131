"""The revalidation timer: schedules are rows of the store's ``schedules`` table (plain columns,
nothing pickled), and a small thread asks the store once a tick which pairs are due and claims
them (Store.claim_due_schedules); a worker thread runs the claimed revalidations one at a time.

Behaviour kept from the APScheduler 3 job store it replaces: an interval per pair; the next run
time survives a restart while the interval is unchanged; after downtime the missed runs coalesce
into one; a run more than ``misfire_grace`` seconds late is passed over (logged) and the pair
waits for its next slot; a pair whose previous run is still going is not started twice. Claims
are leases (owner + expiry, renewed every third of the lease while the run lasts), so several
daemons on one PostgreSQL store run each due pair once, and a dead daemon's pairs are claimed
again once its lease lapsed (sooner: sentinel.storage.replicas drops a dead replica's leases).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import socket
import threading
import time
import uuid
from typing import Any, Callable

log = logging.getLogger("sentinel.scheduler")

TICK_SECONDS = 1.0
LEASE_SECONDS = 30.0     # a claim lapses this long after its owner stopped renewing it (replicas.lease_seconds)


def owner_id() -> str:
    """Who holds a lease: host, pid and a random part (a restarted pid is another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RevalidationScheduler:
    """``run(pair)`` is called in the worker thread for each claimed schedule. ``store`` is a
    sentinel.storage.repository.Store (its schedule methods); claims are its ScheduleClaims."""

    def __init__(self, store: Any, intervals: dict[str, float], run: Callable[[str], Any], *,
                 misfire_grace: float, owner: str | None = None, tick_seconds: float = TICK_SECONDS,
                 lease_seconds: float = LEASE_SECONDS):
        self.store, self.intervals, self.run_pair = store, dict(intervals), run
        self.misfire_grace, self.tick_seconds = misfire_grace, tick_seconds
        # renewed every third of the lease: two renewals may fail before another replica takes over
        self.lease_seconds, self.renew_seconds = lease_seconds, lease_seconds / 3
        self.owner = owner or owner_id()
        self._stop = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._held: dict[str, Any] = {}     # claimed by us, queued or running
        self._held_lock = threading.Lock()
        self._running: str | None = None
        self._times: dict[str, dt.datetime | None] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._times = self.store.sync_schedules(self.intervals)
        log.info("schedules", extra={"next_run": {p: v.isoformat() if v else None for p, v in self._times.items()}})
        for target, name in ((self._tick_loop, "ticker"), (self._work_loop, "worker")):
            # daemon threads: a revalidation abandoned at shutdown must not hold the process
            th = threading.Thread(target=target, name=f"sentinel-schedule-{name}", daemon=True)
            th.start()
            self._threads.append(th)

    def next_run_times(self) -> dict[str, dt.datetime | None]:
        """Each configured pair's next run time, read from the store (the last known values when
        the store cannot be read: a stuck scheduler shows as times in the past)."""
        try:
            self._times = self.store.schedule_times()
        except Exception:
            log.warning("schedule read failed; showing the last known next run times", exc_info=True)
        return {pair: self._times.get(pair) for pair in self.intervals}

    @property
    def running_pair(self) -> str | None:
        return self._running

    def stop(self, *, wait: float = 2.0) -> None:
        """Stop claiming; hand back claims that never started (their due time is put back). The
        run in progress, if any, keeps its lease until :meth:`release_all`."""
        self._stop.set()
        ticker = self._threads[0] if self._threads else None
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join(timeout=wait)
        self._drain()

    def release_all(self) -> None:
        """End every lease this scheduler still holds (the daemon is going away)."""
        with self._held_lock:
            held, self._held = dict(self._held), {}
        for pair in held:
            self._release(pair, finished=False)

    # -- threads ---------------------------------------------------------------------------------
    def _tick_loop(self) -> None:
        renewed = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
                if time.monotonic() - renewed >= self.renew_seconds:
                    with self._held_lock:
                        pairs = list(self._held)
                    self.store.renew_schedule_leases(self.owner, pairs, self.lease_seconds)
                    renewed = time.monotonic()
            except Exception:
                log.exception("schedule tick failed")
            self._stop.wait(self.tick_seconds)

    def tick(self) -> list[Any]:
        """Claim what is due now and queue it for the worker."""
        claims, missed = self.store.claim_due_schedules(self.owner, misfire_grace=self.misfire_grace,
                                                        lease_seconds=self.lease_seconds)
        for m in missed:
            if m.reason == "misfire":
                log.warning("scheduled revalidation missed", extra={
                    "pair": m.pair, "due": m.due_at.isoformat(), "late_seconds": round(m.late_seconds, 1),
                    "misfire_grace_seconds": self.misfire_grace})
            else:
                log.info("scheduled revalidation skipped: the previous one is still running",
                         extra={"pair": m.pair, "due": m.due_at.isoformat()})
        queued = []
        for c in claims:
            with self._held_lock:
                if c.pair in self._held:   # our lease lapsed mid-run (store unreachable) and was re-taken
                    continue
                self._held[c.pair] = c
            # one line per claimed slot: across replicas each (pair, due) appears once
            log.info("scheduled revalidation claimed", extra={"pair": c.pair, "due": c.due_at.isoformat(),
                                                              "owner": self.owner})
            self._queue.put(c)
            queued.append(c)
        return queued

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            try:
                claim = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if self._stop.is_set():
                self._give_back(claim)
                break
            self._running = claim.pair
            try:
                self.run_pair(claim.pair)
            except Exception:
                log.exception("scheduled revalidation failed", extra={"pair": claim.pair})
            finally:
                self._running = None
                with self._held_lock:
                    self._held.pop(claim.pair, None)
                self._release(claim.pair, finished=True)

    def _drain(self) -> None:
        while True:
            try:
                claim = self._queue.get_nowait()
            except queue.Empty:
                return
            self._give_back(claim)

    def _give_back(self, claim: Any) -> None:
        with self._held_lock:
            self._held.pop(claim.pair, None)
        log.info("scheduled revalidation handed back unstarted", extra={"pair": claim.pair,
                                                                        "due": claim.due_at.isoformat()})
        self._release(claim.pair, finished=False, next_run_at=claim.due_at)

    def _release(self, pair: str, *, finished: bool, next_run_at: dt.datetime | None = None) -> None:
        try:
            self.store.release_schedule(pair, self.owner, finished=finished, next_run_at=next_run_at)
        except Exception:   # the lease lapses by itself
            log.warning("schedule lease not released", extra={"pair": pair}, exc_info=True)

"""Readiness: is this daemon doing its job right now? Computed from its parts, each with a reason.

Parts (README, Operations: readiness):

* ``daemon`` — started (not starting or stopping); ``models`` — the pairs are loaded;
* ``broker`` — a bootstrap server accepts TCP connections (``source.ping()``, result reused for
  ``health.cache_seconds``), and the consumer has had a group coordinator within
  ``health.coordinator_grace_seconds`` (its own view: a broker may accept connections and still
  not serve the group);
* ``store`` — the last store write did not fail (``daemon.write_error``); when nothing was
  written for ``health.write_probe_seconds``, a probe that really needs write permission passes
  (``Store.probe_writes``, bounded), result reused for ``health.cache_seconds``;
* ``ingest`` — ingest stored a batch, or had nothing known to be behind (lag 0), within
  ``health.stall_seconds`` (also exported as ``sentinel_ingest_stalled``);
* ``scheduler`` — no pair's revalidation is overdue by more than
  ``health.schedule_overdue_seconds`` and none has run longer than ``health.max_run_seconds``.

A part goes back to ok by itself when its cause goes away. The daemon object is read, never
changed; its attributes are set by the ingest and revalidation threads (plain assignments).
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .errors import one_line

PARTS = ("daemon", "models", "broker", "store", "ingest", "scheduler")
# how long /readyz waits for a broker ping or a write probe before calling the part failing
# (the chart's readiness probe waits 5 s for the whole answer)
CHECK_TIMEOUT_SECONDS = 2.5
# the write probe's own bound (Store.probe_writes: statement/lock timeouts, SQLite busy wait),
# inside CHECK_TIMEOUT_SECONDS
PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Part:
    ok: bool
    reason: str | None = None


OK = Part(True)


class _Cached:
    """A check run at most once per ``ttl`` seconds, in its own thread, waited for at most
    ``timeout_s``: a store or broker that hangs (a black-holed address) makes the part fail
    with "no answer" instead of hanging /readyz and /metrics. While a check is still running,
    callers get its last answer (or "no answer") and no second check starts."""

    def __init__(self, what: str, fn: Callable[[], Part], ttl: float, timeout_s: float,
                 clock: Callable[[], float]):
        self.what, self.fn, self.ttl, self.timeout_s, self.clock = what, fn, ttl, timeout_s, clock
        self._lock = threading.Lock()
        self._at: float | None = None
        self._value = OK
        self._running: threading.Thread | None = None

    def get(self) -> Part:
        with self._lock:
            if self._running is None and (self._at is None or self.clock() - self._at >= self.ttl):
                self._running = threading.Thread(target=self._run, name=f"sentinel-health-{self.what}", daemon=True)
                self._running.start()
            running = self._running
        if running is not None:
            running.join(self.timeout_s)
            with self._lock:
                if self._running is running:   # still not back
                    return Part(False, f"the {self.what} check has not answered within {self.timeout_s:g} s")
        with self._lock:
            return self._value

    def _run(self) -> None:
        value = self.fn()
        with self._lock:
            self._value, self._at, self._running = value, self.clock(), None


class Health:
    """Readiness of ``daemon`` (a :class:`sentinel.daemon.Daemon`, or anything with the same
    attributes) under ``cfg`` (a :class:`sentinel.config.HealthConfig`, not imported: this module
    sits beside the flow, below config). ``clock`` is monotonic seconds, ``wall`` the aware UTC
    now (scheduler times)."""

    def __init__(self, daemon: Any, cfg: Any, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)):
        self.daemon, self.cfg, self.clock, self.wall = daemon, cfg, clock, wall
        self._broker = _Cached("broker", self._ping, cfg.cache_seconds, CHECK_TIMEOUT_SECONDS, clock)
        self._probe = _Cached("store write", self._probe_store, cfg.cache_seconds, CHECK_TIMEOUT_SECONDS, clock)

    # -- the answer ------------------------------------------------------------------------
    def parts(self) -> dict[str, Part]:
        return {"daemon": self.daemon_part(), "models": self.models_part(), "broker": self.broker_part(),
                "store": self.store_part(), "ingest": self.ingest_part(), "scheduler": self.scheduler_part()}

    def report(self) -> dict[str, Any]:
        """``{"ready", "parts": {name: {"ok", "reason"}}, "problems": ["name: reason", ...]}``."""
        parts = self.parts()
        problems = [f"{name}: {p.reason}" for name, p in parts.items() if not p.ok]
        return {"ready": not problems, "problems": problems,
                "parts": {name: {"ok": p.ok, "reason": p.reason} for name, p in parts.items()}}

    def bind(self, metrics: Any) -> None:
        """Export ``sentinel_ingest_stalled`` and ``sentinel_ready{part}``, computed at scrape time."""
        metrics.ingest_stalled.set_function(lambda: float(self.ingest_stalled()))
        lookup = {"daemon": self.daemon_part, "models": self.models_part, "broker": self.broker_part,
                  "store": self.store_part, "ingest": self.ingest_part, "scheduler": self.scheduler_part}
        for name in PARTS:
            metrics.ready.labels(name).set_function(lambda f=lookup[name]: float(f().ok))

    # -- parts -----------------------------------------------------------------------------
    def daemon_part(self) -> Part:
        state = getattr(self.daemon.state, "value", str(self.daemon.state))
        return OK if state == "started" else Part(False, f"the daemon is {state}")

    def models_part(self) -> Part:
        return OK if self.daemon.pairs else Part(False, "no model pair is loaded")

    def broker_part(self) -> Part:
        source = self.daemon.source
        if source is None:
            return Part(False, "the source is not started")
        reach = self._broker.get()
        if not reach.ok:
            return reach
        lost_for = getattr(source, "coordinator_lost_for", lambda: None)()
        if lost_for is not None and lost_for > self.cfg.coordinator_grace_seconds:
            return Part(False, f"the consumer has had no group coordinator for {lost_for:.0f} s "
                               f"(limit {self.cfg.coordinator_grace_seconds:g} s)")
        return OK

    def store_part(self) -> Part:
        d = self.daemon
        if d.store is None:
            return Part(False, "the store is not open")
        if d.write_error:
            return Part(False, f"the last write failed: {d.write_error}")
        idle = self.clock() - d.last_write_ok if d.last_write_ok else float("inf")
        if self.cfg.write_probe_seconds and idle > self.cfg.write_probe_seconds:
            return self._probe.get()
        return OK

    def ingest_stalled(self) -> bool:
        return not self.ingest_part().ok

    def ingest_part(self) -> Part:
        d = self.daemon
        if not d.last_advance:
            return OK   # not started yet: the daemon part says so
        quiet = self.clock() - d.last_advance
        if quiet <= self.cfg.stall_seconds:
            return OK
        lag = f"{d.last_lag} records behind" if d.last_lag else "records waiting"
        return Part(False, f"no batch stored for {quiet:.0f} s with {lag} (limit {self.cfg.stall_seconds:g} s)")

    def scheduler_part(self) -> Part:
        d = self.daemon
        problems = []
        now_m, now = self.clock(), self.wall()
        for pair, started in sorted(dict(d.running).items()):
            if now_m - started > self.cfg.max_run_seconds:
                problems.append(f"{pair}: a revalidation has been running for {now_m - started:.0f} s "
                                f"(limit {self.cfg.max_run_seconds:g} s)")
        try:
            due = d.next_run_times()
        except Exception as exc:  # noqa: BLE001 - the scheduler's own failure is the answer
            return Part(False, f"next run times unavailable: {one_line(exc)}")
        for pair, at in sorted(due.items()):
            if at is None:
                continue   # paused or not scheduled: no run is owed
            if at.tzinfo is None:
                at = at.replace(tzinfo=dt.timezone.utc)
            late = (now - at).total_seconds()
            if late > self.cfg.schedule_overdue_seconds and pair not in d.running:
                problems.append(f"{pair}: the revalidation due at {at.isoformat(timespec='seconds')} "
                                f"is {late:.0f} s overdue (limit {self.cfg.schedule_overdue_seconds:g} s)")
        return Part(False, "; ".join(problems)) if problems else OK

    # -- the cached I/O ----------------------------------------------------------------------
    def _ping(self) -> Part:
        source = self.daemon.source
        try:
            ok = bool(source.ping())
        except Exception as exc:  # noqa: BLE001 - ping must never raise, but say so if it does
            return Part(False, f"broker check failed: {one_line(exc)}")
        if ok:
            return OK
        servers = ",".join(getattr(source, "servers", []) or ["?"])
        return Part(False, f"no bootstrap server accepts connections ({servers})")

    def _probe_store(self) -> Part:
        try:
            self.daemon.store.probe_writes(timeout_s=PROBE_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - any refusal is the answer
            return Part(False, f"writes refused: {one_line(exc)}")
        return OK

"""The daemon: consume → decode → store → commit, scheduled revalidations, the notification outbox,
the HTTP API, and a visible lifecycle (starting → started → stopping → stopped).

Threads: the main thread owns the Kafka consumer (kafka-python consumers are not thread-safe);
APScheduler runs revalidations in its own worker thread; one thread drains the outbox; uvicorn
serves the API in another. On SIGTERM/SIGINT the loop stops polling, the scheduler is shut down,
the running revalidation gets a bounded grace period, and the process exits; a second signal
forces exit at once (as uvicorn does).
"""
from __future__ import annotations

import datetime as dt
import enum
import logging
import os
import signal
import threading
import time
from typing import Any, Callable

from .config import Config, read_secret, register_secrets
from .errors import MessageError, SentinelError
from .messages import PairShape, decode_label, decode_traffic
from .metrics import Metrics
from .reports import write_run_report
from .revalidation import LoadedPair, Revalidator, load_pair, resolve_report_dir
from .sampling import Sampler
from .storage.repository import LabelIn, QuarantineIn, SampleIn, Store, open_store

log = logging.getLogger("sentinel.daemon")

SHUTDOWN_GRACE_SECONDS = 6.0
_CURRENT: "Daemon | None" = None


def scheduled_revalidation(pair: str) -> None:
    """APScheduler job entry point. Jobs live in the SQL job store, so the callable must be an
    importable module-level function with picklable args; it finds the running daemon here."""
    daemon = _CURRENT
    if daemon is None:
        log.warning("scheduled revalidation with no daemon running", extra={"pair": pair})
        return
    daemon.revalidate(pair, trigger="schedule")


def _preload_evidently() -> None:
    try:
        import evidently  # noqa: F401
    except Exception:  # the report says so if it really cannot be imported
        log.warning("evidently could not be imported; reports will lack its section", exc_info=True)


class RunState(enum.Enum):
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"


def decode_batch(records: Any, shapes: dict[str, PairShape], sampler: Sampler, labels_topic: str | None
                 ) -> tuple[list[SampleIn], list[LabelIn], list[QuarantineIn]]:
    """Turn polled Kafka records into rows for the store. Never raises for a bad message."""
    samples, labels, bad = [], [], []
    for r in records:
        try:
            if labels_topic is not None and r.topic == labels_topic:
                lm = decode_label(r.value, shapes)
                labels.append(LabelIn(lm.id, lm.label, r.topic, r.partition, r.offset))
                continue
            m = decode_traffic(r.value, shapes, timestamp_ms=r.timestamp_ms)
            samples.append(SampleIn(pair=m.pair, msg_id=m.id, ts=m.ts, topic=r.topic, partition=r.partition,
                                    offset=r.offset, sample_key=sampler.key(m.pair, m.id), inputs=m.inputs,
                                    attributes=m.attributes, label=m.label, extra=m.extra or None,
                                    stratum=sampler.stratum(m.attributes)))
        except MessageError as exc:
            raw = r.value.decode("utf-8", "replace") if isinstance(r.value, (bytes, bytearray)) else str(r.value)
            bad.append(QuarantineIn(r.topic, r.partition, r.offset, exc.reason, exc.detail, raw))
    return samples, labels, bad


class Daemon:
    def __init__(self, cfg: Config, *, metrics: Metrics | None = None, install_signals: bool = True,
                 source_factory: Callable[[Config], Any] | None = None, serve_api: bool | None = None,
                 on_run: Callable[[Any], None] | None = None):
        self.cfg = cfg
        self.metrics = metrics or Metrics()
        self.install_signals = install_signals
        self.source_factory = source_factory
        self.serve_api = cfg.api.enabled if serve_api is None else serve_api
        self.on_run = on_run
        self.state = RunState.STARTING
        self.stop_event = threading.Event()
        self.store: Store | None = None
        self.pairs: dict[str, LoadedPair] = {}
        self.source: Any = None
        self.scheduler: Any = None
        self.revalidator: Revalidator | None = None
        self.incidents: Any = None
        self.dispatcher: Any = None
        self.last_poll_ok: float = 0.0
        self.api_port: int | None = None
        self._run_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._api_server: Any = None
        self._signals = 0
        self.sampler = Sampler(cfg.sampling.rate, cfg.sampling.window, cfg.sampling.seed,
                               tuple(cfg.sampling.stratify_by))

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        global _CURRENT
        from .incidents.engine import IncidentEngine
        from .incidents.escalation import load_policies
        from .notifiers.base import build_notifiers
        from .notifiers.outbox import OutboxDispatcher

        cfg = self.cfg
        register_secrets(cfg)   # every configured secret is masked in every log line from here on
        log.info("starting", extra={"config": cfg.source, "pairs": sorted(cfg.pairs)})
        # config problems first (notifiers, escalation policies): fail fast, before loading models
        notifiers = build_notifiers(cfg)
        policies = load_policies(cfg.escalation, base_dir=cfg.base_dir, targets=notifiers, source=cfg.source)
        self.pairs = {name: load_pair(cfg, name) for name in cfg.pairs}
        self.store = open_store(cfg.store.url, echo=cfg.store.echo)
        self._recover_abandoned_runs()
        self.incidents = IncidentEngine.from_config(cfg, self.store, policies=policies)
        self.dispatcher = OutboxDispatcher(
            self.store, notifiers, max_attempts={n: c.max_attempts for n, c in cfg.notifiers.items()},
            backoff_seconds=min((c.backoff_seconds for c in cfg.notifiers.values()), default=1.0),
            on_outcome=lambda target, outcome: self.metrics.notifications.labels(target, outcome).inc())
        reports = resolve_report_dir(cfg)
        self.revalidator = Revalidator(cfg, self.store, self.pairs, incidents=self.incidents, metrics=self.metrics,
                                       report_writer=lambda run, loaded, data=None: write_run_report(run, reports, data))
        _CURRENT = self
        self._start_scheduler()
        self.source = self.source_factory(cfg) if self.source_factory else self._kafka_source()
        self.source.start()
        self._spawn(self._outbox_loop, "outbox")
        # every run's report goes through Evidently, whose import takes 5-7 s: pay it now, beside
        # the consumer, rather than inside the first revalidation
        self._spawn(_preload_evidently, "preload")
        if self.serve_api:
            self._start_api()
        if self.install_signals and threading.current_thread() is threading.main_thread():
            # signal.signal (not loop handlers): the main thread blocks in poll(), and a plain
            # handler that only sets an event lets poll() return and the loop drain.
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self.state = RunState.STARTED
        log.info("started", extra={"pairs": sorted(self.pairs), "store": self.store.engine.url.get_backend_name(),
                                   "api_port": self.api_port})

    def run(self) -> int:
        """Start, consume until stopped, shut down. Returns the process exit code."""
        try:
            self.start()
            while not self.stop_event.is_set():
                self.ingest_once()
        except SentinelError:
            # a config or connection problem found at start (a model, a policy file, a notifier,
            # an unreachable broker): the CLI prints it on one line and exits 2
            self.shutdown()
            raise
        except Exception:
            log.exception("crashed")
            self.shutdown()
            return 1
        self.shutdown()
        return 0

    def stop(self) -> None:
        self.stop_event.set()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting now", extra={"signal": signum})
            os._exit(1)
        log.info("signal received: stopping", extra={"signal": signal.Signals(signum).name})
        self.stop_event.set()

    def shutdown(self) -> None:
        global _CURRENT
        if self.state in (RunState.STOPPING, RunState.STOPPED):
            return
        self.state = RunState.STOPPING
        self.stop_event.set()
        t0 = time.monotonic()
        if self.scheduler is not None:
            try:
                self.scheduler.shutdown(wait=False)
            except Exception:
                log.exception("scheduler shutdown failed")
        # a revalidation in progress gets a bounded grace period; if abandoned, the next start
        # marks its run 'abandoned' and returns its samples to the window (nothing is lost)
        if self._run_lock.acquire(timeout=SHUTDOWN_GRACE_SECONDS):
            self._run_lock.release()
        else:
            log.warning("abandoning the revalidation in progress", extra={"grace_seconds": SHUTDOWN_GRACE_SECONDS})
        if self.source is not None:
            try:
                self.source.close()
            except Exception:
                log.exception("source close failed")
        if self._api_server is not None:
            self._api_server.should_exit = True
        for t in self._threads:
            t.join(timeout=2)
        if _CURRENT is self:
            _CURRENT = None
        self.state = RunState.STOPPED
        log.info("stopped", extra={"seconds": round(time.monotonic() - t0, 2)})

    # -- ingest --------------------------------------------------------------------------------
    def ingest_once(self) -> int:
        """One poll → store → commit cycle. Returns the number of records read."""
        assert self.store is not None
        try:
            records = self.source.poll(self.cfg.kafka.poll_timeout_ms)
        except Exception:
            log.exception("poll failed; retrying")
            self.stop_event.wait(1.0)
            return 0
        self.last_poll_ok = time.monotonic()
        if records:
            shapes = {name: p.shape for name, p in self.pairs.items()}
            samples, labels, bad = decode_batch(records, shapes, self.sampler, self.cfg.kafka.labels_topic)
            try:
                res = self.store.ingest(samples, labels, bad, window=self.cfg.sampling.window,
                                        rate=self.cfg.sampling.rate, max_strata=self.cfg.sampling.max_strata)
            except Exception:
                # nothing was committed: rewind so these records are read again, not skipped
                log.exception("store write failed; will re-read the batch")
                self.source.rewind(records)
                self.stop_event.wait(1.0)
                return 0
            # offsets are committed only now that everything up to them is durably stored
            try:
                self.source.commit(records)
            except Exception:
                # e.g. a rebalance took the partition away: the records are stored, a redelivery
                # is dropped as a duplicate, so carry on
                log.warning("offset commit failed; records stored, will be deduplicated if redelivered",
                            exc_info=True)
            m = self.metrics
            m.messages_consumed.inc(len(records))
            m.samples_stored.inc(res.stored)
            for q in bad:
                m.messages_quarantined.labels(q.reason).inc()
            if bad:
                log.info("quarantined", extra={"count": len(bad), "reasons": sorted({q.reason for q in bad})})
        lag = self.source.lag()
        if lag is not None:
            self.metrics.consumer_lag.set(lag)
        return len(records)

    # -- revalidation ----------------------------------------------------------------------------
    def revalidate(self, pair: str, trigger: str = "manual") -> Any:
        if self.revalidator is None or self.state is RunState.STOPPING:
            return None
        with self._run_lock:   # one revalidation at a time per process (bounded CPU on small hosts)
            outcome = self.revalidator.run(pair, trigger=trigger)
        if outcome is not None:
            self._refresh_incident_gauge()
            if self.on_run is not None:
                self.on_run(outcome)
        return outcome

    def _start_scheduler(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        assert self.store is not None
        self.scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.store.engine)},
            executors={"default": ThreadPoolExecutor(max(1, len(self.pairs)))},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": self.cfg.revalidation.misfire_grace_seconds},
            timezone=dt.timezone.utc)
        # started paused so existing jobs can be compared before anything fires
        self.scheduler.start(paused=True)
        wanted = {f"revalidate:{p}": p for p in self.pairs}
        for job in self.scheduler.get_jobs():
            if job.id.startswith("revalidate:") and job.id not in wanted:
                job.remove()
        for job_id, pair in wanted.items():
            interval = dt.timedelta(seconds=self.cfg.interval_for(pair))
            job = self.scheduler.get_job(job_id)
            if job is not None and getattr(job.trigger, "interval", None) == interval:
                continue  # keep its stored next run time across restarts
            self.scheduler.add_job(scheduled_revalidation, "interval", seconds=interval.total_seconds(),
                                   args=[pair], id=job_id, name=f"revalidate {pair}", replace_existing=True)
        self.scheduler.resume()

    def next_run_times(self) -> dict[str, dt.datetime | None]:
        if self.scheduler is None:
            return {}
        return {j.id.split(":", 1)[1]: j.next_run_time for j in self.scheduler.get_jobs()
                if j.id.startswith("revalidate:")}

    def _recover_abandoned_runs(self) -> None:
        assert self.store is not None
        for run in self.store.list_runs(limit=1000):
            if run["status"] == "running":
                self.store.release_window(run["id"])
                self.store.finish_run(run["id"], status="abandoned", n_samples=0, record=run["record"], results=[],
                                      error="the daemon stopped during this run; its samples went back to the window")
                log.warning("abandoned run recovered", extra={"run_id": run["id"], "pair": run["pair"]})

    # -- side loops ------------------------------------------------------------------------------
    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=f"sentinel-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def _outbox_loop(self) -> None:
        # Escalation timers are rows in the store, so this loop only asks what is due now; a
        # restarted daemon picks up exactly where the stored timers say.
        while not self.stop_event.is_set():
            try:
                ticked = self.incidents.tick()
                if any(ticked.values()):
                    log.info("incident timers", extra=ticked)
                    self._refresh_incident_gauge()
            except Exception:
                log.exception("incident tick failed")
            try:
                self.dispatcher.dispatch_due()
            except Exception:
                log.exception("outbox dispatch failed")
            self.stop_event.wait(1.0)
        # one last pass so notifications written just before the stop go out
        try:
            self.dispatcher.dispatch_due()
        except Exception:
            log.exception("final outbox dispatch failed")

    def _refresh_incident_gauge(self) -> None:
        try:
            counts = self.incidents.open_counts()
            self.metrics.incidents_open.clear()
            for (pair, sev), n in counts.items():
                self.metrics.incidents_open.labels(pair, sev).set(n)
        except Exception:
            log.exception("incident gauge refresh failed")

    def _kafka_source(self) -> Any:
        from .sources.kafka import KafkaSource

        k = self.cfg.kafka
        return KafkaSource(k, password=read_secret(k.sasl_password_env, k.sasl_password_file))

    def _start_api(self) -> None:
        import socket

        import uvicorn

        from .api import create_app

        host, _, port = self.cfg.api.listen.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]") or "0.0.0.0", int(port)))
        self.api_port = sock.getsockname()[1]
        # log_config=None: uvicorn's loggers propagate to Sentinel's handler (JSON, secrets
        # scrubbed) instead of printing plain-text tracebacks among the JSON lines
        config = uvicorn.Config(create_app(self), log_level="warning", lifespan="off", access_log=False,
                                log_config=None)
        self._api_server = uvicorn.Server(config)
        self._spawn(lambda: self._api_server.run(sockets=[sock]), "api")

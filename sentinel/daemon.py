"""The daemon: consume → decode → store → commit, scheduled revalidations, the notification outbox,
the HTTP API, and a visible lifecycle (starting → started → stopping → stopped).

Threads: the main thread owns the Kafka source (consumers are not thread-safe); with kafka-python
the consumer itself runs in a child process that reads ahead while this one decodes and stores
(sentinel/sources/process.py), with librdkafka in that library's own threads;
the scheduler (sentinel/scheduler.py) claims due revalidations from the store in one thread and
runs them in another; one thread drains the outbox; one renews this replica's heartbeat in the
store (sentinel/storage/replicas.py); uvicorn serves the API in another. On
SIGTERM/SIGINT the loop stops polling and ``shutdown`` runs its steps, each bounded: the running
revalidation gets a grace period, then is cut short (cancelled, its child processes killed, its
run marked abandoned and its window given back at once). A second signal skips the waits but not
the steps (uvicorn's force_exit); only a third exits at once.
"""
from __future__ import annotations

import datetime as dt
import enum
import gc
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from .config import Config, register_secrets
from .errors import MessageError, SentinelError, one_line
from .messages import (MAX_MESSAGE_BYTES, PairShape, decode_label, decode_traffic, decode_traffic_many, key_id,
                       quick_id, quick_ids, quick_pair, text_rows)
from .perf.memory import kill_children_now, terminate_children
from .revalidation import LoadedPair, Revalidator
from .sampling import Sampler
from .storage.repository import (LabelIn, QuarantineIn, SampleIn, StaleBar, Store, StoreUnavailable, in_sample,
                                 raw_text, value_sha256)

log = logging.getLogger("sentinel.daemon")

SOURCE_CLOSE_SECONDS = 6.0     # the Kafka source bounds its own close at 5 s
THREAD_JOIN_SECONDS = 2.0
WRITE_RETRY_MAX_SECONDS = 30.0   # cap of the backoff while the store takes no writes
GC_YOUNG_ALLOCATIONS = 50_000    # allocations between young collections, once started (Python's default: 700)


class RunState(enum.Enum):
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class Batch:
    """A polled batch read for the store: what to write, and how many traffic messages were left
    outside the sampling rate undecoded (``not_sampled``)."""
    samples: list[SampleIn] = field(default_factory=list)
    labels: list[LabelIn] = field(default_factory=list)
    bad: list[QuarantineIn] = field(default_factory=list)
    not_sampled: int = 0
    decoded: int = 0     # records decoded: labels, and the traffic the sampling decision kept
    #: per pair, (bar, n): n traffic messages inside the rate left undecoded as above the
    #: pair's window bar (``Store.ingest``'s ``above_bar``)
    above_bar: dict[str, tuple[float, int]] = field(default_factory=dict)


def read_batch(records: Any, shapes: dict[str, PairShape], sampler: Sampler, labels_topic: str | None,
               max_bytes: int = MAX_MESSAGE_BYTES, id_from: str = "body",
               bars: dict[str, float | None] | None = None) -> Batch:
    """Turn polled Kafka records into rows for the store. Never raises for a bad message: a
    ``MessageError`` is quarantined with its reason; anything else the decoder raises (a bug the
    format checks did not foresee) is quarantined as ``decoder_error`` with the exception's type,
    and logged, so no message can stop the loop. Raw texts are tokenized afterwards, together
    per pair (``_encode_texts``). ``max_bytes``: ``ingest.max_message_bytes``.

    The sampling decision comes first, for the whole batch, from the pair and id read without a
    full decode (``_pre_sample``; ``id_from``: ``kafka.id_from``): a traffic message outside the
    sampling rate is not decoded but counted (``Batch.not_sampled``), so a malformed message
    outside the sample is not quarantined. Labels are always decoded.

    ``bars``: per pair, the bar of its window the store last reported (``IngestResult.bars``).
    Without stratified sampling a message whose key is above it is left undecoded too, as
    one the full window would push out on arrival, and counted per pair in ``Batch.above_bar``
    for the store to check the bar still holds (``Store.ingest`` raises ``StaleBar`` when it does
    not: the caller then reads the batch again without bars). At rate 1 with the default window
    this is most of a busy topic's messages once the window is full."""
    out = Batch()
    traffic: list[Any] = []
    for r in records:
        if labels_topic is not None and r.topic == labels_topic:
            _decode_label(r, shapes, max_bytes, out)
        else:
            traffic.append(r)
    if sampler.stratify_by:   # the bars are the unstratified windows'
        bars = None
    key_mids, inside, pre_keys, out.above_bar = _pre_sample(traffic, shapes, sampler, max_bytes, id_from, bars)
    if inside is not None:
        out.not_sampled = len(traffic) - len(inside) - sum(n for _, n in out.above_bar.values())
    idx = range(len(traffic)) if inside is None else inside
    recs = [traffic[i] for i in idx]
    out.decoded = len(records) - len(traffic) + len(recs)
    decoded = _decode_all(recs, shapes, max_bytes)
    mids = [None if isinstance(m, Exception) else key_mids[i] if key_mids is not None and key_mids[i] is not None
            else m.id for i, m in zip(idx, decoded)]
    keys = iter(_sample_keys(sampler, [(m.pair, mid) for m, mid in zip(decoded, mids) if mid is not None],
                             None if pre_keys is None else [pre_keys[i] for i, mid in zip(idx, mids) if mid is not None]))
    stratified = bool(sampler.stratify_by)   # else every stratum is ""
    for r, m, mid in zip(recs, decoded, mids):
        if isinstance(m, MessageError):
            out.bad.append(_quarantined(r, m.reason, m.detail))
            continue
        if isinstance(m, Exception):   # the point: a decoder bug quarantines one message
            out.bad.append(_decoder_error(r, m))
            continue
        key = next(keys)
        try:
            if isinstance(key, BaseException):
                raise key
            out.samples.append(SampleIn(pair=m.pair, msg_id=mid, ts=m.ts, topic=r.topic, partition=r.partition,
                                        offset=r.offset, sample_key=key, inputs=m.inputs,
                                        attributes=m.attributes, label=m.label, extra=m.extra or None,
                                        stratum=sampler.stratum(m.attributes) if stratified else "", raw=r.value, text=m.text,
                                        stored=m.stored))
        except Exception as exc:   # noqa: BLE001 - as for the decoder: one message quarantined
            out.bad.append(_decoder_error(r, exc))
    if any(s.text is not None for s in out.samples):
        out.samples = _encode_texts(out.samples, shapes, sampler, out.bad)
    return out


def read_and_store(store: Store, records: Any, shapes: dict[str, PairShape], sampler: Sampler,
                   bars: dict[str, float | None], *, max_strata: int | None = None, labels_topic: str | None = None,
                   max_bytes: int = MAX_MESSAGE_BYTES, id_from: str = "body") -> tuple[Batch, Any]:
    """One polled batch decoded (``read_batch``, leaving out what the windows' ``bars`` say the
    store would push out) and stored with the sampler's rate and window; ``bars`` is then updated
    from the result for the next batch. When the store finds a bar no longer holds (``StaleBar``:
    a run claimed the window since, it was resized), the batch is read again in full and stored,
    and the bars forgotten. Raises what ``Store.ingest`` raises otherwise (nothing stored)."""
    for use in (bars, None):
        b = read_batch(records, shapes, sampler, labels_topic, max_bytes, id_from, use)
        try:
            res = store.ingest(b.samples, b.labels, b.bad, window=sampler.window, rate=sampler.rate,
                               max_strata=max_strata, not_sampled=b.not_sampled, above_bar=b.above_bar)
        except StaleBar as exc:
            log.debug("a window's bar moved; decoding the batch in full", extra={"error": str(exc)})
            bars.clear()
            continue
        bars.update(res.bars)
        return b, res
    raise AssertionError("a batch read without bars met a stale bar")


def _decode_label(r: Any, shapes: dict[str, PairShape], max_bytes: int, out: Batch) -> None:
    try:
        lm = decode_label(r.value, shapes, max_bytes)
        out.labels.append(LabelIn(lm.id, lm.label, r.topic, r.partition, r.offset, raw=r.value))
    except MessageError as exc:
        out.bad.append(_quarantined(r, exc.reason, exc.detail))
    except Exception as exc:   # noqa: BLE001 - as for traffic: one message quarantined, never the loop stopped
        out.bad.append(_decoder_error(r, exc))


def _pre_sample(records: list[Any], shapes: dict[str, PairShape], sampler: Sampler, max_bytes: int,
                id_from: str, bars: dict[str, float | None] | None = None
                ) -> tuple[list[str | None] | None, list[int] | None, list[Any] | None, dict[str, tuple[float, int]]]:
    """The sampling decision of a batch before decoding it: ``(ids from the keys, inside, keys,
    above_bar)``. The ids are per record, None where ``id_from`` is not ``key`` or the key cannot
    be one (the list itself None then); ``inside`` lists, in order, the positions of the records
    to decode: those inside the rate and below their pair's bar (``bars``), and those whose pair
    or id is not certain without the full decode (None: all of them; with every message kept,
    rate 1 and no bar, nothing is read twice). ``keys`` holds per record the ``(pair, id, key)``
    computed here (None where none was), for ``_sample_keys`` to reuse; ``above_bar`` is
    ``Batch.above_bar``. The ids are read for the whole batch (``quick_ids``) and the keys
    computed per pair in one call (``Sampler.keys``): the same numbers as ``Sampler.key``."""
    key_mids = [key_id(r.key) for r in records] if id_from == "key" else None
    # a bar at or above the rate leaves out nothing the rate does not
    bars = {p: b for p, b in (bars or {}).items() if b is not None and b < sampler.rate}
    if (sampler.rate >= 1.0 and not bars) or not records:
        return key_mids, None, None, {}
    if key_mids is None:
        quick = quick_ids([r.value for r in records], shapes, max_bytes)
    else:
        quick = [None if mid is None else _keyed(quick_pair(r.value, shapes), mid)
                 for r, mid in zip(records, key_mids)]
        if None in key_mids:    # no usable key: the id from the body, as without id_from
            quick = [q if mid is not None else quick_id(r.value, shapes, max_bytes)
                     for q, r, mid in zip(quick, records, key_mids)]
    if None not in quick and len(shapes) == 1:   # the common case: every id read, one pair
        by_pair = {next(iter(shapes)): (list(range(len(quick))), [q[1] for q in quick])}   # type: ignore[index]
        unsure: list[int] = []
    else:
        by_pair, unsure = _by_pair(quick)
    inside = unsure
    pre: list[Any] = [None] * len(records)
    above: dict[str, tuple[float, int]] = {}
    for pair, (idx, mids) in by_pair.items():
        keys = sampler.keys(pair, mids)
        bar = bars.get(pair)
        # in_sample: key < rate; above the bar (not at it: a redelivered sample at the bar is a duplicate)
        kept = np.flatnonzero(keys < sampler.rate if bar is None else keys <= bar).tolist()
        if bar is not None and (n := int(np.count_nonzero(keys < sampler.rate)) - len(kept)):
            above[pair] = (bar, n)
        for k, key in zip(kept, keys[kept].tolist()):
            pre[idx[k]] = (pair, mids[k], key)
        inside.extend(idx[k] for k in kept)
    inside.sort()
    return key_mids, inside, pre, above


def _decode_all(recs: list[Any], shapes: dict[str, PairShape], max_bytes: int) -> list[Any]:
    """Each record's message or the exception decoding it raised (``decode_traffic_many``); if
    the batch decoder itself fails (a bug in its batch-wide steps), each message on its own, so
    that no batch can stop the loop."""
    try:
        return decode_traffic_many([r.value for r in recs], [r.timestamp_ms for r in recs], shapes, max_bytes)
    except Exception:   # noqa: BLE001
        log.exception("the batch decoder failed; decoding the batch's messages one by one")
    out: list[Any] = []
    for r in recs:
        try:
            out.append(decode_traffic(r.value, shapes, timestamp_ms=r.timestamp_ms, max_bytes=max_bytes,
                                      encode_text=False))
        except Exception as exc:   # noqa: BLE001 - quarantined by the caller
            out.append(exc)
    return out


def _sample_keys(sampler: Sampler, ids: list[tuple[str, str]], known: list[Any] | None = None
                 ) -> list[float | BaseException]:
    """``sampler.key`` of each (pair, id), computed per pair in one call (``Sampler.keys``, the
    same numbers); where that call fails, each on its own, the exception in place of a key.
    ``known``: per (pair, id), a ``(pair, id, key)`` computed before the decode, or None; its key
    is taken where its pair and id are the decoded ones (``quick_id`` promises they are; a
    message it misread gets its key computed here)."""
    keys: list[float | BaseException] = [0.0] * len(ids)
    todo = list(range(len(ids)))
    if known is not None:
        todo = []
        for i, (q, k) in enumerate(zip(ids, known)):
            if k is not None and k[0] == q[0] and k[1] == q[1]:
                keys[i] = k[2]
            else:
                todo.append(i)
        if not todo:
            return keys
    by_pair, _ = _by_pair([ids[i] for i in todo])   # type: ignore[arg-type]
    for pair, (pos, mids) in by_pair.items():
        try:
            got: list[float | BaseException] = sampler.keys(pair, mids).tolist()
        except Exception:   # noqa: BLE001 - an id the hash cannot take is one message's fault
            got = [_key_or_error(sampler, pair, mid) for mid in mids]
        for i, k in zip(pos, got):
            keys[todo[i]] = k
    return keys


def _key_or_error(sampler: Sampler, pair: str, mid: str) -> float | BaseException:
    try:
        return sampler.key(pair, mid)
    except Exception as exc:   # noqa: BLE001
        return exc


def _by_pair(quick: list[tuple[str, str] | None]) -> tuple[dict[str, tuple[list[int], list[str]]], list[int]]:
    """Positions and ids of a batch per pair, and the positions whose pair or id is not certain."""
    by_pair: dict[str, tuple[list[int], list[str]]] = {}
    unsure: list[int] = []
    for i, q in enumerate(quick):
        if q is None:
            unsure.append(i)
            continue
        where = by_pair.get(q[0])
        if where is None:
            where = by_pair[q[0]] = ([], [])
        where[0].append(i)
        where[1].append(q[1])
    return by_pair, unsure


def _keyed(pair: str | None, mid: str) -> tuple[str, str] | None:
    return None if pair is None else (pair, mid)


def _decoder_error(r: Any, exc: BaseException) -> QuarantineIn:
    log.warning("decoder error: message quarantined", exc_info=exc,
                extra={"topic": r.topic, "partition": r.partition, "offset": r.offset})
    return _quarantined(r, "decoder_error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


def _encode_texts(samples: list[SampleIn], shapes: dict[str, PairShape], sampler: Sampler,
                  bad: list[QuarantineIn]) -> list[SampleIn]:
    """The inputs of text messages, made by each pair's tokenizer in one batch call (the library
    spreads a batch over its threads; one call per text pays its overhead each time). Only
    messages inside the sampling rate are tokenized: the store keeps no other (``sampler.rate``
    is the rate the store is given). A batch the tokenizer fails on is retried text by text,
    so one bad text is quarantined alone."""
    todo: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if s.text is not None and in_sample(s.sample_key, sampler.rate):
            todo.setdefault(s.pair, []).append(i)
    out: list[SampleIn | None] = list(samples)
    for pair, idx in todo.items():
        try:
            rows = text_rows(shapes[pair], [samples[i].text for i in idx])   # type: ignore[misc]
        except Exception:   # noqa: BLE001 - found again below, row by row
            rows = None
        for k, i in enumerate(idx):
            try:
                row = rows[k] if rows is not None else text_rows(shapes[pair], [samples[i].text])[0]  # type: ignore[list-item]
                out[i] = replace(samples[i], inputs=row)
            except MessageError as exc:
                bad.append(_quarantined(_Position(samples[i]), exc.reason, exc.detail))
                out[i] = None
            except Exception as exc:   # noqa: BLE001
                bad.append(_decoder_error(_Position(samples[i]), exc))
                out[i] = None
    return [s for s in out if s is not None]


class _Position:
    """A sample's record position and value, as ``_quarantined`` reads a record."""

    def __init__(self, s: SampleIn):
        self.topic, self.partition, self.offset, self.value = s.topic, s.partition, s.offset, s.raw


def _quarantined(r: Any, reason: str, detail: str) -> QuarantineIn:
    return QuarantineIn(r.topic, r.partition, r.offset, reason, detail, raw_text(r.value), value_sha256(r.value))


class Daemon:
    def __init__(self, app: Any, *, install_signals: bool = True,
                 source_factory: Callable[[Config], Any] | None = None, serve_api: bool | None = None,
                 on_run: Callable[[Any], None] | None = None):
        """``app``: the ``App`` to run (``sentinel.app.build(cfg)``); ``start`` resolves it. The daemon
        does not build its object graph: whoever starts it (the CLI, the demo, a test) does, once."""
        self.app = app
        cfg = self.cfg = self.app.cfg
        self.metrics = self.app.metrics
        self.install_signals = install_signals
        self.source_factory = source_factory
        self.serve_api = cfg.api.enabled if serve_api is None else serve_api
        self.on_run = on_run
        self.state = RunState.STARTING
        self.stop_event = threading.Event()
        self.store: Store | None = None
        self.pairs: dict[str, LoadedPair] = {}
        self.source: Any = None
        self.scheduler: Any = None     # sentinel.scheduler.RevalidationScheduler
        self.replica: Any = None       # sentinel.storage.replicas.Replica: this daemon's registration
        self.revalidator: Revalidator | None = None
        self.incidents: Any = None
        self.dispatcher: Any = None
        self.last_poll_ok: float = 0.0
        # what /readyz reads (sentinel/health.py); monotonic times, 0.0 = never
        self.last_write_ok: float = 0.0          # last successful store write
        self.write_error: str | None = None      # last whole-store write failure, cleared on success
        self.last_advance: float = 0.0           # last cycle that stored a batch or found nothing behind
        self.last_lag: int | None = None
        self.running: dict[str, float] = {}      # pair -> when its revalidation in progress started
        self.health: Any = None
        self._write_retry_s = 0.0
        self.api_port: int | None = None
        self._run_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._api_server: Any = None
        self._signals = 0
        self._forced = False              # a second signal: shutdown skips its waits
        self._cancel = self.app.cancel    # set when the revalidation in progress is given up
        self._bars: dict[str, float | None] = {}   # per pair, its window's bar as the store last gave it
        self.sampler = Sampler(cfg.sampling.rate, cfg.sampling.window, cfg.sampling.seed,
                               tuple(cfg.sampling.stratify_by))

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        register_secrets(cfg)   # every configured secret is masked in every log line from here on
        log.info("starting", extra={"config": cfg.source, "pairs": sorted(cfg.pairs)})
        # config problems first (notifiers, escalation policies): fail fast, before loading models
        app = self.app.load()
        self.pairs, self.store = app.pairs, app.store
        self._register_replica()
        self._restore_metrics()
        self.incidents, self.dispatcher, self.revalidator = app.incidents, app.dispatcher, app.revalidator
        self._start_scheduler()
        self.source = self.source_factory(cfg) if self.source_factory else self._kafka_source()
        self.source.start()
        self._start_health()
        self._spawn(self._outbox_loop, "outbox")
        # Evidently (5-7 s and ~290 MB to import) is not loaded here: each report's Evidently section is
        # built in a short-lived child process that starts with the run (sentinel.reports.EvidentlyProcess)
        if self.serve_api:
            self._start_api()
        if self.install_signals and threading.current_thread() is threading.main_thread():
            # signal.signal (not loop handlers): the main thread blocks in poll(), and a plain
            # handler that only sets an event lets poll() return and the loop drain.
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        # The start has made millions of long-lived objects (torch, the runtimes, pandas); each
        # full collection walked them all, ~0.2 s at a time, and the ingest loop's allocations set
        # one off every few seconds (12% of the loop's CPU at rate 0.1 on librdkafka). Frozen, they
        # are left out of every later collection; what is made after this is collected as usual.
        # A batch makes tens of thousands of objects that live until it is stored (records,
        # samples, their dicts); at Python's default (a young collection every 700 allocations,
        # an older one every 7,000) the collector walked each batch again and again: a fifth of
        # the loop's CPU at rate 1.0. Every 50,000, a batch is walked a few times; the garbage
        # between collections is a few MB.
        gc.freeze()
        gc.set_threshold(GC_YOUNG_ALLOCATIONS, *gc.get_threshold()[1:])
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
        return 1 if self._forced else 0

    def stop(self) -> None:
        self.stop_event.set()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # runs in the main thread between bytecodes, maybe inside shutdown: only set flags here
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info("signal received: stopping", extra={"signal": name})
            self.stop_event.set()
        elif self._signals == 2:
            log.warning("second signal: stopping without waiting", extra={"signal": name})
            self._forced = True
            if self._api_server is not None:
                self._api_server.force_exit = True
            self.stop_event.set()
        else:   # the shutdown itself is wedged (e.g. in a blocking call): leave no child behind
            log.warning("third signal: exiting now", extra={"signal": name})
            kill_children_now()
            os._exit(1)

    def shutdown(self) -> None:
        """Stop, each step bounded: stop claiming schedules, close the source, give the
        revalidation in progress ``revalidation.shutdown_grace_seconds``, then cut it short (cancel it, kill and
        reap child processes, mark its run abandoned and give its window back), release the
        schedule leases, stop the API and the side threads. After a second signal the waits are
        skipped, never the steps."""
        if self.state in (RunState.STOPPING, RunState.STOPPED):
            return
        self.state = RunState.STOPPING
        self.stop_event.set()
        t0 = time.monotonic()
        if self.scheduler is not None:
            self._step("scheduler stop", lambda: self.scheduler.stop(wait=0.0 if self._forced else THREAD_JOIN_SECONDS))
        closer = threading.Thread(target=self._close_source, name="sentinel-source-close", daemon=True)
        closer.start()
        closing_since = time.monotonic()
        if not self._wait_until(self._no_run_in_progress, self.cfg.revalidation.shutdown_grace_seconds):
            self._abandon_run_in_progress()
        # anything a finished run left, and the backstop for a probe started in a race
        self._step("child processes", lambda: terminate_children(grace=0.0 if self._forced else 1.0))
        if self.scheduler is not None:
            self._step("schedule leases", self.scheduler.release_all)
        if self.replica is not None:
            self._step("replica registration", self.replica.stop)
        if self._api_server is not None:
            self._api_server.should_exit = True
            self._api_server.force_exit = self._api_server.force_exit or self._forced
        # one deadline for the source close (started before the grace) and the side threads
        threads = [closer, *self._threads]
        if not self._wait_until(lambda: not any(t.is_alive() for t in threads),
                                max(THREAD_JOIN_SECONDS, SOURCE_CLOSE_SECONDS - (time.monotonic() - closing_since))):
            log.warning("exiting with threads still running", extra={"threads": [t.name for t in threads if t.is_alive()]})
        self.state = RunState.STOPPED
        log.info("stopped", extra={"seconds": round(time.monotonic() - t0, 2), "forced": self._forced})

    def _wait_until(self, done: Callable[[], bool], seconds: float) -> bool:
        """Wait up to ``seconds`` for ``done()``, in short sleeps so a second signal (which only
        sets a flag) ends the wait at once. Returns ``done()``."""
        deadline = time.monotonic() + seconds
        while not done():
            if self._forced or time.monotonic() >= deadline:
                return done()
            time.sleep(0.05)
        return True

    def _no_run_in_progress(self) -> bool:
        if self._run_lock.acquire(blocking=False):
            self._run_lock.release()
            return True
        return False

    def _abandon_run_in_progress(self) -> None:
        """Give up on the revalidation still running: its run is marked abandoned and its window
        given back now (not at the next start), then it is told to stop at its next cancel point
        and its memory probes are killed. Marking first means a late write of the revalidation,
        whatever it was about to record, changes nothing (Store.finish_run)."""
        log.warning("abandoning the revalidation in progress",
                    extra={"grace_seconds": 0 if self._forced else self.cfg.revalidation.shutdown_grace_seconds})
        active = self.revalidator.active_run if self.revalidator is not None else None
        marked = False
        if active is not None and self.store is not None:
            why = ("the daemon was stopped during this run (a second signal skipped the grace period)"
                   if self._forced else f"the daemon was stopped during this run and it did not finish within "
                                        f"the {self.cfg.revalidation.shutdown_grace_seconds:g} s shutdown grace")
            try:
                marked = self.store.finish_run(active[0], status="abandoned", n_samples=0, record=None, results=[],
                                               error=why + "; its samples went back to the window", release_window=True)
            except Exception:   # a live replica marks it (sentinel.storage.replicas)
                log.exception("could not mark the abandoned run", extra={"run_id": active[0]})
        self._cancel.set()
        killed = terminate_children(grace=0.0 if self._forced else 1.0)
        if marked and active is not None:
            self.metrics.runs.labels(active[1], "abandoned").inc()
            log.warning("run abandoned at shutdown", extra={"run_id": active[0], "pair": active[1],
                                                           "children_killed": killed})

    def _close_source(self) -> None:
        if self.source is not None:
            self._step("source close", self.source.close)

    @staticmethod
    def _step(name: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception:
            log.exception(f"{name} failed")

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
            try:
                b, res = self._read_and_store(records)
            except Exception as exc:   # noqa: BLE001 - StoreUnavailable, or a bug: never lose the batch
                self._store_down(records, exc)
                return 0
            self._stored(records, b, res)
        lag = self.source.lag()
        if lag is not None:
            self.metrics.consumer_lag.set(lag)
        self.last_lag = lag
        if records or not lag:   # stored and committed a batch, or nothing known to be behind
            self.last_advance = time.monotonic()
        return len(records)

    def _read_and_store(self, records: Any) -> tuple[Batch, Any]:
        shapes = {name: p.shape for name, p in self.pairs.items()}
        return read_and_store(self.store, records, shapes, self.sampler, self._bars,
                              max_strata=self.cfg.sampling.max_strata, labels_topic=self.cfg.kafka.labels_topic,
                              max_bytes=self.cfg.ingest.max_message_bytes, id_from=self.cfg.kafka.id_from)

    def _stored(self, records: Any, b: Batch, res: Any) -> None:
        """The batch is durably stored: note it for /readyz, commit its offsets, count it."""
        self.last_write_ok = time.monotonic()
        if self.write_error is not None:
            log.warning("store writable again", extra={"was": self.write_error})
        self.write_error, self._write_retry_s = None, 0.0
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
        m.messages_decoded.inc(b.decoded)
        m.samples_stored.inc(res.stored)
        quarantined = [*b.bad, *res.rejected]
        for q in quarantined:
            m.messages_quarantined.labels(q.reason).inc()
        if quarantined:
            log.info("quarantined", extra={"count": len(quarantined), "reasons": sorted({q.reason for q in quarantined})})
        for q in res.rejected:
            log.warning("the store refused a message: quarantined", extra={
                "topic": q.topic, "partition": q.partition, "offset": q.offset, "error": q.detail})

    def _store_down(self, records: Any, exc: Exception) -> None:
        """The store took none of the batch: nothing is quarantined for it and no offset moves;
        the batch is re-read after an exponential backoff (1 s doubling to 30 s)."""
        problem = exc.problem if isinstance(exc, StoreUnavailable) else one_line(exc)
        if isinstance(exc, StoreUnavailable):
            self.metrics.samples_stored.inc(exc.partial.stored)
        self.write_error = problem
        self._write_retry_s = min(WRITE_RETRY_MAX_SECONDS, max(1.0, self._write_retry_s * 2))
        log.error("store write failed; the batch will be re-read", exc_info=not isinstance(exc, StoreUnavailable),
                  extra={"error": problem, "records": len(records), "retry_in_seconds": self._write_retry_s})
        self.source.rewind(records)
        self.stop_event.wait(self._write_retry_s)

    # -- revalidation ----------------------------------------------------------------------------
    def revalidate(self, pair: str, trigger: str = "manual") -> Any:
        if self.revalidator is None or self.state is RunState.STOPPING:
            return None
        with self._run_lock:   # one revalidation at a time per process (bounded CPU on small hosts)
            if self.state in (RunState.STOPPING, RunState.STOPPED):
                return None    # shutdown began while this one waited for the lock
            self.running[pair] = time.monotonic()
            try:
                outcome = self.revalidator.run(pair, trigger=trigger)
            finally:
                self.running.pop(pair, None)
        if outcome is not None:
            self._refresh_incident_gauge()
            self._annotate(outcome)
            if self.on_run is not None:
                self.on_run(outcome)
        return outcome

    def _annotate(self, outcome: Any) -> None:
        """Grafana annotations for the run (``grafana.url``): failures are logged inside, and
        anything else is caught here, so Grafana never stops a run or the daemon."""
        try:
            annotator = self.app.grafana
            if annotator is not None:
                annotator.annotate_run(outcome)
        except Exception:
            log.exception("grafana annotations failed")

    def _start_scheduler(self) -> None:
        from .scheduler import RevalidationScheduler

        assert self.store is not None
        self.scheduler = RevalidationScheduler(
            self.store, {p: self.cfg.interval_for(p) for p in self.pairs},
            lambda pair: self.revalidate(pair, trigger="schedule"),
            misfire_grace=self.cfg.revalidation.misfire_grace_seconds, owner=self.replica.owner,
            lease_seconds=self.cfg.replicas.lease_seconds)
        self.scheduler.start()

    def next_run_times(self) -> dict[str, dt.datetime | None]:
        """Each pair's next scheduled run (None: not scheduled); {} before the scheduler starts."""
        if self.scheduler is None:
            return {}
        return self.scheduler.next_run_times()

    def _register_replica(self) -> None:
        """Register this daemon in the store's ``replicas`` table (sentinel.storage.replicas): on SQLite a
        second live daemon is refused here (ReplicaRefused); dead replicas' runs left 'running'
        (a SIGKILL: a clean stop marks its own) are marked abandoned, their samples back in the
        window, and their schedule leases dropped. Runs this daemon starts carry its owner id."""
        from .storage.replicas import Replica
        from .scheduler import owner_id

        assert self.store is not None
        self.replica = Replica(self.store, owner_id(), lease_seconds=self.cfg.replicas.lease_seconds,
                               api=self.cfg.api.listen if self.serve_api else None)
        self.replica.register()
        self.store.owner = self.replica.owner
        self.replica.start()

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
        from .storage.summaries import incident_counts
        try:
            self.metrics.set_incidents(incident_counts(self.store))
        except Exception:
            log.exception("incident gauge refresh failed")

    def _restore_metrics(self) -> None:
        """Publish what the store says before the first run (incidents, last statuses and values,
        run counters, last run times); a failing read is logged and never stops the start."""
        from .storage.summaries import metrics_state
        try:
            self.metrics.restore(metrics_state(self.store))
        except Exception:
            log.exception("metrics restore from the store failed")

    def _start_health(self) -> None:
        from .health import Health

        self.last_advance = time.monotonic()   # the stall clock starts with the source
        self.health = Health(self, self.cfg.health)
        self.health.bind(self.metrics)

    def _kafka_source(self) -> Any:
        """The source ``ingest.source`` names (``kafka`` by default), from ``SOURCES``."""
        from .sources.base import build_source

        return build_source(self.cfg)

    def _start_api(self) -> None:
        import socket

        import uvicorn


        host, _, port = self.cfg.api.listen.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]") or "0.0.0.0", int(port)))
        self.api_port = sock.getsockname()[1]
        # log_config=None: uvicorn's loggers propagate to Sentinel's handler (JSON, secrets
        # scrubbed) instead of printing plain-text tracebacks among the JSON lines
        config = uvicorn.Config(self.app.http_app(self), log_level="warning", lifespan="off", access_log=False,
                                log_config=None)
        self._api_server = uvicorn.Server(config)
        self._spawn(lambda: self._api_server.run(sockets=[sock]), "api")

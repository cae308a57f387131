"""The store (samples, labels, quarantine, runs); every read and write sits behind the storage package's classes.

SQLite by default (WAL, a busy timeout, foreign keys on), PostgreSQL via ``postgresql+psycopg://``.
The schema is created and upgraded by Alembic (``Store.migrate``), never by ``create_all``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import json
import sqlite3
import weakref
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

from sqlalchemy import exc as sa_exc
from sqlalchemy import (Connection, Engine, Text, and_, bindparam, create_engine, delete, event, func, insert, or_, select,
                        type_coerce, update)
from sqlalchemy.engine import make_url

from ..errors import SentinelError, one_line
from ..tensors import Row, as_row, encode_row
from . import tables as t
from .window import Sample, Window  # noqa: F401  (Sample: imported from here)
from .records import as_utc, utc_dict

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30000   # how long a SQLite write waits for another writer's lock
_PG_LOCK_NOT_AVAILABLE = "55P03"
MIGRATE_LOCK = 0x53_454E_5401   # pg_advisory_xact_lock key held while migrating


SAMPLES_READ_ROWS = 20000   # stored rows turned into samples at a time (run_samples)
#: the columns run_samples reads, in order (the joined label last)
_WINDOW_COLUMNS = ("id", "pair", "msg_id", "ts", "topic", "partition", "offset", "inputs", "attributes", "label",
                   "extra", "text", "joined_label")


def _window_part(window: "Window", got: Sequence[Any], parsed: dict[Any, Any]) -> None:
    """Add stored rows (tuples of :data:`_WINDOW_COLUMNS`: ``samples`` joined with ``labels``) to
    ``window``: inputs decoded in bulk into one array per input and layout (sentinel.tensors.Rows),
    JSON columns parsed once per distinct text and shared (:func:`_json_value`)."""
    (ids, pairs, msg_ids, ts, topics, partitions, offsets, inputs, attributes, labels, extra, texts,
     joined) = zip(*got)
    window.add(inputs, {"id": list(ids), "pair": list(pairs), "msg_id": list(msg_ids), "ts": [as_utc(v) for v in ts],
                        "topic": list(topics), "partition": list(partitions), "offset": list(offsets),
                        "attributes": [_json_value(v, parsed) or {} for v in attributes],
                        "label": [v if v is not None else j for v, j in zip(labels, joined)],
                        "extra": [_json_value(v, parsed) for v in extra], "text": list(texts)})


def _json_value(value: Any, parsed: dict[Any, Any]) -> Any:
    """A JSON column's value read as text, parsed once per distinct text (``parsed`` keeps them:
    callers share the object and must not change it). A value the driver parsed already is
    returned as it is."""
    if not isinstance(value, str):
        return value
    try:
        return parsed[value]
    except KeyError:
        got = parsed[value] = json.loads(value)
        return got


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(slots=True)
class SampleIn:
    pair: str
    msg_id: str
    ts: dt.datetime
    topic: str
    partition: int
    offset: int
    sample_key: float
    inputs: Row                  # input name -> typed array (sentinel.tensors), stored with encode_row
    attributes: dict[str, str]
    label: str | None = None
    extra: dict[str, Any] | None = None
    stratum: str = ""
    raw: bytes | str | None = field(default=None, repr=False, compare=False)   # the record's value
    text: str | None = None      # the raw text the inputs were made from (pairs with a tokenizer)
    # ``inputs`` in their stored form (stored_inputs) when the decoder made it already; None: made here
    stored: bytes | None = field(default=None, repr=False, compare=False)


def in_sample(sample_key: float, rate: float) -> bool:
    """The sampling decision (sentinel.sampling): a message whose key is below ``rate`` is kept.
    The store applies it when it writes (:meth:`Store.ingest`); anyone predicting what the store
    keeps asks here."""
    return sample_key < rate


OTHER_STRATUM = "(other)"
STRATUM_LEN = 255    # samples.stratum is varchar(255)
RAW_LEN = 8000       # characters of a quarantined message's raw text kept


@dataclass(frozen=True)
class LabelIn:
    msg_id: str
    label: str
    topic: str
    partition: int
    offset: int
    raw: bytes | str | None = field(default=None, repr=False, compare=False)   # the record's value


@dataclass(frozen=True)
class QuarantineIn:
    """A message set aside. Rows are unique on (topic, partition, offset, value_sha256): a
    redelivered record is kept once, a different message at a reused offset (a re-created topic,
    a restarted in-memory broker) is kept beside the old one. ``value_sha256`` is the sha256 of
    the record's exact value bytes (:func:`value_sha256`); when empty it is computed from ``raw``."""
    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    raw: str
    value_sha256: str = ""


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    not_sampled: int = 0     # outside the sampling rate
    evicted: int = 0         # pushed out of a full window by a sample with a smaller key
    quarantined: int = 0
    labels: int = 0
    rejected: list[QuarantineIn] = field(default_factory=list)   # refused by the store, quarantined
    #: per pair written to, its unstratified window's bar after this batch: the key at or above
    #: which a new sample would be pushed out on arrival (the window's largest pending key), None
    #: when that window is not full. The caller may leave messages above it undecoded in the
    #: next batch (``Store.ingest``'s ``above_bar``).
    bars: dict[str, float | None] = field(default_factory=dict)

    def add(self, other: "IngestResult") -> None:
        for name in ("stored", "duplicates", "not_sampled", "evicted", "quarantined", "labels"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected.extend(other.rejected)
        self.bars.update(other.bars)


class StaleBar(SentinelError):
    """``Store.ingest`` was told messages were left out as above a pair's window bar, and the
    window's bar is no longer at or below the one they were measured against (a run claimed the
    window, samples were released to it, the window was resized): some of them could enter it now.
    Nothing was written; decode the batch in full and ingest it again."""

    def __init__(self, pair: str, bar: float, now: float | None):
        self.pair, self.bar, self.now = pair, bar, now
        super().__init__(f"pair {pair!r}: messages were left out above the key {bar!r}, and the window's "
                         f"bar is now {'not full' if now is None else repr(now)}")


class StoreUnavailable(SentinelError):
    """The store takes no writes at all (connection refused, read-only, locked): retry later,
    nothing was set aside. ``problem`` is the database's error, one line; ``partial`` what was
    stored before it failed (those rows are duplicates when the batch is written again)."""

    def __init__(self, problem: str):
        self.problem = problem
        self.partial = IngestResult()
        super().__init__(f"store unavailable: {problem}")


@dataclass(frozen=True)
class ScheduleClaim:
    """A scheduled revalidation claimed by one daemon: run ``pair`` now (the run that was due at
    ``due_at``, missed ones coalesced into it); the schedule already points at ``next_run_at``."""
    pair: str
    due_at: dt.datetime
    next_run_at: dt.datetime


@dataclass(frozen=True)
class MissedRun:
    """A due run that was not claimed but passed over: ``reason`` is ``misfire`` (more than the
    misfire grace late) or ``running`` (this daemon still holds the pair's previous run)."""
    pair: str
    due_at: dt.datetime
    late_seconds: float
    reason: str


class Store:
    def __init__(self, engine: Engine, owner: str | None = None):
        self.engine = engine
        # the replica this process runs as (sentinel.storage.replicas); runs it starts carry it, so a
        # live replica can tell its own runs in progress from a dead one's
        self.owner = owner

    # -- lifecycle -----------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # replicas starting together: one migrates, the others wait here, then find the
                # schema current (SQLite serialises writers by itself)
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATE_LOCK})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def dispose(self) -> None:
        self.engine.dispose()

    # -- ingest --------------------------------------------------------------------------------
    def ingest(self, samples: Sequence[SampleIn], labels: Sequence[LabelIn], quarantined: Sequence[QuarantineIn],
               *, window: int, rate: float, max_strata: int | None = None, not_sampled: int = 0,
               above_bar: dict[str, tuple[float, int]] | None = None) -> IngestResult:
        """Store one polled batch; the caller commits Kafka offsets after this returns.
        ``not_sampled``: traffic messages of the batch the caller left out, undecoded, as outside
        the sampling rate (counted in the result as the empty samples for them would be).
        ``above_bar``: per pair, ``(bar, n)``: ``n`` messages inside the rate the caller left out,
        undecoded, because their keys were above ``bar``, a bar an earlier result gave
        (``IngestResult.bars``; unstratified samples only). They are counted as evicted, which
        they would be, when the pair's window is full now with its largest pending key at or
        below ``bar``, checked in the batch's own transaction (each sample entering a full window
        pushes one out, so its bar only falls while the batch is written). Otherwise
        :class:`StaleBar` is raised and nothing is written.

        Duplicates (same pair and id) are dropped; each pair keeps a bottom-k window: the
        ``window`` pending samples with the smallest ``sample_key`` (a seeded hash of the id), which
        is a uniform random sample of everything seen, and gives a redelivered message the same
        decision it got the first time. With stratified sampling the window applies per stratum
        (``SampleIn.stratum``), so a rare group keeps its samples beside a common one; beyond
        ``max_strata`` distinct strata in a window, new ones share the stratum ``(other)``.

        The batch is written in one transaction. If the store refuses it and is otherwise
        writable (a rolled-back probe write succeeds), the batch is split in halves until the
        refused rows are found: each is quarantined as ``store_rejected`` with the database's error
        (``IngestResult.rejected``) and the rest are stored. Every part re-reads what is stored, so
        the outcome is the one sequential writes would give. A store that takes no writes at all
        (connection refused, read-only, locked) raises :class:`StoreUnavailable` instead: nothing
        is set aside, and the caller re-reads the batch later."""
        items: list[Any] = [*quarantined, *labels, *samples]
        opts = (window, rate, max_strata)
        check: list[dict[str, tuple[float, int]] | None] = [dict(above_bar) if above_bar else None]
        try:
            res = self._write(items, opts, check)
            res.not_sampled += not_sampled
            return res
        except StaleBar:
            raise
        except Exception as exc:   # noqa: BLE001 - classified below, never swallowed
            first = exc
        problem = self._write_problem()
        if problem is not None or not items:
            raise StoreUnavailable(problem or one_line(first)) from first
        res = IngestResult()
        try:
            self._split(items, opts, res, check)
        except StoreUnavailable as exc:
            exc.partial = res
            raise
        res.not_sampled += not_sampled
        return res

    def _split(self, items: list[Any], opts: tuple[int, float, int | None], res: IngestResult,
               check: list[Any]) -> None:
        """``items`` written in parts; ``check``: the ``above_bar`` to verify, with the first part
        that goes in (emptied then)."""
        try:
            res.add(self._write(items, opts, check))
            return
        except StaleBar:
            raise
        except Exception as exc:   # noqa: BLE001
            error = exc
        if len(items) > 1:
            mid = len(items) // 2
            self._split(items[:mid], opts, res, check)
            self._split(items[mid:], opts, res, check)
            return
        try:   # once more alone: a lost connection or a race with another replica is not the row's fault
            res.add(self._write(items, opts, check))
            return
        except StaleBar:
            raise
        except Exception as exc:   # noqa: BLE001
            error = exc
        if is_disconnect(error):   # the store went away while the batch was split, or this row ends connections
            written, error = self._rewrite_after_disconnect(items, opts, error, check)
            if written is not None:
                res.add(written)
                return
        q = rejected_row(items[0], error)
        try:
            # the store taking this quarantine row is what shows it is up and refused only that row
            res.add(self._write([q], opts, check))   # counted quarantined there
        except StaleBar:
            raise
        except Exception as exc:   # noqa: BLE001
            raise StoreUnavailable(f"{one_line(error)}; and the quarantine write failed: {one_line(exc)}") from exc
        res.rejected.append(q)

    def _rewrite_after_disconnect(self, items: list[Any], opts: tuple[int, float, int | None], error: BaseException,
                                  check: list[Any]) -> tuple[Any, BaseException]:
        """One row whose write lost the connection twice: (its IngestResult, None) when it goes
        in now; (None, the error) when the row, not the store, ends the connection: the store
        takes a probe write, the row's third write fails again, and a probe after that works
        too. Such a row would otherwise be retried forever and ingest would never move past it;
        it is set aside like a refused row (raw kept). A store that is really going up and down
        fails a probe instead: StoreUnavailable, nothing set aside."""
        for probe in range(2):
            if (problem := self._write_problem()) is not None:
                raise StoreUnavailable(f"{one_line(error)}; then {problem}") from error
            if probe == 0:
                try:
                    return self._write(items, opts, check), error
                except StaleBar:
                    raise
                except Exception as exc:   # noqa: BLE001
                    error = exc
                if not is_disconnect(error):
                    break
        return None, error

    def _write_problem(self) -> str | None:
        """None when the store takes writes (:meth:`probe_writes`), else why not."""
        try:
            self.probe_writes()
        except Exception as exc:   # noqa: BLE001
            return one_line(exc)
        return None

    def probe_writes(self, timeout_s: float | None = None) -> None:
        """Raise when the store refuses writes; return when it takes them. Leaves nothing behind.

        A quarantine row is inserted in a transaction that is rolled back: that needs the write
        permission ingest needs, on every backend, so it catches a read-only database
        (``default_transaction_read_only``, a hot standby), revoked privileges and anything
        else that refuses writes, the way the next ingest would meet it (``SHOW
        transaction_read_only`` would only catch the first). With ``timeout_s`` (readiness) it
        is bounded: statement and lock timeouts on PostgreSQL, a busy wait of at most 1 s on
        SQLite instead of the connection's 30 s; and a store that is only busy (a lock another
        writer holds past the bound: a migration, another replica's probe) counts as writable.
        Without it the engine's own timeouts apply and a busy store is an error (ingest's
        question is whether a write goes through now)."""
        backend = self.engine.url.get_backend_name()
        ms = max(1, int(timeout_s * 1000)) if timeout_s is not None else None
        with self.engine.connect() as conn:
            if ms is not None and backend == "sqlite":   # on the driver's connection: no transaction begun
                conn.connection.driver_connection.execute(f"PRAGMA busy_timeout = {min(ms, 1000)}")
            tx = conn.begin()
            try:
                if ms is not None and backend == "postgresql":
                    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, ms // 2)}")
                conn.execute(insert(t.quarantine).values(
                    topic="(probe)", partition=-1, offset=-1, reason="probe", detail="", raw="",
                    value_sha256="", stored_at=utcnow()))
            except Exception as exc:
                if ms is None or not _only_busy(exc):
                    raise
            finally:
                tx.rollback()
                if ms is not None and backend == "sqlite":
                    conn.connection.driver_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")

    def _write(self, items: Sequence[Any], opts: tuple[int, float, int | None],
               check: list[Any] | None = None) -> IngestResult:
        """One transaction: quarantine rows, labels, then samples (per pair, window applied), each
        kind in a bounded number of statements (a multi-row INSERT, not one per row). ``check``
        holds ``ingest``'s ``above_bar`` (or None), verified in this transaction and emptied once
        it commits."""
        above: dict[str, tuple[float, int]] = (check[0] if check else None) or {}
        res = IngestResult()
        now = utcnow()
        by_pair: dict[str, list[SampleIn]] = {}
        quarantine: list[QuarantineIn] = []
        labels: list[LabelIn] = []
        for item in items:
            if isinstance(item, QuarantineIn):
                quarantine.append(item)
            elif isinstance(item, LabelIn):
                labels.append(item)
            else:
                by_pair.setdefault(item.pair, []).append(item)
        with self.engine.begin() as conn:
            _put_quarantine(conn, quarantine, now)
            _put_labels(conn, labels, now)
            res.quarantined, res.labels = len(quarantine), len(labels)
            for pair, batch in by_pair.items():
                _put_samples(conn, pair, batch, opts, now, res, above.get(pair))
            for pair in above.keys() - by_pair.keys():
                _check_bar(conn, pair, opts[0], above[pair], res)
        if check:
            check[0] = None
        return res

    def pending_count(self, pair: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(t.samples).where(
                and_(t.samples.c.pair == pair, t.samples.c.run_id.is_(None)))).scalar_one()

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(t.metadata.tables[table])).scalar_one()

    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.quarantine).order_by(t.quarantine.c.id.desc()).limit(limit))
            return [utc_dict(r) for r in rows]

    # -- runs ----------------------------------------------------------------------------------
    def create_run(self, pair: str, trigger: str, record: dict[str, Any]) -> int:
        with self.engine.begin() as conn:
            return conn.execute(insert(t.runs).values(
                pair=pair, trigger=trigger, status="running", started_at=utcnow(), n_samples=0,
                record=record, owner=self.owner)).inserted_primary_key[0]

    def claim_window(self, pair: str, run_id: int) -> Window:
        """Attach the pair's pending samples to ``run_id`` and return them (labels joined by id).
        Claimed samples stay with that run: they are its snapshot, and ``sentinel replay`` re-reads them.
        Nothing is claimed for a run that is no longer 'running' (the daemon marked it abandoned
        while it started): its samples would never be given back."""
        with self.engine.begin() as conn:
            if not _lock_running(conn, run_id):
                return []
            conn.execute(update(t.samples).where(and_(t.samples.c.pair == pair, t.samples.c.run_id.is_(None)))
                         .values(run_id=run_id))
            _count_pending(conn, _run_strata(conn, run_id, pair), -1)
        return self.run_samples(run_id, pair)

    def release_window(self, run_id: int) -> None:
        """Give a failed run's samples back to the pending window."""
        with self.engine.begin() as conn:
            _release(conn, run_id)

    def run_samples(self, run_id: int, pair: str | None = None) -> Window:
        """The samples claimed by ``run_id`` (of ``pair``: the run's own when not given), ordered
        by sample key, held by column (a Window). The pair is in the query so that it reads the
        run's rows through the (pair, run_id) index: by run id alone, it scanned every sample
        ever stored (claimed samples are kept with their runs), a cost that grew with each run."""
        if pair is None:
            with self.engine.connect() as conn:
                pair = conn.execute(select(t.runs.c.pair).where(t.runs.c.id == run_id)).scalar()
        with self.engine.connect() as conn:
            # the JSON columns as stored text, parsed once per distinct value (a window's attributes
            # and extra fields repeat: {"region": "eu"}); PostgreSQL's driver may hand them parsed
            c = t.samples.c
            cols = [type_coerce(c[n], Text).label(n) if n in ("attributes", "extra") else c[n]
                    for n in _WINDOW_COLUMNS[:-1]]
            q = (select(*cols, t.labels.c.label.label("joined_label"))
                 .select_from(t.samples.outerjoin(t.labels, t.labels.c.msg_id == t.samples.c.msg_id))
                 .where(and_(t.samples.c.pair == pair, t.samples.c.run_id == run_id)).order_by(t.samples.c.sample_key))
            parsed: dict[Any, Any] = {}
            out = Window()
            for part in conn.execute(q).partitions(SAMPLES_READ_ROWS):   # never every raw row at once
                _window_part(out, part, parsed)
        return out

    def joined_labels(self, pair: str, run_id: int) -> dict[int, str]:
        """The labels joined by message id to the samples of ``pair``'s run ``run_id`` that carry
        none of their own (sample id -> label): what changes in a claimed window once claimed."""
        s, lab = t.samples, t.labels
        q = (select(s.c.id, lab.c.label).select_from(s.join(lab, lab.c.msg_id == s.c.msg_id))
             .where(and_(s.c.pair == pair, s.c.run_id == run_id, s.c.label.is_(None))))
        with self.engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(q)}

    def accepted_runs(self, pair: str, before_run: int | None = None, *, limit: int = 1) -> list[int]:
        """Ids of the newest accepted runs of ``pair`` (older than ``before_run`` when given), newest
        first: their samples are the reference window of the next run. Accepted: status pass or
        warn, or insufficient_data with at least one passing result (the very first run of a pair
        has no reference, so its drift checks say insufficient_data; nothing in it failed)."""
        passed = select(t.check_results.c.id).where(and_(t.check_results.c.run_id == t.runs.c.id,
                                                          t.check_results.c.status == "pass")).exists()
        q = select(t.runs.c.id).where(and_(t.runs.c.pair == pair, or_(
            t.runs.c.status.in_(("pass", "warn")), and_(t.runs.c.status == "insufficient_data", passed))))
        if before_run is not None:
            q = q.where(t.runs.c.id < before_run)
        with self.engine.connect() as conn:
            return list(conn.execute(q.order_by(t.runs.c.id.desc()).limit(limit)).scalars())

    def finish_run(self, run_id: int, *, status: str, n_samples: int, record: dict[str, Any] | None,
                   results: Sequence[dict[str, Any]], report_path: str | None = None, error: str | None = None,
                   release_window: bool = False) -> bool:
        """Record a run's outcome, only while it is still 'running': whoever finishes it first
        (the revalidation, or the daemon abandoning it at shutdown) wins, and the other's late
        write changes nothing. ``release_window`` gives its samples back in the same transaction.
        ``record=None`` keeps the stored record. Returns whether this call finished the run."""
        values: dict[str, Any] = dict(status=status, finished_at=utcnow(), n_samples=n_samples,
                                      report_path=report_path, error=error)
        if record is not None:
            values["record"] = record
        with self.engine.begin() as conn:
            if not _lock_running(conn, run_id):
                return False
            conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(**values))
            if release_window:
                _release(conn, run_id)
            if results:
                conn.execute(insert(t.check_results), [{**r, "run_id": run_id} for r in results])
        return True

    def accept_perf(self, run_id: int, *, actor: str, reason: str | None) -> dict[str, Any]:
        """Mark a finished run's performance as accepted (it joins the pair's perf history and
        its candidate becomes the one later candidates are timed against); returns the updated
        perf record. Raises NotFoundError / StateError naming what is wrong."""
        from ..errors import NotFoundError, StateError
        with self.engine.begin() as conn:
            row = conn.execute(select(t.runs).where(t.runs.c.id == run_id).with_for_update()).first()
            if row is None:
                raise NotFoundError("run", run_id)
            if row.status in ("running", "error"):
                raise StateError(f"run {run_id} is {row.status}: only a finished run can be accepted")
            record = dict(row.record or {})
            perf = record.get("perf")
            if not perf and isinstance(record.get("candidates"), dict):
                raise StateError(f"run {run_id} judged several candidates: each one's performance joins its own "
                                 "history when its perf_history check passes; accepting one by hand is not supported")
            if not perf or not perf.get("timings"):
                raise StateError(f"run {run_id} has no performance measurement to accept (perf.enabled was false?)")
            if perf.get("accepted"):
                return perf
            record["perf"] = {**perf, "accepted": True,
                              "accepted_by": {"actor": actor, "reason": reason, "at": utcnow().isoformat()}}
            conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(record=record))
            return record["perf"]

    def set_report_path(self, run_id: int, path: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(report_path=path))

    def set_record_entry(self, run_id: int, key: str, value: Any) -> None:
        """Set one top-level ``key`` of a finished run's record (its diagnosis: sentinel.diagnose.auto),
        keeping the rest; the row is locked so a concurrent accept is not lost. NotFoundError
        when there is no such run."""
        from ..errors import NotFoundError
        with self.engine.begin() as conn:
            row = conn.execute(select(t.runs.c.record).where(t.runs.c.id == run_id).with_for_update()).first()
            if row is None:
                raise NotFoundError("run", run_id)
            conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(record={**(row.record or {}), key: value}))

    def get_run(self, run_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.runs).where(t.runs.c.id == run_id)).first()
            if row is None:
                return None
            run = utc_dict(row)
            run["results"] = [utc_dict(r) for r in conn.execute(
                select(t.check_results).where(t.check_results.c.run_id == run_id).order_by(t.check_results.c.id))]
            return run

    def list_runs(self, pair: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            q = select(t.runs).order_by(t.runs.c.id.desc()).limit(limit)
            if pair:
                q = q.where(t.runs.c.pair == pair)
            return [utc_dict(r) for r in conn.execute(q)]

    def runs_of_candidate(self, pair: str, sha256: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest runs of ``pair`` whose record names candidate file ``sha256``
        (``record.models.candidate.sha256``, or in a pair with several candidates
        ``record.models.by_sha256``: then ``candidate`` is that file's candidate name, else None),
        newest first, without their records: what the rollout gate (sentinel/gate.py) reads,
        filtered in SQL (a run record is ~16 kB)."""
        r = t.runs.c
        named = r.record["models"]["by_sha256"][sha256].as_string()
        q = (select(r.id, r.pair, r.status, r.n_samples, r.started_at, r.finished_at, r.error, named.label("candidate"))
             .where(and_(r.pair == pair, or_(r.record["models"]["candidate"]["sha256"].as_string() == sha256,
                                             named.is_not(None))))
             .order_by(r.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [utc_dict(row) for row in conn.execute(q)]

    def run_summaries(self, pair: str | None = None, limit: int = 50, *, before: int | None = None,
                      run_id: int | None = None, ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Runs without their (large) record, newest first: ``before`` pages on by id; ``run_id``
        or ``ids`` picks runs. Each has ``counts``: its results by status."""
        r, c = t.runs, t.check_results
        q = select(*[col for col in r.c if col.name != "record"]).order_by(r.c.id.desc())
        if run_id is not None:
            q = q.where(r.c.id == run_id)
        elif ids is not None:
            q = q.where(r.c.id.in_(list(ids)))
        else:
            q = q.limit(limit)
        if pair:
            q = q.where(r.c.pair == pair)
        if before is not None:
            q = q.where(r.c.id < before)
        with self.engine.connect() as conn:
            out = [utc_dict(row) for row in conn.execute(q)]
            if out:
                counts = conn.execute(select(c.c.run_id, c.c.status, func.count()).where(
                    c.c.run_id.in_([x["id"] for x in out])).group_by(c.c.run_id, c.c.status))
                by: dict[int, dict[str, int]] = {}
                for rid, status, n in counts:
                    by.setdefault(rid, {})[status] = n
                for x in out:
                    x["counts"] = by.get(x["id"], {})
        return out

    def report_file(self, run_id: int) -> str | None:
        """The path of run ``run_id``'s report file if it is there (None: no report written, or
        the file is gone); NotFoundError for an unknown run."""
        from ..errors import NotFoundError
        with self.engine.connect() as conn:
            row = conn.execute(select(t.runs.c.report_path).where(t.runs.c.id == run_id)).first()
        if row is None:
            raise NotFoundError("run", run_id)
        return row.report_path if row.report_path and Path(row.report_path).is_file() else None

    def traffic_range(self, run_id: int) -> tuple[dt.datetime | None, dt.datetime | None]:
        """The earliest and latest traffic timestamps among the samples run ``run_id`` used."""
        sm = t.samples
        with self.engine.connect() as conn:
            lo, hi = conn.execute(select(func.min(sm.c.ts), func.max(sm.c.ts)).where(sm.c.run_id == run_id)).one()
        return as_utc(lo), as_utc(hi)

    def count_runs(self, pair: str | None = None) -> int:
        q = select(func.count()).select_from(t.runs)
        if pair:
            q = q.where(t.runs.c.pair == pair)
        with self.engine.connect() as conn:
            return conn.execute(q).scalar_one()

    def check_series(self, pair: str, runs: int = 30) -> dict[str, Any]:
        """Each (check, slice)'s value over the pair's last ``runs`` finished runs, oldest first:
        ``{"runs": [ids], "series": {(check, slice): [(run_id, value, status)]}}``."""
        r, c = t.runs, t.check_results
        with self.engine.connect() as conn:
            ids = list(conn.execute(select(r.c.id).where(and_(r.c.pair == pair, r.c.status.not_in(("running",))))
                                    .order_by(r.c.id.desc()).limit(runs)).scalars())[::-1]
            rows = conn.execute(select(c.c.run_id, c.c.check, c.c.slice, c.c.value, c.c.status)
                                .where(c.c.run_id.in_(ids)).order_by(c.c.run_id)) if ids else []
            series: dict[tuple[str, str], list[tuple[int, float | None, str]]] = {}
            for rid, check, slice_, value, status in rows:
                series.setdefault((check, slice_), []).append((rid, value, status))
        return {"runs": ids, "series": series}

    def last_runs(self) -> dict[str, dict[str, Any]]:
        """Each pair's newest run (summary, no record)."""
        r = t.runs
        with self.engine.connect() as conn:
            newest = select(r.c.pair, func.max(r.c.id).label("id")).group_by(r.c.pair).subquery()
            ids = [row.id for row in conn.execute(select(newest.c.id))]
        return {x["pair"]: x for x in self.run_summaries(ids=ids)} if ids else {}

    def accepted_perf(self, pair: str, limit: int = 20, scan: int = 500) -> list[dict[str, Any]]:
        """The pair's accepted performance records (newest first, within its last ``scan`` runs):
        run id, who accepted it, when and why, and the candidate's sha256. The database reads
        the few fields out of each record (a record is tens of KB: decoding 500 of them in Python
        took most of a second)."""
        r = t.runs
        rec = r.c.record
        recent = select(r.c.id).where(r.c.pair == pair).order_by(r.c.id.desc()).limit(scan).subquery()
        q = (select(r.c.id, rec[("perf", "accepted_by")].label("by"),
                    rec[("models", "candidate", "sha256")].as_string().label("sha"))
             .where(r.c.id.in_(select(recent.c.id)), rec[("perf", "accepted")].as_boolean().is_(True))
             .order_by(r.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [{"run_id": rid, "accepted_by": by if isinstance(by, dict) else {}, "candidate_sha256": sha}
                    for rid, by, sha in conn.execute(q)]

    # -- schedules -------------------------------------------------------------------------------
    def sync_schedules(self, intervals: dict[str, float], now: dt.datetime | None = None
                       ) -> dict[str, dt.datetime | None]:
        """Make the stored schedules match the configured pairs: a new pair, or one whose interval
        changed, is first due one interval from now; an unchanged one keeps its next run time (so
        a restart does not push it back); a row carried over without an interval adopts the
        configured one and keeps its time; pairs no longer configured lose their schedule."""
        now = now or utcnow()
        s = t.schedules
        with self.engine.begin() as conn:
            rows = {r.pair: r for r in conn.execute(select(s).with_for_update())}
            gone = [p for p in rows if p not in intervals]
            if gone:
                conn.execute(delete(s).where(s.c.pair.in_(gone)))
            for pair, interval in intervals.items():
                row = rows.get(pair)
                fresh = now + dt.timedelta(seconds=interval)
                if row is None:   # FOR UPDATE locks no missing row: replicas starting together
                    # each found none for a new pair; the first insert wins, the others keep it
                    conn.execute(_insert_or_keep(conn, s).values(pair=pair, interval_seconds=interval,
                                                                 next_run_at=fresh, updated_at=now))
                elif row.interval_seconds != interval or row.next_run_at is None:
                    keep = row.interval_seconds is None and row.next_run_at is not None
                    conn.execute(update(s).where(s.c.pair == pair).values(
                        interval_seconds=interval, next_run_at=row.next_run_at if keep else fresh, updated_at=now))
        return self.schedule_times()

    def schedule_times(self) -> dict[str, dt.datetime | None]:
        """Each scheduled pair's next run time."""
        with self.engine.connect() as conn:
            return {r.pair: as_utc(r.next_run_at) for r in conn.execute(select(t.schedules.c.pair, t.schedules.c.next_run_at))}

    def claim_due_schedules(self, owner: str, *, misfire_grace: float, lease_seconds: float,
                            now: dt.datetime | None = None) -> tuple[list[ScheduleClaim], list[MissedRun]]:
        """Claim every due schedule for ``owner``: advance ``next_run_at`` past now (missed runs
        coalesce into one) and lease the pair for ``lease_seconds``. A run more than
        ``misfire_grace`` seconds late is passed over, as is a due run of a pair ``owner`` still
        holds; a pair leased by another owner is left to it until the lease lapses.

        Due rows are read with FOR UPDATE SKIP LOCKED (PostgreSQL: concurrent claimers skip each
        other's rows; SQLite ignores it) and each is taken by an update conditional on the values
        read, so a row is claimed once even where no row lock exists."""
        now = now or utcnow()
        s = t.schedules
        claims: list[ScheduleClaim] = []
        missed: list[MissedRun] = []
        with self.engine.begin() as conn:
            due_q = (select(s).where(and_(s.c.next_run_at <= now, s.c.interval_seconds.is_not(None),
                                          or_(s.c.lease_until.is_(None), s.c.lease_until < now, s.c.lease_owner == owner)))
                     .order_by(s.c.next_run_at).with_for_update(skip_locked=True))
            for row in conn.execute(due_q).all():
                due, nxt = _coalesce(as_utc(row.next_run_at), row.interval_seconds, now)
                late = (now - due).total_seconds()
                held = row.lease_owner == owner and row.lease_until is not None and as_utc(row.lease_until) >= now
                values: dict[str, Any] = {"next_run_at": nxt, "updated_at": now}
                if held or late > misfire_grace:
                    outcome: Any = MissedRun(row.pair, due, late, "running" if held else "misfire")
                else:
                    values.update(lease_owner=owner, lease_until=now + dt.timedelta(seconds=lease_seconds),
                                  last_started_at=now)
                    outcome = ScheduleClaim(row.pair, due, nxt)
                taken = conn.execute(update(s).where(and_(
                    s.c.pair == row.pair, s.c.next_run_at == row.next_run_at, _same(s.c.lease_owner, row.lease_owner),
                    _same(s.c.lease_until, row.lease_until))).values(**values)).rowcount == 1
                if taken:
                    (claims if isinstance(outcome, ScheduleClaim) else missed).append(outcome)
        return claims, missed

    def renew_schedule_leases(self, owner: str, pairs: Sequence[str], lease_seconds: float) -> None:
        """Extend ``owner``'s leases on ``pairs`` (runs still queued or in progress)."""
        if not pairs:
            return
        s = t.schedules
        with self.engine.begin() as conn:
            conn.execute(update(s).where(and_(s.c.pair.in_(list(pairs)), s.c.lease_owner == owner)).values(
                lease_until=utcnow() + dt.timedelta(seconds=lease_seconds)))

    def release_schedule(self, pair: str, owner: str, *, finished: bool = True,
                         next_run_at: dt.datetime | None = None) -> None:
        """End ``owner``'s lease on ``pair``: after its run (``finished``), or handing back a claim
        that never ran (then ``next_run_at`` puts its due time back, so it is not lost)."""
        s = t.schedules
        now = utcnow()
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None, "updated_at": now}
        if finished:
            values["last_finished_at"] = now
        if next_run_at is not None:
            values["next_run_at"] = next_run_at
        with self.engine.begin() as conn:
            conn.execute(update(s).where(and_(s.c.pair == pair, s.c.lease_owner == owner)).values(**values))

    def clear_schedule_leases(self) -> int:
        """Drop every lease (start of the only daemon on this store: they were its predecessor's)."""
        s = t.schedules
        with self.engine.begin() as conn:
            return conn.execute(update(s).where(s.c.lease_owner.is_not(None)).values(
                lease_owner=None, lease_until=None)).rowcount

def _coalesce(next_at: dt.datetime, interval: float, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The latest run time of the grid ``next_at + k*interval`` that is not after ``now`` (every
    earlier missed one is folded into it), and the one after it."""
    step = dt.timedelta(seconds=interval)
    due = next_at + max(0, (now - next_at) // step) * step
    return due, due + step


def _same(col: Any, value: Any) -> Any:
    return col.is_(None) if value is None else col == value


def _lock_running(conn: Connection, run_id: int) -> bool:
    """Whether the run is still 'running', holding its row until the transaction ends. A write
    comes first on purpose: it takes PostgreSQL's row lock (a concurrent finish waits, then sees
    the new status) and SQLite's write lock (no stale read between the check and the update)."""
    return conn.execute(update(t.runs).where(and_(t.runs.c.id == run_id, t.runs.c.status == "running"))
                        .values(status="running")).rowcount == 1


def _chunks(seq: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def fit_stratum(stratum: str) -> str:
    """A stratum that fits ``samples.stratum`` (varchar(255)): a longer one is cut and given a hash
    of the whole value, so distinct strata stay distinct and the same one always maps the same."""
    if len(stratum) <= STRATUM_LEN:
        return stratum
    digest = hashlib.sha256(stratum.encode("utf-8", "backslashreplace")).hexdigest()[:16]
    return stratum[:STRATUM_LEN - 17] + "~" + digest


def storable_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with what no backend can store escaped: lone
    surrogates as ``\\udXXX``, NUL as ``\\x00`` (quarantine rows keep hostile messages)."""
    text = text[:limit]
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def raw_text(value: bytes | str | None) -> str:
    """A record's value as text for the quarantine table: UTF-8, undecodable bytes as ``\\xNN``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value[:RAW_LEN]
    return bytes(value[:RAW_LEN * 4]).decode("utf-8", "backslashreplace")[:RAW_LEN]


def value_sha256(value: bytes | str | None) -> str:
    """The quarantine key's content part: the sha256 of the record's exact value bytes."""
    if value is None:
        value = b""
    elif isinstance(value, str):
        value = value.encode("utf-8", "surrogatepass")
    return hashlib.sha256(value).hexdigest()


def is_disconnect(exc: BaseException) -> bool:
    """The connection to the store was lost or never made (as opposed to a statement refused: an
    OperationalError such as PostgreSQL's 54000 'program limit exceeded' can be either, so the
    driver's own disconnect detection decides)."""
    if isinstance(exc, sa_exc.DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, sa_exc.InterfaceError)
    return isinstance(exc, (sa_exc.DisconnectionError, sa_exc.TimeoutError, ConnectionError))


def _insert_or_keep(conn: Connection, table: Any) -> Any:
    """An INSERT into ``table`` that keeps the row already there on a key conflict (PostgreSQL's
    and SQLite's ON CONFLICT DO NOTHING)."""
    if conn.dialect.name not in ("postgresql", "sqlite"):   # pragma: no cover - the two stores Sentinel supports
        return insert(table)
    return _upsert(conn, table).on_conflict_do_nothing()


def _upsert(conn: Connection, table: Any) -> Any:
    """The dialect's INSERT into ``table``, which takes ON CONFLICT clauses (PostgreSQL, SQLite)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table)


def rejected_row(item: Any, error: BaseException) -> QuarantineIn:
    """The quarantine row for a row the store refused: its position, the raw message and the error."""
    detail = one_line(error)
    if isinstance(item, QuarantineIn):   # a quarantine row itself refused: keep it, ASCII only
        return QuarantineIn(item.topic, item.partition, item.offset, "store_rejected",
                            f"{detail} (quarantined first as {item.reason}: {item.detail[:200]})",
                            ascii(item.raw)[:RAW_LEN], item.value_sha256 or value_sha256(item.raw))
    raw = getattr(item, "raw", None)
    if raw is None:   # a row built without its message: keep what was to be stored
        raw = json.dumps({f.name: getattr(item, f.name) for f in fields(item) if f.name != "raw"}, ensure_ascii=True,
                         default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))   # arrays as lists
    return QuarantineIn(item.topic, item.partition, item.offset, "store_rejected", detail, raw_text(raw),
                        value_sha256(raw))


def _put_quarantine(conn: Connection, rows: list[QuarantineIn], now: dt.datetime) -> None:
    """Quarantine rows not kept yet (unique on position and value hash; a repeat is kept once)."""
    if not rows:
        return
    keyed = [(q, q.value_sha256 or value_sha256(q.raw)) for q in rows]
    have: set[tuple[str, int, int, str]] = set()
    offsets: dict[tuple[str, int], set[int]] = {}
    for q, _ in keyed:
        offsets.setdefault((q.topic, q.partition), set()).add(q.offset)
    c = t.quarantine.c
    for (topic, partition), offs in offsets.items():
        for chunk in _chunks(sorted(offs), 500):
            have.update(tuple(r) for r in conn.execute(select(c.topic, c.partition, c.offset, c.value_sha256).where(
                and_(c.topic == topic, c.partition == partition, c.offset.in_(chunk)))))
    new = []
    for q, key in keyed:
        if (q.topic, q.partition, q.offset, key) not in have:
            have.add((q.topic, q.partition, q.offset, key))
            new.append(dict(topic=storable_text(q.topic, 255), partition=q.partition, offset=q.offset,
                            reason=storable_text(q.reason, 64), detail=storable_text(q.detail, 2000),
                            raw=storable_text(q.raw, RAW_LEN), value_sha256=key, stored_at=now))
    if new:
        conn.execute(insert(t.quarantine), new)


def _put_labels(conn: Connection, labels: list[LabelIn], now: dt.datetime) -> None:
    """Labels by id, the last of a batch winning, as it would written one by one."""
    if not labels:
        return
    last = {lab.msg_id: lab for lab in labels}
    have: set[str] = set()
    for chunk in _chunks(list(last), 500):
        have.update(r[0] for r in conn.execute(select(t.labels.c.msg_id).where(t.labels.c.msg_id.in_(chunk))))
    rows = [dict(msg_id=lab.msg_id, label=lab.label, topic=lab.topic, partition=lab.partition, offset=lab.offset,
                 stored_at=now) for lab in last.values()]
    new = [r for r in rows if r["msg_id"] not in have]
    old = [{k: v for k, v in r.items() if k != "msg_id"} | {"b_msg_id": r["msg_id"]} for r in rows if r["msg_id"] in have]
    if new:
        conn.execute(insert(t.labels), new)
    if old:   # SET from the parameters' keys, one statement executed for every row
        conn.execute(update(t.labels).where(t.labels.c.msg_id == bindparam("b_msg_id")), old)


def _put_samples(conn: Connection, pair: str, batch: list[SampleIn], opts: tuple[int, float, int | None],
                 now: dt.datetime, res: IngestResult, above: tuple[float, int] | None = None) -> None:
    """One pair's samples of a batch, with the outcome writing them one by one in order would give,
    in a bounded number of statements: one duplicate query per 500 ids, one read of the pair's
    ``pending_samples`` counts, one eviction query per stratum whose window fills up, one DELETE
    and one multi-row INSERT, and one upsert of the counts they change.

    The sampling rate is applied first: a message outside it is ``not_sampled`` without a look at
    the store (its id cannot be stored unless the rate was lowered since), repeats included.
    ``above``: the ``(bar, n)`` of ``ingest``'s ``above_bar`` for this pair, checked against the
    window as this transaction finds it before anything of the pair is written."""
    window, rate, max_strata = opts
    kept = [s for s in batch if in_sample(s.sample_key, rate)]
    res.not_sampled += len(batch) - len(kept)
    if not kept:
        if above is not None:
            _check_bar(conn, pair, window, above, res)
        return
    seen: set[str] = set()
    for chunk in _chunks(list({s.msg_id for s in kept}), 500):
        seen.update(r[0] for r in conn.execute(_STORED_IDS, {"pair": pair, "ids": chunk}))
    p = t.pending_samples.c
    pending: dict[str, int] = {row[0]: row[1] for row in conn.execute(
        select(p.stratum, p.n).where(and_(p.pair == pair, p.n > 0)))}
    windows = _Windows(conn, pair, window, pending)
    if above is not None:   # the largest key is read as evict_for would read it: no query of its own
        _bar_holds(pair, windows.largest(UNSTRATIFIED, len(kept)) if pending.get(UNSTRATIFIED, 0) >= window
                   else None, above, res)
    rows: dict[int, tuple[str, SampleIn]] = {}     # position in the batch -> (stratum, sample) to insert
    for pos, s in enumerate(kept):
        if s.msg_id in seen:
            res.duplicates += 1
            continue
        seen.add(s.msg_id)
        stratum = fit_stratum(s.stratum)
        if stratum not in pending and max_strata is not None and len(pending) >= max_strata:
            stratum = OTHER_STRATUM
        if pending.get(stratum, 0) >= window:
            res.evicted += 1
            if not windows.evict_for(stratum, s.sample_key, kept, rows):
                continue
            pending[stratum] -= 1
        rows[pos] = (stratum, s)
        windows.added(stratum, s.sample_key, pos)
        pending[stratum] = pending.get(stratum, 0) + 1
        res.stored += 1
    change: dict[str, int] = {}   # stratum -> pending samples added by this batch
    for stratum, ids in windows.deleted.items():
        for chunk in _chunks(ids, 500):   # only rows still pending: one a run has claimed since stays its
            gone = conn.execute(delete(t.samples).where(and_(t.samples.c.id.in_(chunk),
                                                             t.samples.c.run_id.is_(None)))).rowcount
            change[stratum] = change.get(stratum, 0) - gone
    if rows:
        _insert_samples(conn, [(s.pair, s.msg_id, s.ts, s.topic, s.partition, s.offset, s.sample_key,
                                stored_inputs(s.inputs) if s.stored is None else s.stored, s.text,
                                s.attributes, s.label, s.extra, now, stratum)
                               for stratum, s in rows.values()])
        for stratum, _ in rows.values():
            change[stratum] = change.get(stratum, 0) + 1
    _count_pending(conn, {(pair, k): v for k, v in change.items()}, 1)
    full = pending.get(UNSTRATIFIED, 0) >= window
    res.bars[pair] = windows.largest(UNSTRATIFIED, 1) if full else None


#: the stratum of every sample when sampling is not stratified (``Sampler.stratum``)
UNSTRATIFIED = ""


def _check_bar(conn: Connection, pair: str, window: int, above: tuple[float, int], res: IngestResult) -> None:
    """``ingest``'s ``above_bar`` for a pair none of whose samples the batch writes: its window must
    be full and its largest pending key at or below the bar; the messages then count as evicted."""
    p = t.pending_samples.c
    n = conn.execute(select(p.n).where(and_(p.pair == pair, p.stratum == UNSTRATIFIED))).scalar()
    bar = None
    if n is not None and n >= window:   # read as _put_samples reads it: one query for the largest key
        bar = _Windows(conn, pair, window, {UNSTRATIFIED: n}).largest(UNSTRATIFIED, 1)
    _bar_holds(pair, bar, above, res)
    res.bars[pair] = bar


def _bar_holds(pair: str, bar: float | None, above: tuple[float, int], res: IngestResult) -> None:
    """The messages left out above ``above``'s bar are evicted, as they would be, when the window's
    bar is ``bar`` (None: not full), at or below theirs; else :class:`StaleBar`."""
    if bar is None or bar > above[0]:
        raise StaleBar(pair, above[0], bar)
    res.evicted += above[1]


def _count_pending(conn: Connection, change: dict[tuple[str, str], int], sign: int) -> None:
    """Add ``sign`` times each (pair, stratum)'s change to ``pending_samples``, in the same
    transaction as the rows that changed: an atomic ``n = n + change`` per row (in sorted order,
    so concurrent writers on PostgreSQL take the row locks in one order and cannot deadlock)."""
    values = [dict(pair=pair, stratum=stratum, n=sign * n) for (pair, stratum), n in sorted(change.items()) if n]
    if not values:
        return
    ins = _upsert(conn, t.pending_samples)
    conn.execute(ins.on_conflict_do_update(index_elements=["pair", "stratum"],
                                           set_={"n": t.pending_samples.c.n + ins.excluded.n}), values)


def _run_strata(conn: Connection, run_id: int, pair: str | None = None) -> dict[tuple[str, str], int]:
    """How many samples ``run_id`` holds per (pair, stratum)."""
    c = t.samples.c
    where = c.run_id == run_id if pair is None else and_(c.pair == pair, c.run_id == run_id)
    return {(r[0], r[1]): r[2] for r in conn.execute(
        select(c.pair, c.stratum, func.count()).where(where).group_by(c.pair, c.stratum))}


def _release(conn: Connection, run_id: int) -> None:
    """Give ``run_id``'s samples back to their pending windows."""
    held = _run_strata(conn, run_id)
    conn.execute(update(t.samples).where(t.samples.c.run_id == run_id).values(run_id=None))
    _count_pending(conn, held, 1)


#: the ids of a pair's samples stored already, among ``ids``: one statement compiled once (an IN
#: of literals was compiled anew for each batch, its values coerced one by one)
_STORED_IDS = select(t.samples.c.msg_id).where(and_(t.samples.c.pair == bindparam("pair"),
                                                    t.samples.c.msg_id.in_(bindparam("ids", expanding=True))))

_SAMPLE_COLUMNS = ("pair", "msg_id", "ts", "topic", "partition", "offset", "sample_key", "inputs", "text",
                   "attributes", "label", "extra", "stored_at", "stratum")


def _insert_samples(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """One multi-row INSERT of sample rows (values in ``_SAMPLE_COLUMNS`` order). On SQLite the
    rows go to the driver's executemany directly, each value through its column type's own bind
    processor (so what is stored is what SQLAlchemy would store): SQLAlchemy's per-row parameter
    handling was a third of a stored sample's cost. Elsewhere SQLAlchemy's own path, which on
    PostgreSQL batches the rows into multi-row VALUES."""
    if conn.dialect.name != "sqlite":
        conn.execute(insert(t.samples), [dict(zip(_SAMPLE_COLUMNS, r)) for r in rows])
        return
    sql, procs = _sqlite_sample_insert(conn.dialect)
    columns = list(zip(*rows))   # by column: each processor mapped over its column (JSON None: 'null')
    for i, p in enumerate(procs):
        if p is None:
            continue
        col = columns[i]
        if col[0] is col[-1] and len(set(map(id, col))) == 1:   # one object in every row (stored_at): once
            columns[i] = (p(col[0]),) * len(col)
        elif i == _TS_COLUMN:
            columns[i] = _each_distinct_once(p, col)
        elif i in _JSON_COLUMNS:
            columns[i] = _each_object_once(p, col)
        else:
            columns[i] = tuple(map(p, col))
    conn.exec_driver_sql(sql, list(zip(*columns)))


_TS_COLUMN = _SAMPLE_COLUMNS.index("ts")
_JSON_COLUMNS = frozenset(map(_SAMPLE_COLUMNS.index, ("attributes", "extra")))


def _each_object_once(process: Any, col: Sequence[Any]) -> tuple[Any, ...]:
    """``process`` mapped over a JSON column, once per distinct object when objects repeat: the
    decoder gives a batch's messages with equal attributes the same dict (``messages._Seen``),
    and the JSON processor was a tenth of a stored row. By identity, not by value: every object
    is alive in ``col`` while this runs, so no two share an id, and nothing is compared."""
    objs = {id(v): v for v in col}
    if 2 * len(objs) > len(col):
        return tuple(map(process, col))
    done = {k: process(v) for k, v in objs.items()}
    return tuple([done[id(v)] for v in col])


def _each_distinct_once(process: Any, col: Sequence[dt.datetime]) -> tuple[Any, ...]:
    """``process`` mapped over timestamps, each distinct one processed once when they repeat (a
    Kafka record timestamp is in milliseconds: a busy topic's messages share them; the DateTime
    processor was a tenth of a stored row). Only for UTC timestamps: SQLite's processor writes the
    wall time, which two equal instants in different zones do not share."""
    if any(v.tzinfo is not dt.timezone.utc for v in col):
        return tuple(map(process, col))
    distinct = set(col)
    if 2 * len(distinct) > len(col):
        return tuple(map(process, col))
    done = {v: process(v) for v in distinct}
    return tuple(map(done.__getitem__, col))


#: per dialect (an engine's: its JSON serializer is in its processors), the samples INSERT and the
#: bind processor of each of ``_SAMPLE_COLUMNS``
_SAMPLE_INSERTS: "weakref.WeakKeyDictionary[Any, tuple[str, list[Any]]]" = weakref.WeakKeyDictionary()


def _sqlite_sample_insert(dialect: Any) -> tuple[str, list[Any]]:
    """The INSERT and the bind processors of ``_SAMPLE_COLUMNS`` for ``dialect``, made once: each
    column type's dialect implementation's own ``bind_processor`` (SQLAlchemy's public API; what
    its compiled inserts call). tests/test_storage.py checks the stored bytes are SQLAlchemy's."""
    got = _SAMPLE_INSERTS.get(dialect)
    if got is None:
        cols = [t.samples.c[name] for name in _SAMPLE_COLUMNS]
        sql = (f"INSERT INTO samples ({', '.join(dialect.identifier_preparer.quote(c.name) for c in cols)}) "
               f"VALUES ({', '.join('?' for _ in cols)})")
        procs = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in cols]
        got = _SAMPLE_INSERTS[dialect] = (sql, procs)
    return got


class _Windows:
    """The largest keys of each full stratum window, so the sample a new one pushes out is known
    without a query per message: the first time a stratum is full, its ``m`` largest pending keys
    are read once, ``m`` being the number of samples of the batch that may still enter it; since
    each entering sample pushes out at most one, the largest key is always among those read or
    among the batch's own samples (kept here too)."""

    def __init__(self, conn: Connection, pair: str, window: int, pending: dict[str, int]):
        self.conn, self.pair, self.window, self.pending = conn, pair, window, pending
        self.top: dict[str, list[tuple[float, int, int]]] = {}   # stratum -> max-heap of (-key, kind, ref)
        self.deleted: dict[str, list[int]] = {}                   # stratum -> stored rows pushed out

    def added(self, stratum: str, key: float, pos: int) -> None:
        if stratum in self.top:
            heapq.heappush(self.top[stratum], (-key, 1, pos))

    def largest(self, stratum: str, m: int) -> float | None:
        """The largest pending key of the full window ``stratum`` (None: it has none), read as
        :meth:`evict_for` first reads it when not read yet (``m``: as there); after this batch's
        writes, what they left (rows it deleted are gone, its own rows are in)."""
        heap = self.top.get(stratum)
        if heap is None:
            heap = self.top[stratum] = self._read(stratum, max(1, m))
        return -heap[0][0] if heap else None

    def evict_for(self, stratum: str, key: float, kept: list[SampleIn], rows: dict[int, Any]) -> bool:
        """Push the largest key of the full window ``stratum`` out for a sample with ``key``;
        False (nothing changes) when ``key`` is not smaller."""
        heap = self.top.get(stratum)
        if heap is None:
            heap = self.top[stratum] = self._read(stratum, len(kept))
            for pos, (st, s) in rows.items():
                if st == stratum:
                    heapq.heappush(heap, (-s.sample_key, 1, pos))
        if not heap or key >= -heap[0][0]:
            return False
        _, kind, ref = heapq.heappop(heap)
        if kind == 0:
            self.deleted.setdefault(stratum, []).append(ref)
        else:
            del rows[ref]       # a sample of this batch, pushed out before it was written
        return True

    def _read(self, stratum: str, m: int) -> list[tuple[float, int, int]]:
        q = select(t.samples.c.id, t.samples.c.sample_key).where(and_(
            t.samples.c.pair == self.pair, t.samples.c.run_id.is_(None), t.samples.c.stratum == stratum)
        ).order_by(t.samples.c.sample_key.desc()).limit(m)
        heap = [(-r.sample_key, 0, r.id) for r in self.conn.execute(q)]
        heapq.heapify(heap)
        return heap


def stored_inputs(inputs: Row | Sequence[float]) -> bytes:
    """A sample's inputs in the stored binary form. A plain list of numbers (what samples held
    before typed inputs) is kept the way migration 0006 converted old rows (``as_row``)."""
    return encode_row(inputs if type(inputs) is dict else as_row(inputs))   # a decoded row as it is: no copy


def _only_busy(exc: BaseException) -> bool:
    """A write that waited for a lock past its bound (PostgreSQL lock_not_available, SQLite
    "database is locked"): the store is writable, just busy."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, sqlite3.OperationalError):
        return "locked" in str(orig)
    return getattr(orig, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the API read while the consumer writes; the busy timeout rides out the short
    # write locks the scheduler thread and the consumer take in turn.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, *, echo: bool = False) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        db = u.database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30},
                               json_serializer=json_dumps)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, json_serializer=json_dumps)


# JSON columns: a sample's attributes (a flat object of strings, one per stored sample) through
# orjson, which writes the same object ~10x faster (the text differs only in spacing, which no
# reader sees); everything else, and whatever orjson refuses (a lone surrogate), through the
# standard library, which keeps NaN and integers past 64 bits as it always did. The attributes
# were a fifth of the store's time per row.
try:
    import orjson as _orjson
except ImportError:   # pragma: no cover - the standard library alone
    _orjson = None


def json_dumps(value: Any) -> str:
    if value is None:    # a sample's extra, mostly: what json.dumps gives, without its encoder's set-up
        return "null"
    if _orjson is not None and type(value) is dict and all(type(v) is str for v in value.values()):
        try:
            return _orjson.dumps(value).decode("utf-8")
        except TypeError:
            pass
    return json.dumps(value)


def open_store(url: str, *, echo: bool = False, migrate: bool = True) -> Store:
    store = Store(make_engine(url, echo=echo))
    if migrate:
        store.migrate()
    return store


"""Kafka source on kafka-python 3.x: a consumer-group member that hands out raw records and
commits, synchronously and only when told, the offsets of records already stored.

Also two small producer helpers (:func:`make_producer`, :func:`produce_json`) used by the demo
and the tests to put traffic on a topic.

Measured facts this module relies on (see shared PITFALLS.md):

* a group join waits about ``session_timeout_ms / 2`` (kafka-python's 45 s default: ~23 s), so
  the session timeout always comes from :class:`~sentinel.config.KafkaConfig`;
* on Tansu, ``end_offsets()`` returns the base offset of the last batch rather than the high
  watermark, so :meth:`KafkaSource.lag` uses the high watermark of the last fetch instead;
* kafka-python 3 warns about plain-callable deserializers, so none is configured: values stay
  bytes and decoding is the next stage's job;
* its reconnect backoff doubles up to ``reconnect_backoff_max_ms``, 30 s by default: after a
  60 s broker outage the first record was read ~30 s after the broker was back; the backoffs come
  from :class:`~sentinel.config.KafkaConfig` (2 s cap by default).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Iterable, Mapping, Sequence

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaConfigurationError, KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata, TopicPartition

from ..config import KafkaConfig, read_secret
from ..errors import StateError
from .base import KafkaConfigured, RawRecord, SourceError, first_offsets, next_offsets, record
from .base import tcp_reachable as _tcp_reachable

log = logging.getLogger(__name__)

_USER_PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSource(KafkaConfigured):
    """A :class:`~sentinel.sources.base.Source` reading ``cfg.topic`` (and ``cfg.labels_topic``
    when set) as a member of consumer group ``cfg.group_id``.

    Auto-commit is off: offsets move only through :meth:`commit`, which the ingest loop calls
    after the store write, so a crash re-delivers instead of losing (at-least-once).

    ``password`` overrides the SASL password otherwise read from ``cfg.sasl_password_env`` /
    ``cfg.sasl_password_file``. ``connect_timeout_s`` bounds :meth:`start` when no broker
    answers; ``commit_timeout_s`` bounds one :meth:`commit` (kafka-python would otherwise retry a
    synchronous commit forever).
    """

    name = "kafka"

    def __init__(self, cfg: KafkaConfig, *, password: str | None = None,
                 connect_timeout_s: float = 10.0, commit_timeout_s: float = 30.0):
        self.cfg = cfg
        self._password = password
        self.connect_timeout_s = connect_timeout_s
        self.commit_timeout_s = commit_timeout_s
        self._consumer: KafkaConsumer | None = None
        # Highest offset this instance committed per partition, for the current assignment of
        # that partition: commit() never moves backwards within it. Forgotten when the
        # partition is (re)assigned or its log restarts below it (a re-created topic, a reset
        # group, a memory-only broker restarted), so commits resume there.
        self._committed: dict[tuple[str, int], int] = {}
        # the rebalance listener runs on kafka-python's IO thread, health checks on the API's
        self._lock = threading.Lock()
        self._coordinator_lost_at: float | None = None   # monotonic; None while one is known

    # -- lifecycle -------------------------------------------------------------------------

    def consumer_config(self) -> dict[str, Any]:
        """The keyword arguments given to :class:`kafka.KafkaConsumer` (password included: never
        log this)."""
        cfg = self.cfg
        conf: dict[str, Any] = dict(
            bootstrap_servers=self.servers,
            client_id=cfg.client_id,
            group_id=cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset=cfg.auto_offset_reset,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_poll_records=cfg.poll_records,
            security_protocol=cfg.security_protocol,
            reconnect_backoff_ms=cfg.reconnect_backoff_ms,
            reconnect_backoff_max_ms=cfg.reconnect_backoff_max_ms,
            retry_backoff_ms=cfg.retry_backoff_ms,
            # kafka-python 3 bootstraps eagerly in the constructor (30 s by default): bound it so
            # an unreachable broker fails start() quickly with a clear message.
            bootstrap_timeout_ms=max(1, int(self.connect_timeout_s * 1000)),
        )
        if cfg.ssl_cafile:
            conf["ssl_cafile"] = cfg.ssl_cafile
        if cfg.sasl_mechanism:
            conf["sasl_mechanism"] = cfg.sasl_mechanism
            if cfg.sasl_mechanism.upper() in _USER_PASSWORD_MECHANISMS:
                password = self._password
                if password is None:
                    password = read_secret(cfg.sasl_password_env, cfg.sasl_password_file)
                if not cfg.sasl_username or password is None:
                    raise SourceError(
                        "kafka configure", self.servers,
                        f"sasl_mechanism {cfg.sasl_mechanism} needs kafka.sasl_username and a password "
                        "(kafka.sasl_password_env or kafka.sasl_password_file)")
                conf["sasl_plain_username"] = cfg.sasl_username
                conf["sasl_plain_password"] = password
        return conf

    def start(self) -> None:
        """Create the consumer and subscribe. Raises :class:`SourceError` after
        ``connect_timeout_s`` when no bootstrap server answers. The group join itself happens
        during the first polls (about ``session_timeout_ms / 2`` on Tansu)."""
        if self._consumer is not None:
            return
        consumer = _construct(KafkaConsumer, "kafka connect", self.servers, self.connect_timeout_s,
                              **self.consumer_config())
        try:
            consumer.subscribe(self.topics, listener=_ForgetOnAssign(self))
        except KafkaError as exc:
            consumer.close(autocommit=False, timeout_ms=1000)
            raise SourceError("kafka subscribe", self.servers, f"{self.topics}: {_describe(exc)}") from exc
        self._consumer = consumer
        with self._lock:
            self._committed.clear()
        self._coordinator_lost_at = time.monotonic()   # none yet: the join happens in poll()
        log.info("kafka source started: servers=%s topics=%s group=%s",
                 ",".join(self.servers), self.topics, self.cfg.group_id)

    def close(self) -> None:
        """Leave the group and close connections without committing (idempotent)."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            # autocommit=False: only commit() acknowledges progress; a bounded timeout so
            # shutdown cannot hang on an unreachable coordinator.
            consumer.close(autocommit=False, timeout_ms=5000)
        except Exception:  # noqa: BLE001 - closing must not mask the reason we are closing
            log.warning("kafka source: error while closing the consumer", exc_info=True)

    def __enter__(self) -> "KafkaSource":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- records ---------------------------------------------------------------------------

    def poll(self, timeout_ms: int | None = None) -> list[RawRecord]:
        """Next records (maybe none) within ``timeout_ms`` (default ``cfg.poll_timeout_ms``),
        grouped by partition, in offset order within each partition."""
        out: list[RawRecord] = []
        for _, recs in self.poll_partitions(timeout_ms):
            for r in recs:
                # kafka-python uses -1 (and None for old formats) for "no timestamp"
                ts = r.timestamp if r.timestamp is not None and r.timestamp >= 0 else None
                out.append(record((r.topic, r.partition, r.offset, r.key, r.value, ts)))
        return out

    def poll_partitions(self, timeout_ms: int | None = None) -> list[tuple[TopicPartition, list[Any]]]:
        """What :meth:`poll` returns, as kafka-python's records (``ConsumerRecord``) per
        partition, in partition order, none empty (for the consumer process,
        sentinel/sources/process.py, which sends them on in columns)."""
        consumer = self._require()
        timeout = self.cfg.poll_timeout_ms if timeout_ms is None else timeout_ms
        try:
            batches = consumer.poll(timeout_ms=timeout)
        except KafkaError as exc:
            raise SourceError("kafka poll", self.servers, _describe(exc)) from exc
        finally:
            self._note_coordinator(consumer)
        out = []
        for tp in sorted(batches):  # TopicPartition is a namedtuple: stable, readable order
            if batches[tp]:
                self._check_restarted(tp, batches[tp][0].offset)
                out.append((tp, batches[tp]))
        return out

    def commit(self, records: Sequence[RawRecord]) -> dict[tuple[str, int], int]:
        """Commit, synchronously, max offset + 1 per ``(topic, partition)`` of ``records``
        (which must already be durably stored). Returns what was committed; ``{}`` for no
        records or when nothing would move forward."""
        if not records:
            return {}
        return self.commit_offsets(next_offsets(records))

    def commit_offsets(self, upto: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """:meth:`commit` given its offsets: per ``(topic, partition)``, the next offset to read."""
        consumer = self._require()
        with self._lock:
            todo = {k: v for k, v in upto.items() if v > self._committed.get(k, -1)}
        if not todo:
            return {}
        # OffsetAndMetadata(offset, metadata, leader_epoch): kafka-python 3 added leader_epoch
        # (KIP-320); -1 means "unknown", which skips the broker-side epoch fencing check.
        offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in todo.items()}
        try:
            consumer.commit(offsets, timeout_ms=max(1, int(self.commit_timeout_s * 1000)))
        except KafkaError as exc:
            # e.g. CommitFailedError after a rebalance: the records will be re-delivered.
            raise SourceError("kafka commit", self.servers,
                              f"{_fmt_offsets(todo)}: {_describe(exc)}"
                              + (f" (no answer within {self.commit_timeout_s:g} s)"
                                 if isinstance(exc, KafkaTimeoutError) else "")) from exc
        with self._lock:
            self._committed.update(todo)
        return todo

    def rewind(self, records: Sequence[RawRecord]) -> None:
        """Seek back to the first offset of ``records`` per partition, so records that were read
        but could not be stored are read again rather than skipped (their offsets were never
        committed, but the consumer's in-memory position had moved past them)."""
        if records:
            self.seek(first_offsets(records))

    def seek(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Move the read position of each assigned ``(topic, partition)`` to its offset (after a
        rebalance the new owner starts from the committed offset, so others are left alone)."""
        consumer = self._require()
        assigned = consumer.assignment()
        for (t, p), offset in offsets.items():
            tp = TopicPartition(t, p)
            if tp in assigned:
                consumer.seek(tp, offset)

    # -- progress and health -----------------------------------------------------------------

    def lag(self) -> int | None:
        """Sum over assigned partitions of ``highwater - position``; None when nothing is
        assigned yet or some partition has not been fetched yet (its high watermark is only
        known from a fetch response). No network round trip."""
        consumer = self._consumer
        if consumer is None:
            return None
        try:
            assigned = consumer.assignment()
            if not assigned:
                return None
            highwater = {tp: consumer.highwater(tp) for tp in assigned}
            if any(hw is None for hw in highwater.values()):
                return None
            total = 0
            for tp, hw in highwater.items():
                # fetched partitions have a position already, so this does not block
                pos = consumer.position(tp, timeout_ms=1000)
                if pos is None:
                    return None
                total += max(0, hw - pos)
            return total
        except KafkaError:
            # IllegalStateError: a rebalance took the partition away between the two calls
            return None

    def committed(self) -> dict[tuple[str, int], int]:
        """Committed offsets (next offset to read) of the assigned partitions, asked of the
        group coordinator; partitions without a committed offset are left out."""
        consumer = self._require()
        out: dict[tuple[str, int], int] = {}
        try:
            for tp in sorted(consumer.assignment()):
                off = consumer.committed(tp, timeout_ms=max(1, int(self.commit_timeout_s * 1000)))
                if off is not None:
                    out[(tp.topic, tp.partition)] = off
        except KafkaError as exc:
            raise SourceError("kafka offset fetch", self.servers, _describe(exc)) from exc
        return out

    def coordinator_lost_for(self) -> float | None:
        """Seconds since this consumer last had a group coordinator (None while it has one).
        Thread-safe: a value the ingest thread records at each :meth:`poll`, read by health
        checks. A broker can accept TCP connections and still leave the group without one."""
        with self._lock:
            lost = self._coordinator_lost_at
        return None if lost is None else max(0.0, time.monotonic() - lost)

    def ping(self, timeout_s: float = 1.0) -> bool:
        """True when a TCP connection to any bootstrap server opens within ``timeout_s``.

        Deliberately a plain socket, not a Kafka request: it is cheap, thread-safe (it does not
        touch the consumer, which belongs to the ingest thread) and bounded."""
        return any(_tcp_reachable(s, timeout_s) for s in self.servers)

    # -- internals ---------------------------------------------------------------------------

    def _forget(self, partitions: Iterable[TopicPartition], why: str) -> None:
        for tp in partitions:
            with self._lock:
                mark = self._committed.pop((tp.topic, tp.partition), None)
            if mark is not None:
                log.info("kafka source: %s[%d] %s; committing from its new position",
                         tp.topic, tp.partition, why)

    def _check_restarted(self, tp: TopicPartition, first_offset: int) -> None:
        # Records below what this instance committed come only from a log that restarted
        # (rewind() never seeks below a commit): re-created topic, OffsetOutOfRange reset...
        with self._lock:
            mark = self._committed.get((tp.topic, tp.partition))
        if mark is not None and first_offset < mark:
            self._forget([tp], f"restarted at offset {first_offset}, below the {mark} committed before")

    def _note_coordinator(self, consumer: KafkaConsumer) -> None:
        # kafka-python keeps the coordinator id on its (private) coordinator object; read it
        # here, on the ingest thread, which owns the consumer. Unknown internals: say "known".
        coordinator = getattr(consumer, "_coordinator", None)
        known = getattr(coordinator, "coordinator_id", True) is not None
        with self._lock:
            if known:
                self._coordinator_lost_at = None
            elif self._coordinator_lost_at is None:
                self._coordinator_lost_at = time.monotonic()

    def _require(self) -> KafkaConsumer:
        if self._consumer is None:
            raise StateError("kafka source is not started (call start() first)")
        return self._consumer


class _ForgetOnAssign(ConsumerRebalanceListener):
    """Forgets the commit high-water mark of every partition that is (re)assigned or lost: a
    new assignment may come with another log (a re-created topic, a broker that lost its data)
    or a reset group, where the next commit is legitimately below the old one."""

    def __init__(self, source: KafkaSource):
        self.source = source

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass   # nothing to flush: every record returned by poll() is stored and committed (or rewound) before the next poll

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.source._forget(assigned, "assigned")

    def on_partitions_lost(self, lost: Any) -> None:
        self.source._forget(lost, "lost with the group membership")


# ---------------------------------------------------------------------------------------------
# Producer helpers (demo and tests)


def make_producer(bootstrap_servers: str | Sequence[str], *, timeout_s: float = 10.0,
                  **overrides: Any) -> KafkaProducer:
    """A :class:`kafka.KafkaProducer` for raw bytes (no serializers). Raises
    :class:`SourceError` within ``timeout_s`` when no bootstrap server answers."""
    servers = _server_list(bootstrap_servers)
    conf: dict[str, Any] = dict(
        bootstrap_servers=servers,
        bootstrap_timeout_ms=max(1, int(timeout_s * 1000)),
        # send() blocks up to max_block_ms for metadata: bound it like the bootstrap
        max_block_ms=max(1, int(timeout_s * 1000)),
    )
    conf.update(overrides)
    return _construct(KafkaProducer, "kafka connect", servers, timeout_s, **conf)


def produce_json(producer: KafkaProducer, topic: str, messages: Iterable[Mapping[str, Any] | bytes],
                 key_field: str | None = "id", *, timeout_s: float = 30.0) -> int:
    """Send each message to ``topic`` and flush; returns how many were sent.

    A mapping is sent as compact UTF-8 JSON keyed by its ``key_field`` value (when present);
    ``bytes`` are sent as they are, without key, so tests can put malformed messages on a topic.
    Raises :class:`SourceError` if any send failed.
    """
    servers = _server_list(producer.config.get("bootstrap_servers", []))
    futures = []
    for msg in messages:
        if isinstance(msg, (bytes, bytearray, memoryview)):
            value, key = bytes(msg), None
        elif isinstance(msg, Mapping):
            value = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            k = msg.get(key_field) if key_field else None
            key = None if k is None else str(k).encode("utf-8")
        else:
            raise TypeError(f"produce_json: expected a mapping or bytes, got {type(msg).__name__}")
        try:
            futures.append(producer.send(topic, value=value, key=key))
        except KafkaError as exc:
            raise SourceError("kafka produce", servers, f"{topic}: {_describe(exc)}") from exc
    try:
        producer.flush(timeout=timeout_s)
    except KafkaError as exc:
        raise SourceError("kafka produce", servers, f"{topic}: {_describe(exc)}") from exc
    failed = [f for f in futures if not f.is_done or f.failed()]
    if failed:
        first = _describe(failed[0].exception) if failed[0].is_done else "not acknowledged in time"
        raise SourceError("kafka produce", servers,
                          f"{topic}: {len(failed)} of {len(futures)} messages failed ({first})")
    return len(futures)


# ---------------------------------------------------------------------------------------------


def _construct(cls: type, operation: str, servers: list[str], timeout_s: float, **conf: Any) -> Any:
    """``cls(**conf)`` for a kafka-python client, turning bootstrap failures into SourceError.

    kafka-python 3 starts its network thread *before* the eager bootstrap in the constructor,
    and does not stop it when the bootstrap fails: every failed attempt would leak a thread that
    keeps reconnecting. So the network client is built through a factory that remembers it and
    is closed on failure.
    """
    made: list[Any] = []
    default_config = getattr(cls, "DEFAULT_CONFIG", {})
    if "kafka_client" in default_config and "kafka_client" not in conf:
        real_factory = default_config["kafka_client"]

        def factory(*args: Any, **kwargs: Any) -> Any:
            client = real_factory(*args, **kwargs)
            made.append(client)
            return client

        conf["kafka_client"] = factory
    try:
        return cls(**conf)
    except BaseException as exc:
        for client in made:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass
        if isinstance(exc, KafkaConfigurationError):
            raise SourceError("kafka configure", servers, _describe(exc)) from exc
        if isinstance(exc, KafkaError):
            raise SourceError(operation, servers,
                              f"no broker answered within {timeout_s:g} s ({_describe(exc)})") from exc
        raise


def _server_list(servers: str | Sequence[str]) -> list[str]:
    if isinstance(servers, str):
        return [s.strip() for s in servers.split(",") if s.strip()]
    return list(servers)


def _describe(exc: BaseException) -> str:
    """``Name: message`` once (kafka-python's errors already start their str() with the name)."""
    name, text = type(exc).__name__, str(exc).strip()
    text = text.removesuffix(": None")  # kafka-python formats a missing message as "Name: None"
    if not text or text == "None":
        return name
    return text if text.startswith(name) else f"{name}: {text}"


def _fmt_offsets(offsets: Mapping[tuple[str, int], int]) -> str:
    return ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(offsets.items()))

"""Kafka source on librdkafka (``confluent-kafka``), chosen by ``kafka.client: confluent``: the
same contract as :class:`sentinel.sources.kafka.KafkaSource` (a consumer-group member handing out
raw records, committing synchronously and only when told, offsets of records already stored),
at librdkafka's pace: on this machine a raw group consumer with commits reads ~527k msg/s where
kafka-python reads ~14k (PITFALLS.md), so the decode, not the client, bounds ingest.

How the contract maps onto librdkafka:

* auto-commit and the automatic offset store are off: offsets move only through :meth:`commit`;
* records come from ``consume()`` in batches of ``kafka.max_poll_records`` (10,000 by default:
  at 500 the per-batch store transaction and commit were a third of the loop); per-message errors
  that are not fatal (a broker restarting, partition EOF) are logged and skipped, a fatal one
  raises :class:`~sentinel.sources.base.SourceError`;
* lag is the high watermark of the last fetch (``get_watermark_offsets(cached=True)``, no
  round trip) minus the position; Tansu's ListOffsets answer is not the high watermark;
* librdkafka reconnects by itself, its backoff capped by ``kafka.reconnect_backoff_max_ms``;
* commit marks are forgotten when a partition is assigned or lost, or its log restarts below
  them, exactly as in the kafka-python source.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from ..config import KafkaConfig
from ..errors import StateError
from .base import KafkaConfigured, RawRecord, SourceError, first_offsets, next_offsets, record
from .kafka import KafkaSource, _fmt_offsets, _server_list, _tcp_reachable

log = logging.getLogger(__name__)

_NO_TIMESTAMP = 0   # confluent_kafka.TIMESTAMP_NOT_AVAILABLE
_QUIET = {KafkaError._PARTITION_EOF}
# kafka-python's consumer settings (KafkaSource.consumer_config) by librdkafka name
_LIBRDKAFKA = {
    "bootstrap_servers": "bootstrap.servers", "client_id": "client.id", "group_id": "group.id",
    "enable_auto_commit": "enable.auto.commit", "auto_offset_reset": "auto.offset.reset",
    "session_timeout_ms": "session.timeout.ms", "heartbeat_interval_ms": "heartbeat.interval.ms",
    "security_protocol": "security.protocol", "reconnect_backoff_ms": "reconnect.backoff.ms",
    "reconnect_backoff_max_ms": "reconnect.backoff.max.ms", "retry_backoff_ms": "retry.backoff.ms",
    "ssl_cafile": "ssl.ca.location", "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username", "sasl_plain_password": "sasl.password",
}
# settings librdkafka has no use for: batches are consume(num_messages=max_poll_records), and
# start() bounds the first connection itself
_UNMAPPED = {"max_poll_records", "bootstrap_timeout_ms"}
FETCH_QUEUE_BACKOFF_MS = 10


class ConfluentSource(KafkaConfigured):
    """A :class:`~sentinel.sources.base.Source` on librdkafka; arguments as for
    :class:`sentinel.sources.kafka.KafkaSource`."""

    name = "confluent"

    def __init__(self, cfg: KafkaConfig, *, password: str | None = None,
                 connect_timeout_s: float = 10.0, commit_timeout_s: float = 30.0):
        # the same settings and commit marks as KafkaSource (its __init__ documents them)
        KafkaSource.__init__(self, cfg, password=password, connect_timeout_s=connect_timeout_s,  # type: ignore[arg-type]
                             commit_timeout_s=commit_timeout_s)
        self._consumer: Consumer | None = None  # type: ignore[assignment]
        self._brokers_down_at: float | None = None   # monotonic; set by librdkafka's error callback

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka's settings: the kafka-python source's (SASL password resolved the same way,
        never log this), renamed. A kafka-python setting without a mapping here is an error, so
        the two sources cannot drift apart silently."""
        # fetch.queue.backoff.ms: once its queue holds queued.min.messages (100,000), librdkafka
        # postpones the next fetch by this long, 1,000 ms by default. A consumer that drains the
        # queue in polls of 10,000 then waits for that pause: at rate 0.1, half the loop's time was
        # spent in consume() (98k -> 215k msg/s here with 10 ms; the queue's bounds are unchanged)
        conf: dict[str, Any] = {"enable.auto.offset.store": False, "error_cb": self._on_error, "logger": log,
                                "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS}
        for key, value in KafkaSource.consumer_config(self).items():  # type: ignore[arg-type]
            if key in _UNMAPPED:
                continue
            name = _LIBRDKAFKA[key]
            conf[name] = ",".join(value) if key == "bootstrap_servers" else (
                value.lower() if key == "security_protocol" else value)
        return conf

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Create the consumer, check a broker answers within ``connect_timeout_s`` (librdkafka
        connects lazily and would otherwise retry forever), subscribe."""
        if self._consumer is not None:
            return
        try:
            consumer = Consumer(self.consumer_config())
        except KafkaException as exc:
            raise SourceError("kafka configure", self.servers, _describe(exc)) from exc
        try:
            consumer.list_topics(timeout=self.connect_timeout_s)
            consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_lost)
        except KafkaException as exc:
            consumer.close()
            raise SourceError("kafka connect", self.servers,
                              f"no broker answered within {self.connect_timeout_s:g} s ({_describe(exc)})") from exc
        self._consumer = consumer
        with self._lock:
            self._committed.clear()
        log.info("kafka source (librdkafka) started: servers=%s topics=%s group=%s",
                 ",".join(self.servers), self.topics, self.cfg.group_id)

    def close(self) -> None:
        """Leave the group and close, committing nothing (auto-commit is off). Idempotent."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            consumer.close()
        except Exception:  # noqa: BLE001 - closing must not mask the reason we are closing
            log.warning("kafka source: error while closing the consumer", exc_info=True)

    __enter__ = KafkaSource.__enter__
    __exit__ = KafkaSource.__exit__

    # -- records ---------------------------------------------------------------------------
    def poll(self, timeout_ms: int | None = None) -> list[RawRecord]:
        """Next records (maybe none) within ``timeout_ms``, grouped by partition, in offset order."""
        consumer = self._require()
        timeout = (self.cfg.poll_timeout_ms if timeout_ms is None else timeout_ms) / 1000
        try:
            msgs = consumer.consume(num_messages=self.cfg.poll_records, timeout=timeout)
        except KafkaException as exc:
            raise SourceError("kafka poll", self.servers, _describe(exc)) from exc
        out: list[RawRecord] = []
        first: dict[tuple[str, int], int] = {}
        topic, partition = None, None
        for m in msgs:
            if m.error() is not None:
                self._on_message_error(m.error())
                continue
            ts_type, ts = m.timestamp()
            rec = record((m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                          ts if ts_type != _NO_TIMESTAMP and ts >= 0 else None))
            if rec.partition != partition or rec.topic != topic:   # a run of one partition starts
                topic, partition = rec.topic, rec.partition
                first.setdefault((topic, partition), rec.offset)
            out.append(rec)
        if out:
            self._brokers_down_at = None
            for (t, p), offset in first.items():
                self._check_restarted(TopicPartition(t, p), offset)
            if len(first) > 1:
                out.sort(key=_by_partition)   # stable: offset order kept per partition
        return out

    def commit(self, records: Sequence[RawRecord]) -> dict[tuple[str, int], int]:
        """Commit, synchronously, max offset + 1 per partition of ``records`` (already stored)."""
        if not records:
            return {}
        consumer = self._require()
        upto = next_offsets(records)
        with self._lock:
            todo = {k: v for k, v in upto.items() if v > self._committed.get(k, -1)}
        if not todo:
            return {}
        try:
            result = consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in todo.items()],
                                     asynchronous=False)
        except KafkaException as exc:
            raise SourceError("kafka commit", self.servers, f"{_fmt_offsets(todo)}: {_describe(exc)}") from exc
        failed = [tp for tp in result or [] if tp.error is not None]
        if failed:
            raise SourceError("kafka commit", self.servers,
                              f"{_fmt_offsets(todo)}: {failed[0].topic}[{failed[0].partition}] {failed[0].error}")
        with self._lock:
            self._committed.update(todo)
        return todo

    def rewind(self, records: Sequence[RawRecord]) -> None:
        """Seek back to the first offset of ``records`` per assigned partition."""
        if not records:
            return
        consumer = self._require()
        first = first_offsets(records)
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        for (t, p), offset in first.items():
            if (t, p) in assigned:
                try:
                    consumer.seek(TopicPartition(t, p, offset))
                except KafkaException as exc:   # the partition was just revoked: its new owner reads it
                    log.warning("kafka source: rewind of %s[%d] failed: %s", t, p, _describe(exc))

    # -- progress and health -----------------------------------------------------------------
    def lag(self) -> int | None:
        """Sum of ``high watermark - position`` over assigned partitions, from the last fetch;
        None when nothing is assigned or fetched yet."""
        consumer = self._consumer
        if consumer is None:
            return None
        try:
            assigned = consumer.assignment()
            if not assigned:
                return None
            total = 0
            for tp in consumer.position(assigned):
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset < 0 or high < 0:
                    return None
                total += max(0, high - tp.offset)
            return total
        except KafkaException:
            return None

    def committed(self) -> dict[tuple[str, int], int]:
        """Committed offsets of the assigned partitions (partitions without one left out)."""
        consumer = self._require()
        try:
            got = consumer.committed(consumer.assignment(), timeout=self.commit_timeout_s)
        except KafkaException as exc:
            raise SourceError("kafka offset fetch", self.servers, _describe(exc)) from exc
        return {(tp.topic, tp.partition): tp.offset for tp in sorted(got, key=lambda x: (x.topic, x.partition))
                if tp.offset >= 0}

    def coordinator_lost_for(self) -> float | None:
        """Seconds since librdkafka reported every broker down (None while one answers)."""
        with self._lock:
            lost = self._brokers_down_at
        return None if lost is None else max(0.0, time.monotonic() - lost)

    def ping(self, timeout_s: float = 1.0) -> bool:
        """True when a TCP connection to any bootstrap server opens within ``timeout_s``."""
        return any(_tcp_reachable(s, timeout_s) for s in self.servers)

    # -- callbacks and internals -------------------------------------------------------------
    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        self._forget(partitions, "assigned")

    def _on_revoke(self, _consumer: Any, _partitions: list[Any]) -> None:
        pass   # every polled record is stored and committed (or rewound) before the next poll

    def _on_lost(self, _consumer: Any, partitions: list[Any]) -> None:
        self._forget(partitions, "lost with the group membership")

    def _on_error(self, err: Any) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            with self._lock:
                self._brokers_down_at = self._brokers_down_at or time.monotonic()
        log.warning("kafka source (librdkafka): %s", err.str())

    def _on_message_error(self, err: Any) -> None:
        if err.fatal():
            raise SourceError("kafka poll", self.servers, err.str())
        if err.code() not in _QUIET:
            log.warning("kafka source: %s", err.str())

    # the commit marks are forgotten exactly as in KafkaSource (both TopicPartitions have
    # .topic and .partition)
    _forget = KafkaSource._forget
    _check_restarted = KafkaSource._check_restarted

    def _require(self) -> Consumer:
        if self._consumer is None:
            raise StateError("kafka source is not started (call start() first)")
        return self._consumer


def produce_values(servers: str | Sequence[str], topic: str, values: Iterable[bytes],
                   keys: Iterable[bytes | None] | None = None, *, timeout_s: float = 60.0) -> int:
    """Put raw ``values`` (optionally keyed) on ``topic`` with librdkafka and wait until every one
    is acknowledged; returns how many. Tests and benchmarks use it for large volumes (~100k msg/s,
    where kafka-python's producer manages ~10k). Raises SourceError if any failed."""
    servers = _server_list(servers)
    producer = Producer({"bootstrap.servers": ",".join(servers), "linger.ms": 20, "queue.buffering.max.messages": 500000})
    errors: list[str] = []

    def done(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    n = 0
    key_iter = iter(keys) if keys is not None else None
    for value in values:
        key = next(key_iter) if key_iter is not None else None
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=done)
                break
            except BufferError:   # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        n += 1
        if n % 10000 == 0:
            producer.poll(0)
    left = producer.flush(timeout_s)
    if left or errors:
        raise SourceError("kafka produce", servers, f"{topic}: {len(errors) + left} of {n} messages failed"
                                                    + (f" ({errors[0]})" if errors else " (not acknowledged in time)"))
    return n


def _by_partition(r: RawRecord) -> tuple[str, int]:
    return r.topic, r.partition


def _describe(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else None
    return arg.str() if isinstance(arg, KafkaError) else (str(exc) or type(exc).__name__)

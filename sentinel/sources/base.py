"""The source contract: where traffic records come from and how their progress is acknowledged.

A source hands out raw records (bytes, undecoded: decoding and validation are the next stage's
job, so a malformed message is quarantined there and never stops the source) and is told, by
:meth:`Source.commit`, which records are safely stored. Sentinel's ingest is at-least-once:

    records = source.poll()
    store.write(decode(records))   # durable (transaction committed)
    source.commit(records)         # only now: progress is acknowledged

A crash between ``write`` and ``commit`` re-delivers those records on restart; the store drops
the repeats by message ``id``. Committing before the write would lose them instead.

Sources are chosen by name in config (``ingest.source``, default ``kafka``) through
:data:`SOURCES` (a short name to an import string; any other ``module:Class`` is imported as is,
see :mod:`sentinel.registry`). The chosen class is built with ``cls.from_config(cfg)`` (the whole
:class:`sentinel.config.Config`), which must do no I/O: connecting is :meth:`Source.start`'s job.
"""
from __future__ import annotations

import socket
from functools import partial
from typing import Any, NamedTuple, Protocol, Self, Sequence, runtime_checkable

from ..config import KafkaConfig, read_secret
from ..errors import ConfigError, SentinelError
from ..registry import PluginError, resolve

#: Built-in sources by name. Values are ``module:Class`` import strings so that choosing a
#: source does not import every client library.
SOURCES: dict[str, str] = {
    "kafka": "sentinel.sources.kafka:KafkaSource",
    "file": "sentinel.sources.file:FileSource",
}

#: The ``kafka`` source by ``kafka.client``: one source, two client libraries.
KAFKA_CLIENTS: dict[str, str] = {
    "kafka-python": "sentinel.sources.kafka:KafkaSource",
    "confluent": "sentinel.sources.confluent:ConfluentSource",
}

#: kafka-python with its consumer in a child process (``kafka.consumer_process``, the default).
CONSUMER_PROCESS = "sentinel.sources.process:ProcessSource"


def build_source(cfg: Any) -> "Source":
    """The source ``cfg.ingest.source`` names, built from ``cfg`` (not started). An unknown or
    unimportable name is a ConfigError at ``ingest.source``. ``kafka`` runs on the client
    ``kafka.client`` names: kafka-python (``kafka``; its consumer in a child process unless
    ``kafka.consumer_process`` is false) or librdkafka (``confluent``)."""
    name = cfg.ingest.source
    if name == "kafka":
        client = getattr(cfg.kafka, "client", "kafka-python")
        name = (CONSUMER_PROCESS if client == "kafka-python" and getattr(cfg.kafka, "consumer_process", False)
                else KAFKA_CLIENTS.get(client, SOURCES["kafka"]))
    try:
        cls = resolve("source", name, SOURCES)
    except PluginError as exc:
        raise ConfigError(cfg.source, "ingest.source", str(exc)) from None
    if not callable(getattr(cls, "from_config", None)):
        raise ConfigError(cfg.source, "ingest.source", f"{cfg.ingest.source!r} has no from_config(cfg) to build it")
    return cls.from_config(cfg)


def subscribed_topics(cfg: Any) -> list[str]:
    """The topics a Kafka source subscribes to (``cfg``: the ``kafka`` section): the traffic
    topic, then the labels topic when it is another."""
    topics = [cfg.topic]
    if cfg.labels_topic and cfg.labels_topic != cfg.topic:
        topics.append(cfg.labels_topic)
    return topics


class KafkaConfigured:
    """What the Kafka sources (kafka-python, in the daemon's process or in a child, and librdkafka)
    read from config the same way: their construction from it, their servers and topics. Here, not
    on :class:`~sentinel.sources.kafka.KafkaSource`, so that a source can have them without
    importing a Kafka client (the consumer process's parent never imports kafka-python).

    A class using it is built as ``cls(cfg.kafka, password=...)`` and keeps that ``cfg``."""

    cfg: KafkaConfig

    @classmethod
    def from_config(cls, cfg: Any) -> Self:
        """The daemon's Kafka source: ``cfg.kafka``, the SASL password read now."""
        k = cfg.kafka
        return cls(k, password=read_secret(k.sasl_password_env, k.sasl_password_file))  # type: ignore[call-arg]

    @property
    def servers(self) -> list[str]:
        return list(self.cfg.bootstrap_servers)

    @property
    def topics(self) -> list[str]:
        """The subscribed topics: the traffic topic, then the labels topic when it is another."""
        return subscribed_topics(self.cfg)


def tcp_reachable(server: str, timeout_s: float) -> bool:
    """A TCP connection to ``server`` (``host:port``, 9092 without a port) opens within ``timeout_s``."""
    host, sep, port = server.rpartition(":")
    if not sep:
        host, port = server, "9092"
    host = host.strip("[]")  # IPv6 literal "[::1]:9092"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def next_offsets(records: Sequence["RawRecord"]) -> dict[tuple[str, int], int]:
    """Per ``(topic, partition)`` of ``records``: the highest offset + 1 (what a commit stores)."""
    upto: dict[tuple[str, int], int] = {}
    topic, partition, high = None, None, -1
    for r in records:    # runs of one partition (how sources return them) cost a comparison a record
        if r.partition != partition or r.topic != topic:
            if topic is not None:
                upto[(topic, partition)] = max(upto.get((topic, partition), -1), high + 1)
            topic, partition, high = r.topic, r.partition, r.offset
        elif r.offset > high:
            high = r.offset
    if topic is not None:
        upto[(topic, partition)] = max(upto.get((topic, partition), -1), high + 1)
    return upto


def first_offsets(records: Sequence["RawRecord"]) -> dict[tuple[str, int], int]:
    """Per ``(topic, partition)`` of ``records``: the lowest offset (where a rewind seeks to)."""
    first: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        first[key] = min(first.get(key, r.offset), r.offset)
    return first


class SourceError(SentinelError):
    """The source cannot do what was asked (broker unreachable, commit rejected...).

    ``operation`` says what it was doing (``"kafka connect"``, ``"kafka commit"``...) and
    ``servers`` where it was trying to reach (e.g. the Kafka bootstrap servers); both are in the
    one-line message, e.g. ``kafka connect (10.0.0.5:9092) failed: no broker answered in 10 s``.
    """

    def __init__(self, operation: str, servers: Sequence[str] | str, problem: str):
        self.operation = operation
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.problem = " ".join(str(problem).split())  # keep it on one line
        super().__init__(f"{operation} ({','.join(self.servers)}) failed: {self.problem}")


class RawRecord(NamedTuple):
    """One record as the source delivered it, before any decoding.

    ``(topic, partition, offset)`` identifies it; it is what a stored sample keeps so a run can
    name exactly which traffic it used. ``timestamp_ms`` is the record's own timestamp (epoch
    milliseconds) or None when the source has none. Immutable, and a named tuple rather than a
    frozen dataclass: one is made per record, and this is a third of the cost.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None


#: ``record((topic, partition, offset, key, value, timestamp_ms))``: a :class:`RawRecord` made
#: without the Python-level ``__new__`` of a named tuple (60% of its cost), for sources' loops.
record = partial(tuple.__new__, RawRecord)


@runtime_checkable
class Source(Protocol):
    """A stream of :class:`RawRecord` with acknowledged progress.

    Lifecycle: construct (cheap, no I/O) → :meth:`start` → any number of :meth:`poll` /
    :meth:`commit` / :meth:`lag` / :meth:`ping` → :meth:`close`. A source is used from one
    thread (the ingest loop); only :meth:`ping` may also be called from another (health checks).

    Errors: connection and protocol failures are raised as :class:`SourceError` naming where the
    source tried to connect. A record that cannot be decoded is *not* an error here: the source
    returns its bytes and the decoder quarantines it.
    """

    def start(self) -> None:
        """Connect and subscribe. Raises :class:`SourceError` within a bounded time when the
        upstream is unreachable (it never blocks forever)."""
        ...

    def poll(self, timeout_ms: int | None = None) -> list[RawRecord]:
        """Return the next records, waiting at most ``timeout_ms`` (None: the configured
        default) when none are ready; an empty list is normal (nothing new, or a rebalance in
        progress). Records of one partition come in increasing offset order; there is no order
        across partitions. Each record is returned once per assignment: records that were
        polled but never committed come back only after a restart or a rebalance."""
        ...

    def rewind(self, records: Sequence[RawRecord]) -> None:
        """Make the next :meth:`poll` return ``records`` again (they were read but could not be
        stored): per partition, move the read position back to their first offset."""
        ...

    def commit(self, records: Sequence[RawRecord]) -> dict[tuple[str, int], int]:
        """Acknowledge ``records``: **commit only records already durably stored**.

        For each ``(topic, partition)`` among them, the committed position becomes the highest
        offset given + 1 (the next record to read after a restart). Blocks until the upstream
        confirmed it. Returns ``{(topic, partition): committed_offset}`` for what was committed;
        an empty ``records`` commits nothing and returns ``{}``. A commit never moves a
        partition's position backwards (offsets at or below what this source already committed
        are skipped). Raises :class:`SourceError` when the upstream rejects it (e.g. the
        partition was reassigned): those records will then be delivered again, to this or
        another consumer, which at-least-once ingest tolerates.
        """
        ...

    def lag(self) -> int | None:
        """Records available upstream but not yet returned by :meth:`poll`, summed over this
        source's partitions; None when unknown (not assigned yet, or not fetched yet). Cheap:
        no network round trip. Feeds ``sentinel_consumer_lag``."""
        ...

    def ping(self) -> bool:
        """True when the upstream is reachable now. Cheap (sub-second, bounded), never raises;
        used by ``/readyz``."""
        ...

    def close(self) -> None:
        """Leave the group and release connections **without** committing anything more (only
        :meth:`commit` acknowledges progress). Idempotent."""
        ...

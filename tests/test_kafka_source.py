"""KafkaSource against a real local Tansu broker (no mocks): consume, commit, resume, lag,
labels topic, unreachable broker."""
from __future__ import annotations

import json
import threading
import time

import pytest

from sentinel.config import KafkaConfig
from sentinel.errors import StateError
from sentinel.registry import resolve
from sentinel.sources import SOURCES, RawRecord, Source, SourceError
from sentinel.sources.kafka import KafkaSource, make_producer, produce_json
from sentinel.testing.broker import (FAST_GROUP, BrokerError, TansuBroker, broker_available, free_port,
                                    unique_name)

pytestmark = pytest.mark.kafka

N = 200
MALFORMED = [b"{not json", b"\xff\xfe\x00binary", b""]


def traffic(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"req-{i}", "inputs": [i * 0.5, 1.0, -2.0], "attributes": {"region": "eu" if i % 2 else "us"}}
            for i in range(start, start + n)]


def kcfg(broker, topic: str, **kw) -> KafkaConfig:
    base = dict(bootstrap_servers=[broker.bootstrap], topic=topic, group_id=unique_name("g"), **FAST_GROUP)
    base.update(kw)
    return KafkaConfig(**base)


def drain(source: KafkaSource, n: int, timeout_s: float = 20.0, max_polls: int | None = None) -> list[RawRecord]:
    """Poll until ``n`` records arrived (or the deadline; the group join happens in here)."""
    out: list[RawRecord] = []
    deadline = time.monotonic() + timeout_s
    polls = 0
    while len(out) < n and time.monotonic() < deadline:
        batch = source.poll(timeout_ms=200)
        if batch:
            polls += 1
        out.extend(batch)
        if max_polls is not None and polls >= max_polls:
            break
    return out


def produce(broker, topic: str, messages) -> int:
    producer = make_producer(broker.bootstrap)
    try:
        return produce_json(producer, topic, messages)
    finally:
        producer.close()


def test_kafka_source_is_registered_and_satisfies_the_protocol(broker, topic):
    assert resolve("source", "kafka", SOURCES) is KafkaSource
    assert isinstance(KafkaSource(kcfg(broker, topic)), Source)


def test_consume_commit_half_then_resume_exactly_at_the_committed_offset(broker, topic):
    sent = traffic(N) + [bytes(b) for b in MALFORMED]
    assert produce(broker, topic, sent) == len(sent)
    cfg = kcfg(broker, topic)

    first = KafkaSource(cfg)
    first.start()
    t0 = time.monotonic()
    got = drain(first, len(sent))
    elapsed = time.monotonic() - t0
    try:
        assert len(got) == len(sent), f"got {len(got)} of {len(sent)} in {elapsed:.1f} s"
        assert [r.offset for r in got] == list(range(len(sent)))
        assert {(r.topic, r.partition) for r in got} == {(topic, 0)}
        # values are raw bytes, exactly as produced; the malformed ones too
        assert [json.loads(r.value) for r in got[:N]] == sent[:N]
        assert [r.value for r in got[N:]] == MALFORMED
        assert got[0].key == b"req-0" and got[N].key is None
        assert all(isinstance(r.timestamp_ms, int) and r.timestamp_ms > 0 for r in got)
        assert first.lag() == 0  # everything fetched was returned

        half = len(sent) // 2
        assert first.commit(got[:half]) == {(topic, 0): half}
        assert first.committed() == {(topic, 0): half}
        # committing older records again never moves the offset backwards
        assert first.commit(got[:10]) == {}
        assert first.committed() == {(topic, 0): half}
    finally:
        first.close()
    first.close()  # idempotent

    # a second member of the same group resumes at the committed offset: no loss, no repeats.
    # Small polls so the lag can be seen part-way through.
    second = KafkaSource(cfg.model_copy(update={"max_poll_records": 50}))
    second.start()
    try:
        t0 = time.monotonic()
        head = drain(second, 1)
        join_s = time.monotonic() - t0
        assert [r.offset for r in head] == list(range(half, half + 50)), f"after {join_s:.1f} s"
        assert second.lag() == len(sent) - (half + 50)
        rest = drain(second, len(sent) - half - 50)
        resumed = head + rest
        assert [r.offset for r in resumed] == list(range(half, len(sent)))
        assert second.lag() == 0
        assert second.commit(resumed) == {(topic, 0): len(sent)}
        assert second.committed() == {(topic, 0): len(sent)}
        assert second.poll(timeout_ms=300) == []  # nothing left, nothing repeated
    finally:
        second.close()


def test_labels_topic_records_come_from_both_topics(broker, topic):
    labels = unique_name("labels")
    broker.create_topic(labels)
    produce(broker, topic, traffic(20))
    produce(broker, labels, [{"id": f"req-{i}", "label": i % 2} for i in range(5)])

    with KafkaSource(kcfg(broker, topic, labels_topic=labels)) as src:
        assert src.topics == [topic, labels]
        assert src.commit([]) == {}  # safe before anything was polled
        got = drain(src, 25)
        by_topic = {t: [r for r in got if r.topic == t] for t in (topic, labels)}
        assert len(by_topic[topic]) == 20 and len(by_topic[labels]) == 5
        assert json.loads(by_topic[labels][0].value) == {"id": "req-0", "label": 0}
        assert src.commit([]) == {}
        assert src.committed() == {}  # commit([]) committed nothing
        assert src.commit(got) == {(topic, 0): 20, (labels, 0): 5}
        assert src.committed() == {(topic, 0): 20, (labels, 0): 5}


def test_consume_2000_messages_in_batches(broker, topic):
    """Throughput smoke test: 2,000 messages through poll + commit per batch (printed with -s)."""
    n = 2000
    t0 = time.monotonic()
    produce(broker, topic, traffic(n))
    produce_s = time.monotonic() - t0
    with KafkaSource(kcfg(broker, topic)) as src:
        t0 = time.monotonic()
        first = drain(src, 1)  # includes the group join
        join_s = time.monotonic() - t0
        got = list(first)
        src.commit(first)
        t0 = time.monotonic()
        while len(got) < n and time.monotonic() - t0 < 20:
            batch = src.poll(timeout_ms=200)
            src.commit(batch)
            got.extend(batch)
        consume_s = time.monotonic() - t0
        assert [r.offset for r in got] == list(range(n))
        assert src.committed() == {(topic, 0): n}
    rate = (n - len(first)) / consume_s if consume_s > 0 else float("inf")
    print(f"\nkafka: produce {n} in {produce_s:.2f} s; group join + first poll {join_s:.2f} s; "
          f"consume+commit {n - len(first)} more in {consume_s:.3f} s ({rate:,.0f} msg/s)")


def test_unreachable_bootstrap_server_fails_fast_with_the_address():
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    src = KafkaSource(KafkaConfig(bootstrap_servers=[address]), connect_timeout_s=1.5)
    assert src.ping() is False
    threads_before = threading.active_count()
    t0 = time.monotonic()
    with pytest.raises(SourceError) as info:
        src.start()
    assert time.monotonic() - t0 < 5
    assert address in str(info.value) and "connect" in str(info.value)
    assert info.value.servers == [address]
    with pytest.raises(SourceError, match=address):
        make_producer(address, timeout_s=1.0)
    time.sleep(0.2)
    # the failed clients' network threads were stopped, not leaked
    assert threading.active_count() <= threads_before


def test_ping_and_lifecycle_errors(broker, topic):
    src = KafkaSource(kcfg(broker, topic))
    assert src.ping() is True
    assert src.lag() is None  # not started
    assert src.commit([]) == {}  # no-op even before start
    with pytest.raises(StateError):
        src.poll()
    src.close()  # closing a never-started source is fine


def test_sasl_plain_without_password_is_a_clear_error():
    cfg = KafkaConfig(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u",
                      sasl_password_env="SENTINEL_TEST_NO_SUCH_VAR")
    with pytest.raises(SourceError, match="sasl_password_env"):
        KafkaSource(cfg).start()
    conf = KafkaSource(cfg, password="s3cret").consumer_config()
    assert conf["sasl_plain_username"] == "u" and conf["sasl_plain_password"] == "s3cret"
    assert conf["enable_auto_commit"] is False and "value_deserializer" not in conf


def test_tansu_auto_creates_unknown_topics_with_four_partitions(broker):
    """Pinned broker behaviour (documented in sentinel.testing.broker): create topics first."""
    name = unique_name("auto")
    produce(broker, name, traffic(1))
    assert name in broker.topics()
    described = broker.admin().describe_topics([name])
    assert len(described[0]["partitions"]) == 4
    assert broker.create_topic(name) is False  # already there


def test_broker_binary_missing_is_a_reason_not_a_crash(monkeypatch):
    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")
    reason = broker_available()
    assert reason and "/nonexistent/tansu" in reason


def test_broker_start_failure_reports_its_log(tmp_path):
    broker = TansuBroker(binary="/bin/false", log_path=tmp_path / "b.log", start_timeout_s=5)
    with pytest.raises(BrokerError, match="exited with code 1") as info:
        broker.start()
    assert str(tmp_path / "b.log") in str(info.value)
    assert not broker.running


def test_own_broker_stops_at_once_with_a_client_connected():
    """SIGTERM would make Tansu wait ~5 s for connected clients; stop() must not."""
    with TansuBroker() as own:
        src = KafkaSource(KafkaConfig(bootstrap_servers=[own.bootstrap], **FAST_GROUP))
        src.start()
        try:
            assert src.ping()
            t0 = time.monotonic()
            own.stop()
            assert time.monotonic() - t0 < 2
            assert not own.running and src.ping() is False
        finally:
            src.close()


def test_commits_resume_after_the_broker_loses_the_topic_and_the_group():
    """A memory-only broker restarted on the same port (the production case of a re-created
    topic or a reset group): offsets restart at 0, below what this source committed before.
    The source must commit them again, on the same consumer, without a restart of Sentinel."""
    port = free_port()
    name = unique_name("recreated")
    first = TansuBroker(port=port).start()
    first.create_topic(name)
    produce(first, name, traffic(30))
    src = KafkaSource(KafkaConfig(bootstrap_servers=[first.bootstrap], topic=name, group_id=unique_name("g"),
                                  **FAST_GROUP))
    src.start()
    try:
        got = drain(src, 30)
        assert src.commit(got) == {(name, 0): 30}
        first.stop()
        with TansuBroker(port=port) as second:   # empty: no topic, no group, no offsets
            second.create_topic(name)
            produce(second, name, traffic(10, start=100))
            again = drain(src, 10, timeout_s=60)
            assert [json.loads(r.value)["id"] for r in again] == [f"req-{i}" for i in range(100, 110)]
            assert [r.offset for r in again] == list(range(10))
            assert src.commit(again) == {(name, 0): 10}   # below the 30 committed before: committed anyway
            assert src.committed() == {(name, 0): 10}
            produce(second, name, traffic(5, start=200))
            more = drain(src, 5)
            assert src.commit(more) == {(name, 0): 15}
            assert src.commit(again[:3]) == {}   # still never backwards within one assignment
            assert src.committed() == {(name, 0): 15}
    finally:
        src.close()
        first.stop()


def test_backoffs_come_from_config():
    conf = KafkaSource(KafkaConfig(reconnect_backoff_max_ms=1500, retry_backoff_ms=150)).consumer_config()
    assert (conf["reconnect_backoff_ms"], conf["reconnect_backoff_max_ms"], conf["retry_backoff_ms"]) == (100, 1500, 150)

"""One contract for every Kafka source, run over both clients (kafka-python, in the daemon's process
and in a consumer process of its own, and librdkafka) against the real Tansu broker: delivery in offset order with raw bytes, commit only when told and
never backwards, a restart resumes at the committed offset, rewind re-reads, a rebalance hands
uncommitted records to the other member, unreachable brokers fail fast. The SIGKILL no-loss /
no-duplicate test runs over both clients in tests/test_daemon.py."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from sentinel.config import Config, KafkaConfig
from sentinel.sources import Source, SourceError
from sentinel.sources.base import build_source
from sentinel.sources.confluent import ConfluentSource, produce_values
from sentinel.sources.kafka import KafkaSource, make_producer
from sentinel.sources.process import ProcessSource
from sentinel.testing.broker import FAST_GROUP, unique_name

pytestmark = pytest.mark.kafka

# each source by a name: its kafka.client, and whether kafka-python's consumer runs in a process of its own
CLIENTS = {"kafka-python": KafkaSource, "kafka-python-process": ProcessSource, "confluent": ConfluentSource}
MALFORMED = [b"{not json", b"\xff\xfe\x00binary", b""]


@pytest.fixture(params=sorted(CLIENTS))
def client(request) -> str:
    return request.param


def settings(client: str) -> dict:
    """The kafka settings that choose the source ``client`` names."""
    return {"client": client.removesuffix("-process"), "consumer_process": client.endswith("-process")}


def kcfg(broker, topic: str, client: str, **kw) -> KafkaConfig:
    base = dict(bootstrap_servers=[broker.bootstrap], topic=topic, group_id=unique_name("g"), **settings(client),
                **FAST_GROUP)
    base.update(kw)
    return KafkaConfig(**base)


def source(cfg: KafkaConfig):
    return CLIENTS[cfg.client + ("-process" if cfg.consumer_process and cfg.client == "kafka-python" else "")](cfg)


def values(n: int, start: int = 0) -> list[bytes]:
    return [json.dumps({"id": f"req-{i}", "inputs": [i, 1.0]}).encode() for i in range(start, start + n)]


def drain(src, n: int, timeout_s: float = 30.0, commit: bool = False) -> list:
    out: list = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        batch = src.poll(timeout_ms=200)
        out.extend(batch)
        if commit:
            src.commit(batch)
    return out


def test_kafka_client_chooses_the_source_class(client):
    cfg = Config.model_validate({"pairs": {"p": {"baseline": {"path": "a"}, "candidate": {"path": "b"},
                                                 "classes": ["x", "y"]}}, "kafka": settings(client)})
    src = build_source(cfg)
    assert type(src) is CLIENTS[client] and isinstance(src, Source)


def test_delivery_commit_and_resume_at_the_committed_offset(broker, topic, client):
    sent = values(300) + MALFORMED
    keys = [f"req-{i}".encode() for i in range(300)] + [None] * len(MALFORMED)
    produce_values(broker.bootstrap, topic, sent, keys)
    cfg = kcfg(broker, topic, client)
    with source(cfg) as first:
        got = drain(first, len(sent))
        assert [r.offset for r in got] == list(range(len(sent)))
        assert [r.value for r in got] == sent          # raw bytes, malformed ones too
        assert got[0].key == b"req-0" and got[-1].key is None
        assert all(isinstance(r.timestamp_ms, int) and r.timestamp_ms > 0 for r in got)
        assert first.lag() == 0
        assert first.commit([]) == {}
        half = len(sent) // 2
        assert first.commit(got[:half]) == {(topic, 0): half}
        assert first.commit(got[:10]) == {}                # never backwards
        assert first.committed() == {(topic, 0): half}
    # uncommitted records come back to the next member, committed ones never
    with source(cfg.model_copy(update={"max_poll_records": 50})) as second:
        head = drain(second, 1)
        assert [r.offset for r in head][:1] == [half]
        rest = drain(second, len(sent) - half - len(head))
        assert [r.offset for r in head + rest] == list(range(half, len(sent)))
        assert second.commit(head + rest) == {(topic, 0): len(sent)}
        assert second.poll(timeout_ms=300) == []


def test_rewind_reads_the_same_records_again(broker, topic, client):
    produce_values(broker.bootstrap, topic, values(100))
    with source(kcfg(broker, topic, client)) as src:
        got = drain(src, 100)
        src.rewind(got[40:])
        again = drain(src, 60)
        assert [r.offset for r in again] == list(range(40, 100))
        assert [r.value for r in again] == [r.value for r in got[40:]]


def test_rewind_after_reading_ahead_re_reads_from_there_without_a_gap(broker, client):
    # two partitions of 10 records, read 10 at a time; time for the source to fetch (and the
    # consumer process to read the other partition ahead) beyond the first batch, which is rewound
    topic = unique_name("topic")
    broker.create_topic(topic, partitions=2)
    producer = make_producer(broker.bootstrap)
    try:
        for i, v in enumerate(values(20)):
            producer.send(topic, value=v, partition=i % 2)
        producer.flush(30)
    finally:
        producer.close()
    with source(kcfg(broker, topic, client, max_poll_records=10)) as src:
        first = drain(src, 1)
        time.sleep(1.0)
        src.rewind(first)
        again = drain(src, 20)
        assert sorted((r.partition, r.offset) for r in again) == [(p, o) for p in (0, 1) for o in range(10)]
        assert src.poll(timeout_ms=300) == []


def test_a_dead_consumer_process_is_reported_once_and_replaced(broker, topic):
    produce_values(broker.bootstrap, topic, values(50))
    with source(kcfg(broker, topic, "kafka-python-process")) as src:
        got = drain(src, 50)
        assert src.commit(got[:20]) == {(topic, 0): 20}
        os.kill(src.pid, signal.SIGKILL)
        with pytest.raises(SourceError, match="consumer process ended"):
            for _ in range(50):
                src.poll(timeout_ms=100)
        assert src.pid is None and src.lag() is None
        # the next poll starts another, which reads again what was not committed
        again = drain(src, 30)
        assert [r.offset for r in again] == list(range(20, 50))
        assert src.commit(again) == {(topic, 0): 50} and src.committed() == {(topic, 0): 50}


def test_labels_topic_is_read_too(broker, topic, client):
    labels = unique_name("labels")
    broker.create_topic(labels)
    produce_values(broker.bootstrap, topic, values(20))
    produce_values(broker.bootstrap, labels, [json.dumps({"id": f"req-{i}", "label": 1}).encode() for i in range(5)])
    with source(kcfg(broker, topic, client, labels_topic=labels)) as src:
        got = drain(src, 25)
        assert sorted({r.topic for r in got}) == sorted([topic, labels]) and len(got) == 25
        assert src.commit(got) == {(topic, 0): 20, (labels, 0): 5}
        assert src.committed() == {(topic, 0): 20, (labels, 0): 5}


def _assigned(src) -> set[int]:
    if isinstance(src, ProcessSource):
        return {p for _, p in src.assignment()}
    return {tp.partition for tp in src._consumer.assignment()}


def test_rebalance_spreads_partitions_and_hands_them_over(broker, client):
    topic = unique_name("topic")
    broker.create_topic(topic, partitions=4)
    cfg = kcfg(broker, topic, client)
    a, b = source(cfg), source(cfg)
    a.start()
    b.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                _assigned(a) and _assigned(b) and _assigned(a) | _assigned(b) == {0, 1, 2, 3}
                and not _assigned(a) & _assigned(b)):
            a.poll(timeout_ms=100)
            b.poll(timeout_ms=100)
        mine = {"a": _assigned(a), "b": _assigned(b)}
        assert mine["a"] and mine["b"] and not mine["a"] & mine["b"], mine
        produce_values(broker.bootstrap, topic, values(400), [f"k{i}".encode() for i in range(400)])
        got: dict[str, list] = {"a": [], "b": []}
        deadline = time.monotonic() + 40
        while len(got["a"]) + len(got["b"]) < 400 and time.monotonic() < deadline:
            for name, src in (("a", a), ("b", b)):
                batch = src.poll(timeout_ms=100)
                got[name].extend(batch)
                src.commit(batch)
        for name in got:   # each member read its own partitions only, and both read
            assert got[name] and {r.partition for r in got[name]} <= mine[name]
        assert len({(r.partition, r.offset) for r in got["a"] + got["b"]}) == 400 == len(got["a"] + got["b"])
    finally:
        a.close()
    # a left: b takes its partitions over from their committed offsets (nothing committed is
    # read again; what b read but had not committed when the group rebalanced may be)
    produce_values(broker.bootstrap, topic, values(40, start=400), [f"k{i}".encode() for i in range(400, 440)])
    try:
        late = drain(b, 40, timeout_s=40, commit=True)
        assert sorted(json.loads(r.value)["id"] for r in late) == sorted(f"req-{i}" for i in range(400, 440))
        assert {r.partition for r in late} - mine["b"], "a's partitions should have moved to b"
        assert b.poll(timeout_ms=500) == []
    finally:
        b.close()


def test_unreachable_broker_fails_start_fast_naming_the_address(client):
    from sentinel.testing.broker import free_port

    cfg = KafkaConfig(bootstrap_servers=[f"127.0.0.1:{free_port()}"], topic="t", **settings(client))
    src = CLIENTS[client](cfg, connect_timeout_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(SourceError) as err:
        src.start()
    assert time.monotonic() - t0 < 15
    assert "127.0.0.1" in str(err.value) and "kafka connect" in str(err.value)
    assert src.ping() is False


def test_sasl_plain_without_password_is_a_clear_error(client):
    cfg = KafkaConfig(bootstrap_servers=["127.0.0.1:1"], topic="t", **settings(client), sasl_mechanism="PLAIN",
                      security_protocol="SASL_PLAINTEXT")
    with pytest.raises(SourceError, match="sasl_username and a password"):
        CLIENTS[client](cfg).consumer_config()


def test_librdkafka_gets_every_setting_of_the_kafka_python_source_under_its_own_names():
    cfg = KafkaConfig(bootstrap_servers=["a:9092", "b:9093"], topic="t", group_id="g", client="confluent",
                      security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
                      ssl_cafile="/ca.pem", reconnect_backoff_max_ms=1500)
    conf = ConfluentSource(cfg, password="pw").consumer_config()
    assert conf["bootstrap.servers"] == "a:9092,b:9093" and conf["group.id"] == "g"
    assert conf["security.protocol"] == "sasl_ssl" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (conf["sasl.username"], conf["sasl.password"], conf["ssl.ca.location"]) == ("u", "pw", "/ca.pem")
    assert conf["enable.auto.commit"] is False and conf["enable.auto.offset.store"] is False
    assert conf["reconnect.backoff.max.ms"] == 1500
    # a full fetch queue pauses fetching 10 ms, not librdkafka's 1 s (which halved ingest at rate 0.1)
    assert conf["fetch.queue.backoff.ms"] == 10
    from confluent_kafka import Consumer
    # librdkafka knows every name (the CA file is read at construction: leave it out here)
    Consumer({k: v for k, v in conf.items() if k not in ("logger", "ssl.ca.location")}).close()


def test_the_consumer_process_parent_never_imports_kafka_python(broker, topic):
    """kafka-python (~18 MB of the daemon's memory, docs/performance.md) is imported by the
    consumer process only: a parent that builds the default source from config, reads, commits
    and closes it has no ``kafka`` module loaded. Run in a fresh interpreter (this one has it)."""
    import subprocess
    import sys

    produce_values(broker.bootstrap, topic, values(50))
    script = f"""
import json, sys, time
from sentinel.config import Config
from sentinel.sources.base import build_source
cfg = Config.model_validate({{"pairs": {{"p": {{"baseline": {{"path": "a"}}, "candidate": {{"path": "b"}},
                                             "classes": ["x", "y"]}}}},
                             "kafka": {json.dumps(dict(bootstrap_servers=[broker.bootstrap], topic=topic,
                                                       group_id=unique_name("g"), **FAST_GROUP))}}})
src = build_source(cfg)
src.start()
got, deadline = [], time.monotonic() + 60
while len(got) < 50 and time.monotonic() < deadline:
    batch = src.poll(200)
    src.commit(batch)
    got += batch
src.close()
print(json.dumps({{"source": type(src).__name__, "read": len(got),
                  "kafka": sorted(m for m in sys.modules if m == "kafka" or m.startswith("kafka."))}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"source": "ProcessSource", "read": 50, "kafka": []}

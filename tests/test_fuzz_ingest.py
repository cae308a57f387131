"""No input stops ingest, and the store never refuses what the decoder accepted.

A seeded, bounded hypothesis fuzz over the real ``read_batch`` -> ``Store.ingest`` path on SQLite
and PostgreSQL, with the hostile families of issue 9 mixed with valid messages; and the daemon's
ingest against the real broker while PostgreSQL refuses connections (nothing quarantined, nothing
lost once it is back).
"""
from __future__ import annotations

import datetime
import itertools
import json
import socket
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.daemon import read_batch
from sentinel.messages import PairShape
from sentinel.sampling import Sampler
from sentinel.sources.base import RawRecord
from sentinel.storage import open_store

from stores import store_url  # noqa: F401  (fixture)

FEATURES = ("a", "b", "c")
REASONS = {"empty", "too_large", "not_utf8", "too_deep", "invalid_json", "not_an_object", "missing_id", "bad_id",
           "missing_inputs", "bad_inputs", "shape_mismatch", "non_finite", "unknown_model", "bad_label", "bad_ts",
           "bad_attributes", "invalid_unicode", "nul_character",
           "bad_dtype"}   # a double beyond float32's range; decoder_error would be a decoder bug

# -- messages -------------------------------------------------------------------------------------
# text with everything the store cannot take: lone surrogates, NUL, other control characters
hostile_text = st.text(st.characters(categories=["L", "N", "P", "Cc", "Cs", "So"]), max_size=12)
plain_text = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=8)
numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=64))
json_leaf = st.one_of(st.none(), st.booleans(), numbers, hostile_text,
                      st.integers(-10**30, 10**30), st.floats())      # big ints, NaN, Infinity too
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(hostile_text, inner, max_size=3)),
                          max_leaves=8)
ids = st.one_of(st.sampled_from(["a", "b", "dup"]), plain_text, hostile_text, st.integers(-5, 5),
                st.text(min_size=250, max_size=300))
labels = st.one_of(st.sampled_from([0, 1, "benign", "malignant", "²", "١", "01", 1.5, True, 10**25]),
                   st.text(min_size=100, max_size=200), hostile_text)
timestamps = st.one_of(st.sampled_from(["2026-11-21T10:00:00Z", "0001-01-01T00:00:00+01:00",
                                        "9999-12-31T23:59:59-01:00", "1969-12-31T23:59:59Z", "yesterday"]),
                       st.integers(-2**63, 2**63), st.floats())
attributes = st.dictionaries(st.one_of(st.sampled_from(["region", "device"]), hostile_text),
                             st.one_of(plain_text, hostile_text, st.text(min_size=100, max_size=300),
                                       st.integers(), st.booleans(), st.none(), st.floats()), max_size=3)
inputs = st.one_of(st.lists(numbers, min_size=3, max_size=3), st.lists(json_leaf, min_size=2, max_size=4),
                   st.fixed_dictionaries({f: numbers for f in FEATURES}),
                   st.dictionaries(st.sampled_from(FEATURES), json_leaf, max_size=3))
message = st.fixed_dictionaries({"id": ids, "inputs": inputs},
                                optional={"attributes": attributes, "label": labels, "ts": timestamps,
                                          "meta": json_value, "model": st.sampled_from(["triage", "other"])})
# messages the format allows, at its edges: any Unicode but lone surrogates and NUL, 19-digit
# integers, doubles up to 1.8e308, -0.0 and subnormals, values at the length limits
fine_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)
fine_leaf = st.one_of(st.none(), st.booleans(), numbers, fine_text, st.integers(-(2**63), 2**63 - 1),
                      st.sampled_from([1.7e308, -0.0, 5e-324, 2**53 + 1]))
fine_value = st.recursive(fine_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(fine_text, inner, max_size=3)),
                          max_leaves=8)
fine_message = st.fixed_dictionaries(
    {"id": st.one_of(st.sampled_from(["a", "b", "dup"]), st.text(st.characters(blacklist_categories=["Cs"],
                                                                                blacklist_characters="\x00"),
                                                                 min_size=1, max_size=256))},
    optional={"inputs": st.lists(numbers, min_size=3, max_size=3),
              "attributes": st.dictionaries(st.one_of(st.sampled_from(["region", "device"]), fine_text),
                                            st.one_of(fine_text, st.text(min_size=120, max_size=128),
                                                      st.integers()), max_size=3),
              "label": st.one_of(st.sampled_from([0, 1, "benign", "malignant", "1", 1.0])),
              "ts": st.one_of(st.sampled_from(["2026-11-21T10:00:00+05:30", "1970-01-01T00:00:00Z",
                                               "9999-12-31T23:59:59Z"]), st.integers(0, 253_402_300_799_999)),
              "meta": fine_value}).map(lambda m: {**m, "inputs": m.get("inputs", [1, 2, 3])})


@st.composite
def encoded(draw, messages=message) -> bytes:
    """One message written the ways producers (and attackers) write JSON: ASCII escapes
    (``\\ud800``) or raw UTF-8, where surrogates become CESU bytes (``\\xed\\xa0\\x80``)."""
    text = json.dumps(draw(messages), ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


def spliced(fragments: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A valid message with a raw JSON fragment json.dumps cannot write as one of its fields."""
    base = b'{"id": "s", "inputs": [1, 2, 3], "attributes": {"region": "eu"}'
    return st.builds(lambda key, frag: base + b', "' + key + b'": ' + frag + b"}",
                     st.sampled_from([b"inputs", b"meta", b"label", b"ts", b"id", b"attributes"]), fragments)


deep = st.integers(30, 5000).map(lambda n: b"[" * n + b"]" * n)
huge_int = st.integers(18, 6000).map(lambda n: b"1" + b"0" * n)
literals = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"[1, NaN, 2]", b"[1, 1e400, 3]",
                            b'{"x": [Infinity]}'])
raw_strings = st.sampled_from([b'"\\ud800"', b'"a\xed\xa0\x80b"', b'"\\u0000"', b'"a\x00b"', b'"caf\xe9"',
                               b'"\\udfff\\ud800"', b'{"\\ud800": "x"}', b'{"region": "\\u0000"}'])
utf16 = st.builds(lambda m, enc: json.dumps(m).encode(enc), message,
                  st.sampled_from(["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-16", "utf-8-sig"]))
record_value = st.one_of(encoded(fine_message), encoded(fine_message), encoded(fine_message), encoded(),
                         encoded(), spliced(deep), spliced(huge_int), spliced(literals),
                         spliced(raw_strings), utf16, st.binary(max_size=200), st.none(),
                         st.just(b'{"id":"x","inputs":' + b"[" * 100_000 + b"]" * 100_000 + b"}"))
kafka_ts = st.one_of(st.none(), st.just(-1), st.integers(0, 2**63 - 1), st.just(253_402_300_800_000))
batches = st.lists(st.tuples(record_value, kafka_ts), min_size=1, max_size=10)

_namespace = itertools.count()


def check_batch(store, batch) -> None:
    """The invariant, for one polled batch of ``n`` records with distinct offsets:
    decode: each record becomes exactly one sample row or one quarantine row (n = S + Q);
    store: nothing is refused (``rejected`` is empty); of the S samples, the first of each
    (pair, id) is stored and every later one is a duplicate, so stored = distinct ids and
    stored + duplicates + quarantined = n; and every stored row reads back as it was decoded."""
    k = next(_namespace)
    pair, topic = f"p{k}", f"t{k}"
    shapes = {pair: PairShape(pair, (3,), ("benign", "malignant"), FEATURES)}
    records = [RawRecord(topic, 0, i, None, v.replace(b'"triage"', f'"{pair}"'.encode()) if v else v, ts)
               for i, (v, ts) in enumerate(batch)]
    decoded = read_batch(records, shapes, Sampler(stratify_by=("region", "device")), None)
    samples, labels, bad = decoded.samples, decoded.labels, decoded.bad
    assert len(samples) + len(bad) == len(records) and not labels and decoded.not_sampled == 0
    assert {q.reason for q in bad} <= REASONS, [q.detail for q in bad if q.reason not in REASONS]
    res = store.ingest(samples, [], bad, window=10**6, rate=1.0)
    first = {}
    for s in samples:
        first.setdefault(s.msg_id, s)
    assert res.rejected == []
    assert (res.stored, res.duplicates, res.quarantined) == (len(first), len(samples) - len(first), len(bad))
    assert res.stored + res.duplicates + res.quarantined == len(records)
    run = store.create_run(pair, "fuzz", {})
    back = {s.msg_id: s for s in store.claim_window(pair, run)}
    assert set(back) == set(first)
    for mid, s in first.items():
        got = back[mid]
        assert (got.attributes, got.label, got.extra, got.ts, got.offset) == \
            (s.attributes, s.label, s.extra, s.ts, s.offset)
        assert got.inputs.keys() == s.inputs.keys()     # dtype, shape and values kept
        assert all(got.inputs[k].dtype == v.dtype and np.array_equal(got.inputs[k], v) for k, v in s.inputs.items())
    stored_q = [q for q in store.quarantined(limit=10**6) if q["topic"] == topic]
    assert sorted(q["offset"] for q in stored_q) == sorted(q.offset for q in bad)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(batch=batches)
def test_fuzzed_batches_are_stored_or_quarantined_whole_on_both_backends(store_url, batch):  # noqa: F811
    store = _stores.get(store_url) or _stores.setdefault(store_url, open_store(store_url))
    check_batch(store, batch)


_stores: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _dispose_stores():
    yield
    for s in _stores.values():
        s.dispose()
    _stores.clear()


# -- a store that is down -------------------------------------------------------------------------

class TcpProxy:
    """A TCP forwarder to PostgreSQL that can be closed (connections refused, open ones cut) and
    opened again on the same port: a database server that goes away and comes back."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []

    def open(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(16)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def close(self) -> None:
        if self._listener is not None:
            # shutdown first: close() alone does not wake a thread blocked in accept(), and the
            # port would go on accepting
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.mark.postgres
@pytest.mark.kafka
def test_the_daemon_keeps_a_batch_while_postgresql_refuses_connections(tmp_path, broker, topic, store_url):  # noqa: F811
    if not store_url.startswith("postgresql"):
        pytest.skip("this case needs a PostgreSQL server to take away (the SQLite case: test_storage.py)")
    from sqlalchemy.engine import make_url

    from sentinel.config import load_config
    from sentinel.app import build
    from sentinel.daemon import Daemon
    from sentinel.sources.kafka import make_producer

    from pairs import example_config

    real = make_url(store_url)
    proxy = TcpProxy((real.host, real.port or 5432))
    proxy.open()
    url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    kafka = {"bootstrap_servers": [broker.bootstrap], "topic": topic, "group_id": f"g-{topic}",
             "session_timeout_ms": 6000, "heartbeat_interval_ms": 2000, "poll_timeout_ms": 200}
    cfg = load_config(example_config(tmp_path, bootstrap=broker.bootstrap, topic=topic, kafka=kafka, store_url=url))
    d = Daemon(build(cfg, load_models=False), install_signals=False, serve_api=False)
    d.start()
    try:
        assert d.last_write_ok == 0.0 and d.write_error is None
        proxy.close()                                    # PostgreSQL goes away
        p = make_producer([broker.bootstrap])
        good = [json.dumps({"id": f"{topic}-{i}", "inputs": [0.1] * 30}).encode() for i in range(20)]
        for v in good + [b"not json"]:
            p.send(topic, value=v)
        p.flush()
        p.close()
        deadline = time.monotonic() + 60
        while d.write_error is None and d.last_write_ok == 0.0 and time.monotonic() < deadline:
            d.ingest_once()
        assert d.last_write_ok == 0.0, "a write went through while PostgreSQL was away"
        assert d.write_error is not None and "\n" not in d.write_error
        quarantined = sum(s.value for m in d.metrics.registry.collect() if m.name == "sentinel_messages_quarantined"
                          for s in m.samples if s.name == "sentinel_messages_quarantined_total")
        assert quarantined == 0                          # a store that is down quarantines nothing
        proxy.open()                                     # and it is back
        while d.store.count("samples") + d.store.count("quarantine") < 21 and time.monotonic() < deadline:
            d.ingest_once()
        assert (d.store.count("samples"), d.store.count("quarantine")) == (20, 1)
        assert d.write_error is None and d.last_write_ok > 0
        assert {r["reason"] for r in d.store.quarantined()} == {"invalid_json"}
    finally:
        d.shutdown()
        proxy.close()


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(batch=batches)
def test_below_rate_one_a_message_is_sampled_first_and_otherwise_decoded_as_before(batch):
    """At rate 0.3 the sampling decision comes before the full decode (``quick_id``): every record
    is one sample, one quarantine row or counted not sampled; every record the rate keeps is
    decoded exactly as at rate 1, and so is one whose id the quick path cannot read for certain;
    a record outside the sample is counted, never decoded (malformed, it is not quarantined)."""
    shapes = {"triage": PairShape("triage", (3,), ("benign", "malignant"), FEATURES)}
    records = [RawRecord("t", 0, i, None, v, ts) for i, (v, ts) in enumerate(batch)]
    every = read_batch(records, shapes, Sampler(), None)
    some = read_batch(records, shapes, Sampler(rate=0.3), None)
    assert every.not_sampled == 0 and len(some.samples) + len(some.bad) + some.not_sampled == len(records)
    as_before = {s.offset: s for s in every.samples}
    bad_before = {q.offset: q.reason for q in every.bad}
    for s in some.samples:
        assert s.offset in as_before
        assert (s.msg_id, s.sample_key, s.stratum) == \
            (as_before[s.offset].msg_id, as_before[s.offset].sample_key, as_before[s.offset].stratum)
    kept = {o for o, s in as_before.items() if s.sample_key < 0.3}
    assert kept <= {s.offset for s in some.samples}          # none the rate keeps is lost to the quick path
    for q in some.bad:
        assert bad_before[q.offset] == q.reason


def _encodings(m: dict) -> list[bytes]:
    """A message as producers may write it: escaped, raw UTF-8 (lone surrogates as raw bytes),
    with its escaped control characters and surrogates written raw, and with a number no double
    holds or a NaN put in front."""
    escaped = json.dumps(m).encode()
    raw = json.dumps(m, ensure_ascii=False).encode("utf-8", "surrogatepass")
    unescaped = escaped
    for code in (0, 1, 0x1f):
        unescaped = unescaped.replace(b"\\u%04x" % code, bytes([code]))
    return [escaped, raw, unescaped, unescaped.replace(b"\\ud800", "\ud800".encode("utf-8", "surrogatepass")),
            b'{"z":1e400,' + escaped[1:], b'{"z":[-Infinity],' + raw[1:], b'{"z":{"n":NaN},' + escaped[1:]]


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(m=st.one_of(message, fine_message))
def test_a_message_whose_value_checks_are_skipped_passes_them(m):
    """The decoder skips check_values for bytes without a backslash that orjson parsed (every
    string and number is then known to be fine): for every such message, the checks pass."""
    from sentinel.errors import MessageError
    from sentinel.messages import _parse, check_values

    for value in _encodings(m):
        try:
            obj, checked = _parse(value, 1 << 20)
        except MessageError:
            continue
        if checked:
            check_values(obj, skip=())   # raises if a skip were wrong


def test_value_checks_are_skipped_only_where_they_cannot_fail():
    from sentinel.messages import _parse

    assert _parse(b'{"id":"a","inputs":[1.5,2,3],"attributes":{"region":"eu"}}', 1 << 20)[1]
    assert not _parse(b'{"id":"a","inputs":[1,2,3],"note":"\\u0000"}', 1 << 20)[1]   # an escape: checked
    assert not _parse('{"id":"a","inputs":[1,2,3]}', 1 << 20)[1]                    # str: may hold surrogates
    assert not _parse(b'{"id":"a","inputs":[1,2,3],"x":NaN}', 1 << 20)[1]           # the standard decoder's


# inputs at float32's edges and where a conversion could round twice: the batch decoder's numpy
# call must give each message's own arrays
edge_numbers = st.one_of(numbers, st.sampled_from([3.4028234663852886e38, -3.4028234663852886e38,
                                                   3.4028235677973366e38, 3.4028235e38, 3.5e38, 1e-46, -0.0,
                                                   2**60 + 2**36 + 1, -(2**62 + 2**38 + 1), 2**63 - 1, True]))
edge_message = st.fixed_dictionaries({"id": st.sampled_from(["a", "b", "dup", 7]),
                                      "inputs": st.lists(edge_numbers, min_size=2, max_size=4)},
                                     optional={"attributes": attributes, "label": labels, "ts": timestamps})
many_batches = st.lists(st.tuples(st.one_of(record_value, encoded(edge_message), encoded(edge_message)), kafka_ts),
                        min_size=1, max_size=12)


def _outcome(m):
    from sentinel.errors import MessageError

    if isinstance(m, MessageError):
        return ("error", m.reason, m.detail)
    if isinstance(m, Exception):
        return ("bug", type(m).__name__, str(m))
    from sentinel.tensors import encode_row

    now = abs((m.ts - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) < 60   # no ts given: the clock's
    # the stored form the batch decoder makes in bulk is the one the store would make of the inputs
    assert m.stored is None or m.stored == encode_row(m.inputs)
    return (m.id, m.pair, "now" if now else m.ts, m.attributes, m.label, m.extra, m.text,
            {k: (a.dtype.str, a.shape, a.tobytes()) for k, a in m.inputs.items()})


def _one_by_one(values, stamps, shapes):
    """``decode_traffic`` of each message alone: its message or the exception it raises."""
    from sentinel.messages import decode_traffic

    alone = []
    for v, ts in zip(values, stamps):
        try:
            alone.append(decode_traffic(v, shapes, timestamp_ms=ts, encode_text=False))
        except Exception as exc:   # noqa: BLE001
            alone.append(exc)
    return alone


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(batch=many_batches)
def test_a_batch_decodes_as_its_messages_one_by_one(batch):
    """``decode_traffic_many`` (the daemon's decoder of a polled batch) gives each message what
    ``decode_traffic`` gives it alone: the same message, arrays equal to the byte, or the same
    error with the same detail; for well-formed, malformed and hostile messages mixed."""
    from sentinel.messages import decode_traffic_many

    shapes = {"triage": PairShape("triage", (3,), ("benign", "malignant"), FEATURES)}
    values, stamps = [v for v, _ in batch], [ts for _, ts in batch]
    alone = _one_by_one(values, stamps, shapes)
    together = decode_traffic_many(values, stamps, shapes)
    assert [_outcome(m) for m in together] == [_outcome(m) for m in alone]


def test_values_a_batch_shares_are_decoded_per_type_not_per_equal_key():
    """Timestamps and attributes are decoded once per distinct value in a batch, but ``1``,
    ``1.0`` and ``true`` are equal keys in Python: each keeps its own answer, as alone."""
    from sentinel.messages import decode_traffic_many

    shapes = {"triage": PairShape("triage", (3,), ("benign", "malignant"), FEATURES)}
    bodies = [{"attributes": {"region": v}} for v in ("1", 1, True, 1.0, "1", 1)]
    bodies += [{"ts": v} for v in (1, 1.0, True, "1970-01-01T00:00:00.001Z", 1, True)]
    values = [json.dumps({"id": f"m{i}", "inputs": [1, 2, 3], **b}).encode() for i, b in enumerate(bodies)]
    stamps = [5, 5, -1, None, 5, 7] * 2
    alone = _one_by_one(values, stamps, shapes)
    together = decode_traffic_many(values, stamps, shapes)
    assert [_outcome(m) for m in together] == [_outcome(m) for m in alone]
    ok, bad = "TrafficMessage", "MessageError"
    assert [type(m).__name__ for m in together] == [ok, ok, bad, bad, ok, ok] + [ok, ok, bad, ok, ok, bad]
    assert together[0].attributes is together[4].attributes   # shared: written once by the store


wide_message = st.fixed_dictionaries({"id": st.sampled_from(["a", "b", 7]),
                                      "inputs": st.lists(edge_numbers, min_size=69, max_size=71)})


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(st.one_of(encoded(wide_message), st.lists(numbers, min_size=70, max_size=70).map(
    lambda x: json.dumps({"id": "w", "inputs": x}).encode())), min_size=1, max_size=6))
def test_a_batch_of_wide_inputs_decodes_as_its_messages_one_by_one(batch):
    """Inputs longer than the plain-Python check's limit (70 values: converted through float64)
    in a batch give each message's own arrays and errors too."""
    from sentinel.messages import decode_traffic_many

    shapes = {"wide": PairShape("wide", (70,), ("benign", "malignant"))}
    alone = _one_by_one(batch, [0] * len(batch), shapes)
    assert [_outcome(m) for m in decode_traffic_many(batch, [0] * len(batch), shapes)] == [_outcome(m) for m in alone]


def test_the_batch_decoder_reads_a_batch_of_plain_messages_in_one_numpy_call(monkeypatch):
    """The fast path is taken (the one numpy call for the batch's inputs), and a message it cannot
    take (a backslash; a value beyond float32) is still decoded, or refused, as on its own."""
    from sentinel import messages

    shapes = {"triage": PairShape("triage", (3,), ("benign", "malignant"), FEATURES)}
    calls = []
    real = messages._flat_float32_rows
    monkeypatch.setattr(messages, "_flat_float32_rows", lambda lists, spec: calls.append(len(lists)) or real(lists, spec))
    values = [json.dumps({"id": f"m{i}", "inputs": [i, 1.5, -2]}).encode() for i in range(5)]
    values += [b'{"id": "q\\"", "inputs": [1, 2, 3]}', b'{"id": "big", "inputs": [1, 2, 3.5e38]}']
    got = messages.decode_traffic_many(values, [0] * len(values), shapes)
    assert calls == [6]   # the five plain messages and the one beyond float32's range; the escaped one alone
    assert [m.id for m in got[:6]] == ["m0", "m1", "m2", "m3", "m4", 'q"']
    assert got[3].inputs["input"].tolist() == [3.0, 1.5, -2.0]
    assert isinstance(got[6], messages.MessageError) and got[6].reason == "bad_dtype"

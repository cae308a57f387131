"""The fast ingest path (issue 13, goal 1): the sampling decision taken before the full decode
(``messages.quick_id``, ``kafka.id_from: key``) and samples written per batch. Each gives what
the slow path gives: the quick id is the decoder's id or nothing, and a batch written at once
leaves the store as writing its samples one by one would."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.daemon import read_batch
from sentinel.errors import MessageError
from sentinel.messages import PairShape, decode_traffic, key_id, quick_id, quick_ids, quick_pair
from sentinel.sampling import Sampler
from sentinel.sources.base import RawRecord
from sentinel.storage import open_store
from sentinel.storage.repository import SampleIn

from stores import store_url  # noqa: F401  (fixture)

ONE = {"p": PairShape("p", (3,), ("0", "1"))}
TWO = {"p": PairShape("p", (3,), ("0", "1")), "q": PairShape("q", (3,), ("0", "1"))}
NOW = dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc)


def full(value: bytes, pairs) -> tuple[str, str] | None:
    try:
        m = decode_traffic(value, pairs)
    except MessageError:
        return None
    return m.pair, m.id


# -- quick id == the decoder's id, or no answer ----------------------------------------------------

ids = st.one_of(st.text(max_size=12), st.integers(min_value=-10**25, max_value=10**25),
                st.sampled_from(["a\"b", "a\\b", "\u00e9", "\ud800", "x\x00", "", "id", "\"id\"", "x" * 300]),
                st.floats(allow_nan=True), st.booleans(), st.none())
extras = st.dictionaries(st.sampled_from(["id", "model", "attributes", "ts", "label", "meta", "\u0069d"]),
                         st.one_of(st.text(max_size=5), st.integers(), st.sampled_from(["p", "q", "r"]),
                                   st.dictionaries(st.sampled_from(["id", "model"]), st.text(max_size=3), max_size=2)),
                         max_size=4)


@st.composite
def message_texts(draw) -> bytes:
    """JSON texts with an id first or elsewhere, repeated keys, escapes, odd spacing."""
    parts = [("inputs", [1.0, 2.0, 3.0])]
    if draw(st.booleans()):
        parts.insert(0, ("id", draw(ids)))
    else:
        parts.append(("id", draw(ids)))
    if draw(st.booleans()):
        parts.insert(1, ("model", draw(st.sampled_from(["p", "q", "r", "\u00e9", 1]))))
    parts += list(draw(extras).items())
    if draw(st.booleans()):
        parts = parts[1:] + parts[:1]
    ascii_only, sep = draw(st.booleans()), draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
    body = sep[0].join(f"{json.dumps(k, ensure_ascii=ascii_only)}{sep[1]}"
                       f"{json.dumps(v, ensure_ascii=ascii_only)}" for k, v in parts)
    text = draw(st.sampled_from(["", " ", "\n", "\ufeff"])) + "{" + draw(st.sampled_from(["", " ", "\t"])) + body + "}"
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message_texts(), st.sampled_from([ONE, TWO]))
def test_quick_id_is_the_decoders_id_or_declines(value, pairs):
    got = quick_id(value, pairs)
    if got is not None and full(value, pairs) is not None:
        assert got == full(value, pairs), value


@settings(max_examples=500, deadline=None)
@given(message_texts())
def test_quick_pair_is_the_decoders_pair_or_declines(value):
    for pairs in (ONE, TWO):
        got = quick_pair(value, pairs)
        if got is not None and full(value, pairs) is not None:
            assert got == full(value, pairs)[0], value


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(message_texts(), max_size=12), st.sampled_from([ONE, TWO]), st.sampled_from([64, 1 << 20]))
def test_quick_ids_of_a_batch_are_quick_id_of_each(values, pairs, max_bytes):
    """The batch form looks for doubts once in the joined batch: it must answer what the
    per-message form answers for every message, whatever its neighbours hold."""
    assert quick_ids(values, pairs, max_bytes) == [quick_id(v, pairs, max_bytes) for v in values]


def test_quick_ids_sees_a_doubt_in_one_message_of_a_batch():
    plain = [b'{"id":"r-%d","inputs":[1,2,3]}' % i for i in range(5)]
    for odd in (b'{"id":"r-9","inputs":[1,2,3],"id":"r-8"}', b'{"inputs":[1,2,3]}', b'{"id":"r\\u002d1","inputs":[]}'):
        batch = plain[:2] + [odd] + plain[2:]
        got = quick_ids(batch, ONE)
        assert got[2] is None and got[:2] + got[3:] == [("p", f"r-{i}") for i in range(5)], odd
    with_model = b'{"id":"r-7","inputs":[1,2,3],"attributes":{"model":"q"}}'   # one pair: "model" is not read
    assert quick_ids(plain[:2] + [with_model], ONE)[2] == ("p", "r-7") == full(with_model, ONE)


@pytest.mark.parametrize("text, expected", [
    (b'{"id":"r-1","inputs":[1,2,3]}', ("p", "r-1")),
    (b' {\n "id" : 42 , "inputs":[1,2,3]}', ("p", "42")),
    (b'{"id":-0,"inputs":[1,2,3]}', ("p", "0")),                        # the decoder's int: 0
    (b'{"id":"r-1","model":"q","inputs":[1,2,3]}', ("q", "r-1")),
    # in any order: the README's own example puts "ts" between "id" and "model"; "model" first
    (b'{"id": "r-1", "ts": "2026-11-21T10:00:00Z", "model": "q", "inputs": [1, 2, 3]}', ("q", "r-1")),
    (b'{"model": "q", "id": "r-1", "inputs": [1, 2, 3]}', ("q", "r-1")),
    (b'{"inputs":[1,2,3],"id":"r-1"}', ("p", "r-1")),
    (b'{"inputs":[1,2,3],"attributes":{"region":"eu"},\n "id" : 7}', ("p", "7")),
    (b'{"inputs":[1,2,3],"model":"p","id":"r-1","attributes":{"kind":"id-less"}}', ("p", "r-1")),
])
def test_quick_id_reads_plain_ids_in_any_order(text, expected):
    pairs = TWO if b'"model"' in text else ONE
    assert quick_id(text, pairs) == expected == full(text, pairs)


@pytest.mark.parametrize("text", [b'{"inputs":[1,2,3],"kind":"model","id":"r-1"}',   # a value "model"
                                  b'{"id":"r-1","inputs":[1,2,3],"attributes":{"model":"q"}}',   # nested
                                  b'{"id":"r-1","model":"p","inputs":[1,2,3],"model":"p"}'])   # twice
def test_with_one_pair_a_model_anywhere_leaves_the_id_read(text):
    """With one pair a valid message's "model" can only name it: it is not read (a batch is not
    scanned for it), and the pair and id are the decoder's."""
    assert quick_id(text, ONE) == ("p", "r-1") == full(text, ONE) == quick_ids([text], ONE)[0]


@pytest.mark.parametrize("text", [
    b'{"id":"r-1","inputs":[1,2,3],"id":"r-2"}',          # json keeps the last of repeated keys
    b'{"id":"r-1","\\u0069d":"r-2","inputs":[1,2,3]}',    # the same key, escaped
    b'{"id":"r\\u002d1","inputs":[1,2,3]}',               # an escape in the id
    b'{"id":"a\\"b","inputs":[1,2,3]}',
    b'{"inputs":[1,2,3],"meta":"id","id":"r-1"}',         # a value "id" besides the key: two
    b'{"id":12345678901234567890,"inputs":[1,2,3]}',       # 20 digits: the decoder makes it a double
    b'{"id":1.0,"inputs":[1,2,3]}', b'{"id":1e3,"inputs":[1,2,3]}', b'{"id":true,"inputs":[1,2,3]}',
    b'{"id":"","inputs":[1,2,3]}', b'{"id":"\xed\xa0\x80","inputs":[1,2,3]}',   # empty; a CESU surrogate
    b'\xef\xbb\xbf{"id":"r-1","inputs":[1,2,3]}',          # a byte order mark: the decoder decides
])
def test_quick_id_declines_when_unsure(text):
    assert quick_id(text, ONE) is None



@pytest.mark.parametrize("layout", ["readme", "model first", "id last"])
def test_below_rate_one_only_the_sampled_messages_of_any_field_order_are_decoded(layout, monkeypatch):
    """Producers write fields in their own order (the README's example has "ts" between "id" and
    "model"): whatever the order, at rate 0.1 the sampling is decided before the full decode,
    which only the messages inside the rate get, with the same samples as at rate 1."""
    import sentinel.daemon as daemon

    def message(i: int) -> bytes:
        fields = {"readme": [("id", f"r-{i}"), ("ts", "2026-11-21T10:00:00Z"), ("model", "q"), ("inputs", [1, 2, 3])],
                  "model first": [("model", "q"), ("id", f"r-{i}"), ("inputs", [1, 2, 3])],
                  "id last": [("model", "q"), ("inputs", [1, 2, 3]), ("attributes", {"region": "eu"}), ("id", i)]}
        return json.dumps(dict(fields[layout])).encode()

    records = [RawRecord("t", 0, i, None, message(i), None) for i in range(2000)]
    every = read_batch(records, TWO, Sampler(), None)
    decoded = []
    real = daemon.decode_traffic_many
    monkeypatch.setattr(daemon, "decode_traffic_many", lambda values, *a, **k: decoded.extend(values) or real(values, *a, **k))
    some = read_batch(records, TWO, Sampler(rate=0.1), None)
    inside = [s for s in every.samples if s.sample_key < 0.1]
    assert len(decoded) == len(some.samples) == len(inside) and some.not_sampled == 2000 - len(inside)
    assert [(s.pair, s.msg_id, s.sample_key) for s in some.samples] == [(s.pair, s.msg_id, s.sample_key) for s in inside]

def test_quick_id_declines_a_message_over_the_size_limit():
    assert quick_id(b'{"id":"r-1","inputs":[' + b"1," * 100 + b"1]}", ONE, max_bytes=64) is None


def test_key_id_takes_utf8_keys_only():
    assert key_id(b"r-1") == "r-1" and key_id("é".encode()) == "é"
    assert [key_id(k) for k in (None, b"", b"\xff", b"a\x00b", b"\xed\xa0\x80", b"x" * 257)] == [None] * 6


# -- read_batch: sampled before decoding --------------------------------------------------------

def records(values, keys=None, topic="t"):
    keys = keys or [None] * len(values)
    return [RawRecord(topic, 0, i, k, v, 1_700_000_000_000) for i, (k, v) in enumerate(zip(keys, values))]


def test_messages_outside_the_sample_are_not_decoded_and_the_rest_are_as_before(store_url):  # noqa: F811
    sampler = Sampler(rate=0.3, seed=7)
    values = [json.dumps({"id": f"m{i}", "inputs": [i, 1, 2], "attributes": {"r": "eu"}}).encode() for i in range(400)]
    b = read_batch(records(values), ONE, sampler, None)
    full = read_batch(records(values), ONE, Sampler(rate=1.0, seed=7), None)
    kept = [s for s in full.samples if s.sample_key < 0.3]
    assert not b.bad and full.not_sampled == 0 and 60 < len(kept) < 180
    assert [(s.msg_id, s.offset, s.sample_key, s.attributes) for s in b.samples] == \
        [(s.msg_id, s.offset, s.sample_key, s.attributes) for s in kept]      # decoded exactly as before
    assert all(np.array_equal(a.inputs["input"], k.inputs["input"]) for a, k in zip(b.samples, kept))
    assert b.not_sampled == 400 - len(kept)                                    # the rest counted, not decoded
    store = open_store(store_url)
    res = store.ingest(b.samples, [], [], window=10_000, rate=0.3, not_sampled=b.not_sampled)
    assert (res.stored, res.not_sampled) == (len(kept), 400 - len(kept))
    assert sorted(s.msg_id for s in store.claim_window("p", store.create_run("p", "t", {}))) == \
        sorted(s.msg_id for s in kept)


def test_a_malformed_message_outside_the_sample_is_not_sampled_inside_it_quarantined():
    sampler = Sampler(rate=0.5, seed=3)
    ids = [f"m{i}" for i in range(40)]
    values = [b'{"id":"%s","inputs":[1,2]}' % i.encode() for i in ids]     # 2 values, the model takes 3
    b = read_batch(records(values), ONE, sampler, None)
    inside = {i for i in ids if sampler.key("p", i) < 0.5}
    assert 0 < len(inside) < 40
    assert {q.offset for q in b.bad} == {ids.index(i) for i in inside} and {q.reason for q in b.bad} == {"shape_mismatch"}
    assert not b.samples and b.not_sampled == 40 - len(inside)


@pytest.mark.parametrize("rate", [0.4, 1.0])
def test_id_from_key_samples_and_stores_by_the_record_key(rate):
    sampler = Sampler(rate=rate, seed=5)
    values = [json.dumps({"id": f"b{i}", "inputs": [i, 1, 2]}).encode() for i in range(200)]   # the key wins
    keys = [f"k{i}".encode() for i in range(200)]
    b = read_batch(records(values, keys), ONE, sampler, None, id_from="key")
    inside = [f"k{i}" for i in range(200) if sampler.key("p", f"k{i}") < rate]
    assert not b.bad and [s.msg_id for s in b.samples] == inside and b.not_sampled == 200 - len(inside)
    assert all(s.sample_key == sampler.key("p", s.msg_id) for s in b.samples)
    # without a usable key the body's id is used, as with id_from: body
    b = read_batch(records([b'{"id":"b1","inputs":[1,2,3]}'], [None]), ONE, Sampler(rate=1.0, seed=5), None,
                   id_from="key")
    assert [s.msg_id for s in b.samples] == ["b1"] and not b.bad


def test_labels_are_always_decoded():
    sampler = Sampler(rate=0.01)
    b = read_batch(records([b'{"id":"m1","label":1}', b'{"id":"m2"}'], topic="labels"), ONE, sampler, "labels")
    assert [lab.msg_id for lab in b.labels] == ["m1"] and [q.offset for q in b.bad] == [1]
    assert not b.samples and b.not_sampled == 0


# -- batched writes == row-by-row writes ----------------------------------------------------------

def sample(i, key, stratum="", pair="p"):
    return SampleIn(pair=pair, msg_id=f"m{i}", ts=NOW, topic="t", partition=0, offset=i, sample_key=key,
                    inputs={"input": np.float32([i])}, attributes={"g": stratum}, stratum=stratum)


def counts(r):
    return (r.stored, r.duplicates, r.not_sampled, r.evicted, r.quarantined)


batches = st.lists(st.lists(st.tuples(st.integers(0, 60), st.sampled_from(["", "a", "b", "c"]),
                                      st.sampled_from(["p", "q"])), max_size=40), min_size=1, max_size=4)


# The writer before batching (one INSERT, and one eviction query, per sample), kept as the
# reference: a batch must leave the store and the counts as it did.
from sqlalchemy import and_, delete, func, insert, select  # noqa: E402

from sentinel.storage import repository  # noqa: E402
from sentinel.storage import tables as t  # noqa: E402
from sentinel.storage.repository import OTHER_STRATUM, _chunks, fit_stratum, in_sample, stored_inputs  # noqa: E402


def put_samples_row_by_row(conn: Connection, pair: str, batch: list[SampleIn], opts: tuple[int, float, int | None],
                 now: dt.datetime, res: IngestResult, above: tuple[float, int] | None = None) -> None:
    assert above is None, "the writer before batching knew no bars"
    window, rate, max_strata = opts
    seen: set[str] = set()
    for chunk in _chunks(list({s.msg_id for s in batch}), 500):
        seen.update(r[0] for r in conn.execute(select(t.samples.c.msg_id).where(
            and_(t.samples.c.pair == pair, t.samples.c.msg_id.in_(chunk)))))
    pending_q = (select(t.samples.c.stratum, func.count()).where(and_(
        t.samples.c.pair == pair, t.samples.c.run_id.is_(None))).group_by(t.samples.c.stratum))
    pending: dict[str, int] = {row[0]: row[1] for row in conn.execute(pending_q)}
    for s in batch:
        if s.msg_id in seen:
            res.duplicates += 1
            continue
        seen.add(s.msg_id)
        if not in_sample(s.sample_key, rate):
            res.not_sampled += 1
            continue
        stratum = fit_stratum(s.stratum)
        if stratum not in pending and max_strata is not None and len(pending) >= max_strata:
            stratum = OTHER_STRATUM
        if pending.get(stratum, 0) >= window:
            top = conn.execute(select(t.samples.c.id, t.samples.c.sample_key).where(and_(
                t.samples.c.pair == pair, t.samples.c.run_id.is_(None), t.samples.c.stratum == stratum)
            ).order_by(t.samples.c.sample_key.desc()).limit(1)).first()
            res.evicted += 1
            if top is None or s.sample_key >= top.sample_key:
                continue
            conn.execute(delete(t.samples).where(t.samples.c.id == top.id))
            pending[stratum] -= 1
        conn.execute(insert(t.samples).values(
            pair=s.pair, msg_id=s.msg_id, ts=s.ts, topic=s.topic, partition=s.partition,
            offset=s.offset, sample_key=s.sample_key, inputs=stored_inputs(s.inputs), text=s.text,
            attributes=s.attributes, label=s.label, extra=s.extra, stored_at=now, stratum=stratum))
        pending[stratum] = pending.get(stratum, 0) + 1
        res.stored += 1


_example = iter(range(10**9))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches, st.integers(1, 6), st.sampled_from([0.5, 1.0]), st.sampled_from([None, 2]))
def test_a_batch_is_stored_as_the_writer_before_batching_stored_it(store_url, batches, window, rate, max_strata):  # noqa: F811
    """Against the writer before batching (statements per sample): duplicates (in the batch and in
    the store), the bottom-k window per stratum with eviction (of stored rows and of rows of the
    same batch), strata beyond max_strata, the rate. Both write to one database under distinct
    pair names (windows and duplicates are per pair), so one database per backend serves all."""
    store, n = open_store(store_url), next(_example)
    sampler = Sampler()
    total_batch, total_rows = [], []
    for batch in batches:
        rows = [sample(i, sampler.key(pair, f"m{i}"), stratum, pair) for i, stratum, pair in batch]
        as_batch = [replace(r, pair=f"{r.pair}-batch-{n}") for r in rows]
        as_rows = [replace(r, pair=f"{r.pair}-rows-{n}") for r in rows]
        total_batch.append(counts(store.ingest(as_batch, [], [], window=window, rate=rate, max_strata=max_strata)))
        with patch.object(repository, "_put_samples", put_samples_row_by_row):
            total_rows.append(counts(store.ingest(as_rows, [], [], window=window, rate=rate, max_strata=max_strata)))
    # one change on purpose: a repeated id outside the rate is counted not sampled (the batch
    # writer never looks it up), where the old one counted its repeats as duplicates
    assert [merge(c) for c in total_batch] == [merge(c) for c in total_rows]
    if rate == 1.0:
        assert total_batch == total_rows
    assert state(store, f"-batch-{n}") == state(store, f"-rows-{n}")


def pending_as_counted(store, pairs):
    """(the pending_samples rows, a count of the pending samples) of ``pairs``, per (pair, stratum)."""
    with store.engine.connect() as c:
        kept = {(r.pair, r.stratum): r.n for r in c.execute(select(t.pending_samples)
                                                            .where(t.pending_samples.c.pair.in_(pairs))) if r.n}
        counted = {(r[0], r[1]): r[2] for r in c.execute(
            select(t.samples.c.pair, t.samples.c.stratum, func.count()).where(and_(
                t.samples.c.pair.in_(pairs), t.samples.c.run_id.is_(None))).group_by(t.samples.c.pair, t.samples.c.stratum))}
    return kept, counted


ops = st.lists(st.one_of(st.tuples(st.just("ingest"), batches.map(lambda b: b[0])),
                         st.tuples(st.sampled_from(["claim", "claim and release", "claim and fail", "claim and finish"]),
                                   st.sampled_from(["p", "q"]))), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops, st.integers(1, 6), st.sampled_from([None, 2]))
def test_the_pending_counts_ingest_reads_are_the_pending_samples(store_url, ops, window, max_strata):  # noqa: F811
    """``pending_samples`` (what ingest reads instead of counting the window each poll) equals a
    count of the pending samples after every change to them: batches with duplicates, evictions
    and strata beyond max_strata, windows claimed by runs, given back (release_window, a failed
    run's finish_run) or kept by a finished run."""
    store, n = open_store(store_url), next(_example)
    sampler, pairs = Sampler(), [f"p-{n}", f"q-{n}"]
    for op, arg in ops:
        if op == "ingest":
            rows = [sample(i, sampler.key(pair, f"m{i}"), stratum, f"{pair}-{n}") for i, stratum, pair in arg]
            store.ingest(rows, [], [], window=window, rate=1.0, max_strata=max_strata)
        else:
            run = store.create_run(f"{arg}-{n}", "test", {})
            window_ = store.claim_window(f"{arg}-{n}", run)
            if op == "claim and release":
                store.release_window(run)
            elif op != "claim":
                store.finish_run(run, status="failed" if op == "claim and fail" else "ok", n_samples=len(window_),
                                 record=None, results=[], release_window=op == "claim and fail")
        kept, counted = pending_as_counted(store, pairs)
        assert kept == counted, op


def merge(c: tuple[int, ...]) -> tuple[int, ...]:
    """(stored, duplicates + not sampled, evicted, quarantined)."""
    return c[0], c[1] + c[2], c[3], c[4]


def state(store, suffix):
    with store.engine.connect() as c:
        got = c.execute(select(t.samples.c.pair, t.samples.c.msg_id, t.samples.c.stratum, t.samples.c.sample_key)
                        .where(t.samples.c.pair.endswith(suffix))).all()
    return sorted((pair.removesuffix(suffix), *rest) for pair, *rest in got)


def test_a_refused_row_of_a_batch_is_quarantined_alone_and_the_rest_stored(store_url):  # noqa: F811
    """A row the database refuses (a NUL in the text column on PostgreSQL, a lone surrogate on
    SQLite) is set aside as store_rejected; the other rows of the batch, duplicates and window
    decisions are what they would be without it."""
    store = open_store(store_url)
    bad_text = "x\x00y" if store.engine.url.get_backend_name() == "postgresql" else "x\ud800y"
    rows = [sample(i, i / 100) for i in range(20)] + [sample(3, 0.03)]
    rows[7] = replace(rows[7], text=bad_text, raw=b'{"id":"m7"}')
    r = store.ingest(rows, [], [], window=10, rate=1.0)
    assert [q.offset for q in r.rejected] == [7] and r.rejected[0].reason == "store_rejected"
    assert (r.stored, r.duplicates, r.quarantined, r.evicted) == (10, 1, 1, 9)
    run = store.create_run("p", "test", {})
    assert sorted(s.msg_id for s in store.claim_window("p", run)) == sorted(f"m{i}" for i in range(11) if i != 7)


def test_labels_and_quarantine_rows_of_a_batch_are_written_as_one_by_one(store_url):  # noqa: F811
    """Labels: the last of a batch wins, an existing one is updated; quarantine rows: a repeat
    (same position and value) is kept once, another value at the same position beside it."""
    from sentinel.storage.repository import LabelIn, QuarantineIn
    store = open_store(store_url)
    store.ingest([], [LabelIn("a", "0", "l", 0, 1), LabelIn("b", "1", "l", 0, 2)], [], window=10, rate=1.0)
    r = store.ingest([], [LabelIn("a", "1", "l", 0, 3), LabelIn("c", "0", "l", 0, 4), LabelIn("c", "1", "l", 0, 5)],
                     [QuarantineIn("t", 0, 7, "invalid_json", "x", "raw1"), QuarantineIn("t", 0, 7, "invalid_json", "x", "raw1"),
                      QuarantineIn("t", 0, 7, "invalid_json", "x", "raw2"), QuarantineIn("t", 1, 7, "empty", "y", "")],
                     window=10, rate=1.0)
    r2 = store.ingest([], [], [QuarantineIn("t", 0, 7, "invalid_json", "x", "raw1")], window=10, rate=1.0)
    assert (r.labels, r.quarantined, r2.quarantined) == (3, 4, 1)
    with store.engine.connect() as c:
        labels = dict(c.execute(select(t.labels.c.msg_id, t.labels.c.label)).all())
        offsets = sorted(c.execute(select(t.labels.c.msg_id, t.labels.c.offset)).all())
        quarantine = sorted(c.execute(select(t.quarantine.c.partition, t.quarantine.c.raw)).all())
    assert labels == {"a": "1", "b": "1", "c": "1"} and offsets == [("a", 3), ("b", 2), ("c", 5)]
    assert quarantine == [(0, "raw1"), (0, "raw2"), (1, "")]


# -- orjson, when installed, changes nothing the decoder gives ----------------------------------

def _both_ways(value):
    """parse_json's outcome (the object, or the reason and detail) with orjson and without."""
    from sentinel import messages

    out = []
    for fast in (messages._orjson, None):
        with patch.object(messages, "_orjson", fast):
            try:
                out.append(("ok", messages.parse_json(value)))
            except MessageError as exc:
                out.append((exc.reason, exc.detail))
    return out


def _same(a, b) -> bool:   # NaN != NaN, but the same NaN in both is the same outcome
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str) and \
        type(a) is type(b)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**22, 10**22), st.floats(allow_nan=True), st.text(max_size=8)),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=4), kids, max_size=4)),
    max_leaves=12)


@pytest.mark.skipif(not __import__("importlib").util.find_spec("orjson"), reason="orjson is not installed")
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.booleans(), st.integers(0, 40), st.binary(max_size=3))
def test_orjson_parses_as_the_standard_decoder_or_leaves_it_to_it(obj, ascii_only, cut, junk):
    text = json.dumps({"id": "m", "v": obj}, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    for value in (text, text[:cut] + junk + text[cut:], text.replace(b"1", b"1" * 20)):
        fast, slow = _both_ways(value)
        assert fast[0] == slow[0] and _same(fast[1], slow[1]), value


@pytest.mark.skipif(not __import__("importlib").util.find_spec("orjson"), reason="orjson is not installed")
def test_orjson_changes_no_outcome_of_the_hostile_messages():
    from sentinel.testing.hostile import HostileGenerator

    for m in HostileGenerator(3).generate(4000):
        fast, slow = _both_ways(m.value)
        assert fast[0] == slow[0] and _same(fast[1], slow[1]), (m.family, m.variant)


# -- the batch decision is the per-message decision -----------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30).filter(lambda s: not any("\ud800" <= c <= "\udfff" for c in s)),
                max_size=60), st.integers(0, 2**32), st.sampled_from(["p", "q", "é"]))
def test_sampler_keys_are_sampler_key_bit_for_bit(ids, seed, pair):
    sampler = Sampler(rate=0.5, seed=seed)
    assert [float(k) for k in sampler.keys(pair, ids)] == [sampler.key(pair, i) for i in ids]


def test_read_batch_counts_what_it_leaves_undecoded_and_decodes_the_rest():
    from sentinel.daemon import read_batch

    sampler = Sampler(rate=0.2, seed=9)
    values = [json.dumps({"id": f"m{i}", "inputs": [i, 1, 2]}).encode() for i in range(300)] + [b"{bad"]
    b = read_batch(records(values), ONE, sampler, None)
    inside = [f"m{i}" for i in range(300) if sampler.key("p", f"m{i}") < 0.2]
    assert [s.msg_id for s in b.samples] == inside and all(s.inputs for s in b.samples)
    assert b.not_sampled == 300 - len(inside) and [q.reason for q in b.bad] == ["invalid_json"]
    assert b.decoded == len(inside) + 1   # what sentinel_messages_decoded_total counts


# -- what a full window would push out is not decoded ---------------------------------------------

def _pair_shape(name):
    return {name: PairShape(name, (3,), ("0", "1"))}


def _window_values(ids):
    return [json.dumps({"id": f"m{i}", "inputs": [i, 1, 2]}).encode() for i in ids]


def _pending(store, pair):
    with store.engine.connect() as c:
        return sorted(r[0] for r in c.execute(select(t.samples.c.msg_id).where(
            and_(t.samples.c.pair == pair, t.samples.c.run_id.is_(None)))))


def _claim(store, pair):
    return sorted(s.msg_id for s in store.claim_window(pair, store.create_run(pair, "manual", {})))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 80), max_size=40)), min_size=1, max_size=6),
       st.integers(1, 8), st.sampled_from([0.5, 1.0]))
def test_leaving_out_what_a_full_window_pushes_out_stores_what_decoding_everything_stores(
        store_url, batches, window, rate):  # noqa: F811
    """Batches read with the bars the store reports (``read_and_store``), redeliveries and runs
    claiming the window between them, against the same batches decoded in full on a store of their
    own: every batch stores the same samples, the same are left outside the rate, each run claims
    the same window, and the same are pending at the end. What is counted evicted instead of a
    duplicate may differ, for messages above the bar, which are not looked up: one a run claimed
    and one repeated within its batch (as outside the rate, where they are counted not sampled)."""
    import tempfile

    from sentinel.daemon import read_and_store

    pair = "p"
    shapes, sampler = _pair_shape(pair), Sampler(rate=rate, window=window, seed=3)
    store, ref = open_store(store_url), open_store(f"sqlite:///{tempfile.mkdtemp()}/ref.db")
    with store.engine.begin() as c:   # each example from an empty store (one database serves them all)
        for table in (t.samples, t.pending_samples, t.runs):
            c.execute(delete(table).where(table.c.pair == pair))
    bars: dict = {}
    claimed = False
    for claim, ids in batches:
        if claim:
            assert _claim(store, pair) == _claim(ref, pair)
            claimed = True
        recs = records(_window_values(ids))
        _, got = read_and_store(store, recs, shapes, sampler, bars)
        b = read_batch(recs, shapes, sampler, None)
        want = ref.ingest(b.samples, b.labels, b.bad, window=window, rate=rate, not_sampled=b.not_sampled)
        assert (got.stored, got.not_sampled, got.quarantined) == (want.stored, want.not_sampled, want.quarantined)
        assert got.duplicates + got.evicted == want.duplicates + want.evicted
        if not claimed and len(set(ids)) == len(ids):   # no duplicate is taken for an eviction
            assert (got.duplicates, got.evicted) == (want.duplicates, want.evicted)
        assert _pending(store, pair) == _pending(ref, pair)
    ref.dispose()


def test_messages_above_a_full_windows_bar_are_counted_evicted_undecoded(store_url):  # noqa: F811
    """At rate 1, once the window is full, a message whose key is above its largest pending key is
    not decoded (a malformed one is not quarantined, as one outside the rate is not); one below
    is, and enters the window."""
    from sentinel.daemon import read_and_store

    store, sampler, bars = open_store(store_url), Sampler(rate=1.0, window=5, seed=1), {}
    shapes = _pair_shape("p")
    read_and_store(store, records(_window_values(range(50))), shapes, sampler, bars)
    bar = max(sampler.key("p", f"m{i}") for i in sorted(range(50), key=lambda i: sampler.key("p", f"m{i}"))[:5])
    assert bars == {"p": bar}
    new = list(range(50, 250))
    below = [i for i in new if sampler.key("p", f"m{i}") <= bar]
    bad_above = next(i for i in new if sampler.key("p", f"m{i}") > bar)
    bad_below = below[0]
    values = _window_values(new)
    for i in (bad_above, bad_below):
        values[i - 50] = json.dumps({"id": f"m{i}", "inputs": [1, 2]}).encode()   # the wrong size
    b, res = read_and_store(store, records(values), shapes, sampler, bars)
    assert b.above_bar == {"p": (bar, len(new) - len(below))}
    assert sorted(s.msg_id for s in b.samples) == sorted(f"m{i}" for i in below if i != bad_below)
    assert [q.offset for q in b.bad] == [bad_below - 50]
    # every message met a full window: those that entered pushed one out
    assert res.evicted == len(new) - 1 and res.quarantined == 1 and res.not_sampled == 0
    everything = sorted(range(250), key=lambda i: sampler.key("p", f"m{i}"))
    assert _pending(store, "p") == sorted(f"m{i}" for i in [i for i in everything if i != bad_below][:5])
    assert bars["p"] < bar


def test_a_bar_a_run_made_stale_is_refused_and_the_batch_read_again_in_full(store_url):  # noqa: F811
    """A run claims the full window: the bar the last batch reported no longer holds. The store
    refuses a batch left out against it (``StaleBar``, nothing written), and ``read_and_store``
    reads it again in full: the new window is the batch's smallest keys."""
    from sentinel.daemon import read_and_store
    from sentinel.storage.repository import StaleBar

    store, sampler, bars = open_store(store_url), Sampler(rate=1.0, window=5, seed=2), {}
    shapes = _pair_shape("p")
    read_and_store(store, records(_window_values(range(40))), shapes, sampler, bars)
    assert set(bars) == {"p"}
    _claim(store, "p")
    recs = records(_window_values(range(40, 120)))
    b = read_batch(recs, shapes, sampler, None, bars=dict(bars))
    assert b.above_bar and len(b.samples) < 80
    with pytest.raises(StaleBar, match="not full"):
        store.ingest(b.samples, b.labels, b.bad, window=5, rate=1.0, above_bar=b.above_bar)
    assert _pending(store, "p") == []
    b, res = read_and_store(store, recs, shapes, sampler, bars)
    assert not b.above_bar and len(b.samples) == 80 and res.stored >= 5
    smallest = sorted(range(40, 120), key=lambda i: sampler.key("p", f"m{i}"))[:5]
    assert _pending(store, "p") == sorted(f"m{i}" for i in smallest)
    # and a window grown past what it holds is not full: the bar goes
    b = read_batch(records(_window_values(range(120, 200))), shapes, sampler, None, bars=dict(bars))
    with pytest.raises(StaleBar):
        store.ingest(b.samples, b.labels, b.bad, window=6, rate=1.0, above_bar=b.above_bar)


def test_stratified_sampling_leaves_nothing_out_by_a_bar():
    sampler = Sampler(rate=1.0, window=5, stratify_by=("region",))
    b = read_batch(records(_window_values(range(30))), ONE, sampler, None, bars={"p": 0.0})
    assert len(b.samples) == 30 and not b.above_bar

"""Typed binary sample storage (issue 11): rows keep their dtypes and shapes on SQLite and
PostgreSQL, raw text is kept beside them, migration 0006 converts the JSON float lists schema
0005 wrote (and the downgrade writes them back), and the stored form costs a few bytes of header
per array over the raw array bytes."""
from __future__ import annotations

import datetime as dt
import json
import struct

import numpy as np
import pytest
from sqlalchemy import select, text

from sentinel.storage import open_store
from sentinel.storage.repository import SampleIn, Store, make_engine
from sentinel.tensors import Signature, TensorSpec, adopt, decode_row, encode_row

from stores import store_url  # noqa: F401  (fixture)
from test_storage import migrate_to

NOW = dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc)
RNG = np.random.default_rng(0)
ROWS = {
    "tokens": {"input_ids": RNG.integers(0, 30522, 256, dtype=np.int64), "attention_mask": np.ones(256, np.int64)},
    "short_tokens": {"input_ids": np.array([101, 2**53 + 1, 102], np.int64), "attention_mask": np.ones(3, np.int64)},
    "image": {"pixel_values": RNG.random((3, 64, 64), dtype=np.float32)},
    "mixed": {"ids": np.array([1, -2], np.int32), "keep": np.array([True, False]), "h": np.float16([0.5, 65504]),
              "scalar": np.array(3.25, np.float64), "u": np.array([[255, 0]], np.uint8)},
}


def sample(i, inputs, text=None, pair="p"):
    return SampleIn(pair=pair, msg_id=f"m{i}", ts=NOW, topic="t", partition=0, offset=i, sample_key=i / 100,
                    inputs=inputs, attributes={}, text=text)


def test_rows_keep_dtype_shape_values_and_text_on_both_backends(store_url):  # noqa: F811
    store = open_store(store_url)
    batch = [sample(i, row, text="my order is late ☃" if name.endswith("tokens") else None)
             for i, (name, row) in enumerate(ROWS.items())]
    assert store.ingest(batch, [], [], window=100, rate=1.0).stored == len(ROWS)
    back = {s.msg_id: s for s in store.claim_window("p", store.create_run("p", "test", {}))}
    for i, (name, row) in enumerate(ROWS.items()):
        got = back[f"m{i}"]
        assert list(got.inputs) == list(row), name
        for k, v in row.items():
            assert got.inputs[k].dtype == v.dtype and got.inputs[k].shape == v.shape, (name, k)
            np.testing.assert_array_equal(got.inputs[k], v)
        assert got.text == batch[i].text


def test_a_plain_list_of_numbers_is_stored_as_the_legacy_float32_input(store_url):  # noqa: F811
    store = open_store(store_url)
    store.ingest([sample(1, [0.5, 1, 2])], [], [], window=10, rate=1.0)
    (got,) = store.claim_window("p", store.create_run("p", "test", {}))
    assert got.inputs["input"].dtype == np.float32 and got.inputs["input"].tolist() == [0.5, 1.0, 2.0]


def test_a_row_the_store_cannot_encode_is_set_aside_alone(store_url):  # noqa: F811
    store = open_store(store_url)
    batch = [sample(i, {"input": np.float32([i])}) for i in range(6)]
    batch[3] = sample(3, {"input": np.array([1 + 2j])})          # complex: no stored dtype
    res = store.ingest(batch, [], [], window=10, rate=1.0)
    assert res.stored == 5 and [(q.reason, q.offset) for q in res.rejected] == [("store_rejected", 3)]
    assert "cannot be stored" in res.rejected[0].detail


# -- migration 0006 --------------------------------------------------------------------------------

OLD_ROWS = [[0.1 * i, -2.5, 1e30, 3] for i in range(2500)]      # more than one conversion batch (1,000)


def _write_0005_rows(conn):
    conn.execute(text('INSERT INTO samples (pair, msg_id, ts, topic, partition, "offset", sample_key, inputs, '
                      "attributes, stored_at, stratum) VALUES ('p', :m, :ts, 't', 0, :o, :k, :inputs, '{}', :ts, '')"),
                 [{"m": f"old-{i}", "ts": NOW, "o": i, "k": i / len(OLD_ROWS), "inputs": json.dumps(v)}
                  for i, v in enumerate(OLD_ROWS)])


def test_migration_0006_converts_float_lists_written_by_schema_0005_and_back(store_url):  # noqa: F811
    engine = make_engine(store_url)
    for conn in migrate_to(engine, "0005"):
        _write_0005_rows(conn)
    store = Store(engine)
    store.migrate()
    got = store.claim_window("p", store.create_run("p", "test", {}))
    assert len(got) == len(OLD_ROWS)
    by_id = {s.msg_id: s for s in got}
    for i in (0, 999, 1000, 1001, 2499):
        row = by_id[f"old-{i}"].inputs
        assert list(row) == ["input"] and row["input"].dtype == np.float32 and row["input"].shape == (4,)
        np.testing.assert_array_equal(row["input"], np.float32(OLD_ROWS[i]))
        assert by_id[f"old-{i}"].text is None
        # and a single-input model reads it under its own name and shape
        adopted = adopt(row, Signature.single((1, 4), "x"))
        assert adopted["x"].shape == (1, 4) and adopted["x"].dtype == np.float32
    # new typed rows beside the converted ones, then back to 0005: JSON float lists again
    store.ingest([SampleIn("p", "new", NOW, "t", 0, 9999, 0.5, ROWS["short_tokens"], {}, text="help")], [], [],
                 window=10**6, rate=1.0)
    for _ in migrate_to(engine, "0005", downgrade=True):
        pass
    with engine.connect() as c:
        cols = {col["name"] for col in __import__("sqlalchemy").inspect(c).get_columns("samples")}
        back = dict(c.execute(text("SELECT msg_id, inputs FROM samples")).all())
    assert "text" not in cols
    decoded = {k: json.loads(v) if isinstance(v, str) else v for k, v in back.items()}
    assert decoded["old-7"] == np.float32(OLD_ROWS[7]).astype(float).tolist()
    assert decoded["new"] == [101.0, float(2**53), 102.0, 1.0, 1.0, 1.0]    # both arrays, one after the other
    Store(engine).migrate()     # and up again
    with engine.connect() as c:
        blob = c.execute(text("SELECT inputs FROM samples WHERE msg_id = 'old-7'")).scalar_one()
    assert decode_row(blob)["input"].tolist() == np.float32(OLD_ROWS[7]).tolist()


# -- what a stored row costs -------------------------------------------------------------------------

def encoded_length(row):
    """The documented size of encode_row's form: 'ST1', a count byte, then per array its name
    (length byte + UTF-8), dtype and rank bytes, 4 bytes per dimension and the raw array bytes."""
    return 4 + sum(1 + len(k.encode()) + 2 + 4 * np.asarray(v).ndim + np.asarray(v).nbytes for k, v in row.items())


@pytest.mark.parametrize("name", list(ROWS))
def test_the_stored_form_is_raw_bytes_plus_a_small_header(name):
    row = ROWS[name]
    blob = encode_row(row)
    assert len(blob) == encoded_length(row)
    raw = sum(v.nbytes for v in row.values())
    if raw >= 1000:     # a 256-token pair of sequences, a 3x64x64 image: far below twice the raw size
        assert len(blob) <= raw + 64 and len(blob) <= 2 * raw
    assert blob[:3] == b"ST1" and struct.unpack_from("<B", blob, 3)[0] == len(row)


def test_a_corrupt_stored_row_is_refused_not_misread():
    blob = encode_row(ROWS["image"])
    for bad, why in ((blob[:-1], "truncated"), (blob + b"\0", "trailing"), (b"XX1" + blob[3:], "magic")):
        with pytest.raises(ValueError, match=why):
            decode_row(bad)


def test_adopt_refuses_a_row_that_fits_no_input():
    ids = Signature((TensorSpec("input_ids", "int64", (None,)),))
    with pytest.raises(ValueError, match="stored row holds input float32\\[4\\]; the model takes input_ids"):
        adopt({"input": np.float32([1, 2, 3, 4])}, Signature((*ids.inputs, TensorSpec("m", "int64", (None,)))))
    with pytest.raises(ValueError, match="the model takes x float32\\[3\\]"):
        adopt({"input": np.float32([1, 2, 3, 4])}, Signature.single((3,), "x"))


def test_adopt_takes_a_plain_list_as_the_legacy_float_input():
    got = adopt([1, 2, 3, 4], Signature.single((2, 2), "x"))
    assert got["x"].dtype == np.float32 and got["x"].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_text_traffic_through_read_batch_is_stored_with_its_tokens_at_any_sampling_rate(store_url):  # noqa: F811
    from sentinel.daemon import read_batch
    from sentinel.messages import PairShape
    from sentinel.sampling import Sampler
    from sentinel.sources.base import RawRecord
    from sentinel.text import TextEncoder
    from test_typed_messages import IDS, word_level

    text = TextEncoder.from_tokenizer(word_level(), max_length=8)
    shapes = {"p": PairShape.for_signature("p", IDS, ("ok", "urgent"), text=text)}
    texts = [" ".join(["my", "order", "is", "late", "help"][: 1 + i % 5]) for i in range(200)]
    records = [RawRecord("t", 0, i, None, json.dumps({"id": f"m{i}", "text": t}).encode(), None)
               for i, t in enumerate(texts)]
    sampler = Sampler(rate=0.5)
    b = read_batch(records, shapes, sampler, None)
    store = open_store(store_url)
    res = store.ingest(b.samples, [], b.bad, window=10**6, rate=0.5, not_sampled=b.not_sampled)
    assert not b.bad and 60 < res.stored < 140 and res.stored + res.not_sampled == 200
    for s in store.claim_window("p", store.create_run("p", "test", {})):
        want = text.encode([s.text])[0]
        assert s.text == texts[int(s.msg_id[1:])]
        assert all(s.inputs[k].dtype == np.int64 and np.array_equal(s.inputs[k], want[k]) for k in want)


def test_a_claimed_window_gives_samples_and_columns_alike_and_each_sample_its_own_dicts(store_url):  # noqa: F811
    store = open_store(store_url)
    batch = [SampleIn(pair="p", msg_id=f"m{i}", ts=NOW + dt.timedelta(seconds=i), topic="t", partition=0, offset=i,
                      sample_key=i / 100, inputs={"x": np.full(4, i, np.float32)},
                      attributes={"region": "eu" if i % 3 else "us"}, label="a" if i % 2 else None,
                      extra={"served_latency_ms": i} if i % 4 else None) for i in range(30)]
    store.ingest(batch, [], [], window=100, rate=1.0)
    window = store.claim_window("p", store.create_run("p", "test", {}))
    samples = list(window)
    assert [s.msg_id for s in samples] == [f"m{i}" for i in range(30)] == window.column("msg_id")
    for name in ("attributes", "label", "extra", "offset", "ts", "text"):
        assert [getattr(s, name) for s in samples] == window.column(name), name
    assert [s.inputs["x"].tolist() for s in samples] == [[float(i)] * 4 for i in range(30)]
    samples[1].attributes["region"] = "changed"   # a sample's dicts are its own: the window is unchanged
    samples[1].extra["served_latency_ms"] = -1
    assert window[1].attributes == {"region": "eu"} and window[1].extra == {"served_latency_ms": 1}
    assert window[-1].msg_id == "m29" and [s.msg_id for s in window[2:4]] == ["m2", "m3"]

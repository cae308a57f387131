"""No typed-tensor or raw-text message stops ingest, and the store keeps exactly what the decoder
accepted: a seeded, bounded hypothesis fuzz of ``read_batch`` -> ``Store.ingest`` on SQLite and
PostgreSQL for a pair with two typed inputs (int64 ids of variable length, a fixed float32 tensor)
and a pair taking raw text through a tokenizer."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.daemon import read_batch
from sentinel.messages import PairShape
from sentinel.sampling import Sampler
from sentinel.sources.base import RawRecord
from sentinel.storage import open_store
from sentinel.text import TextEncoder

from stores import store_url  # noqa: F401  (fixture)
from test_typed_messages import IDS, IMG_IDS, word_level

REASONS = {"invalid_json", "not_an_object", "missing_id", "bad_id", "missing_inputs", "bad_inputs", "shape_mismatch",
           "non_finite", "unknown_model", "bad_ts", "bad_attributes", "invalid_unicode", "nul_character", "bad_label",
           "unknown_input", "missing_input", "bad_dtype", "bad_text", "text_and_inputs", "text_not_supported",
           "not_utf8", "too_deep"}          # decoder_error would be a decoder bug

leaf = st.one_of(st.integers(-3, 40), st.integers(-(2**63), 2**63 - 1), st.integers(-10**25, 10**25),
                 st.floats(), st.floats(-5, 5), st.booleans(), st.none(), st.text(max_size=3))
tensor = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4), max_leaves=12)
good_ids = st.lists(st.integers(0, 40), min_size=1, max_size=6)
odd_ids = st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(-1e20, 1e20), st.integers(0, 40)),
                   min_size=0, max_size=6)
good_pixels = st.lists(st.lists(st.floats(-5, 5), min_size=3, max_size=3), min_size=2, max_size=2)
odd_pixels = st.lists(st.lists(st.floats(width=64), min_size=2, max_size=4), min_size=1, max_size=3)
names = st.sampled_from(["input_ids", "pixels", "attention_mask", "x"])
good = st.fixed_dictionaries({"input_ids": good_ids, "pixels": good_pixels})
inputs = st.one_of(good, good, st.fixed_dictionaries({"input_ids": st.one_of(good_ids, odd_ids, tensor),
                                                       "pixels": st.one_of(good_pixels, odd_pixels, tensor)}),
                   st.dictionaries(names, st.one_of(tensor, good_ids, good_pixels), max_size=3), tensor)
texts = st.one_of(st.text(max_size=40), st.text(st.characters(categories=["L", "Zs"]), min_size=1, max_size=40),
                  st.sampled_from(["my order is late", "help", "zzz " * 20]), leaf)
ids = st.text(min_size=1, max_size=5)
message = st.one_of(
    st.fixed_dictionaries({"id": ids, "model": st.just("typed"), "inputs": inputs}),
    st.fixed_dictionaries({"id": ids, "model": st.just("text"), "text": texts}),
    st.fixed_dictionaries({"id": ids, "model": st.sampled_from(["typed", "text"])},
                          optional={"inputs": inputs, "text": texts}))
batches = st.lists(st.tuples(message, st.booleans()), min_size=1, max_size=12)

_namespace = itertools.count()
_stores: dict[str, object] = {}
_text = TextEncoder.from_tokenizer(word_level(), max_length=6)


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=batches)
def test_typed_and_text_messages_are_stored_exactly_or_quarantined(store_url, batch):  # noqa: F811
    store = _stores.get(store_url) or _stores.setdefault(store_url, open_store(store_url))
    k = next(_namespace)
    typed, text = "typed", "text"       # each example claims what it stored: no window carries over
    shapes = {typed: PairShape.for_signature(typed, IMG_IDS, ("a", "b")),
              text: PairShape.for_signature(text, IDS, ("a", "b"), text=_text)}
    # ids made unique to the example (the store is shared), written in ASCII escapes or raw UTF-8
    values = [json.dumps({**m, "id": f"{k}-{m['id']}"}, ensure_ascii=a).encode("utf-8", "surrogatepass")
              for m, a in batch]
    records = [RawRecord(f"t{k}", 0, i, None, v, None) for i, v in enumerate(values)]
    decoded = read_batch(records, shapes, Sampler(), None)
    samples, bad = decoded.samples, decoded.bad
    assert len(samples) + len(bad) == len(records) and decoded.not_sampled == 0
    assert {q.reason for q in bad} <= REASONS, [q.detail for q in bad if q.reason not in REASONS]
    res = store.ingest(samples, [], bad, window=10**6, rate=1.0)
    assert res.rejected == [] and res.stored + res.duplicates + res.quarantined == len(records)
    first = {}
    for s in samples:
        first.setdefault((s.pair, s.msg_id), s)
    for pair in (typed, text):
        for got in store.claim_window(pair, store.create_run(pair, "fuzz", {})):
            want = first[(pair, got.msg_id)]
            assert got.text == want.text and got.inputs.keys() == want.inputs.keys()
            for name, arr in want.inputs.items():
                assert got.inputs[name].dtype == arr.dtype and np.array_equal(got.inputs[name], arr)
                spec = (IMG_IDS if pair == typed else IDS).spec(name)
                assert arr.dtype == np.dtype(spec.dtype) and spec.misfit(arr.shape) is None


@pytest.fixture(autouse=True, scope="module")
def _dispose_stores():
    yield
    for s in _stores.values():
        s.dispose()
    _stores.clear()

"""The consumer process's batch frames (sentinel/sources/process.py): records go from the child to
the daemon in columns of bytes, and come out as the records kafka-python gave, byte for byte.
Against the real broker, the source is in tests/test_source_contract.py's contract suite."""
from __future__ import annotations

from collections import namedtuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.sources.base import RawRecord
from sentinel.sources.process import _pack, _unpack

TP = namedtuple("TP", "topic partition")
Rec = namedtuple("Rec", "offset key value timestamp")   # the fields of kafka-python's ConsumerRecord it reads

maybe_bytes = st.one_of(st.none(), st.binary(max_size=40))
records = st.lists(st.tuples(maybe_bytes, maybe_bytes, st.one_of(st.none(), st.integers(-1, 2**62))), max_size=30)


def frame(got):
    parts, body = _pack(got)
    return _unpack(parts, memoryview(body))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.integers(0, 2**31 - 1), records), max_size=4))
def test_a_batch_comes_out_as_the_records_that_went_in(partitions):
    got, want = [], []
    for topic, partition, recs in partitions:
        if not recs:
            continue    # a poll lists no empty partition
        rows = [Rec(100 + i, k, v, ts) for i, (k, v, ts) in enumerate(recs)]
        got.append((TP(topic, partition), rows))
        want += [RawRecord(topic, partition, r.offset, r.key, r.value,
                           None if r.timestamp is None or r.timestamp < 0 else r.timestamp) for r in rows]
    out = frame(got)
    assert out == want
    assert all(type(r) is RawRecord for r in out)


def test_empty_values_none_values_and_keys_stay_apart():
    rows = [Rec(0, None, b"", 5), Rec(1, b"", None, -1), Rec(2, b"k", b"v", None)]
    assert frame([(TP("t", 0), rows)]) == [RawRecord("t", 0, 0, None, b"", 5), RawRecord("t", 0, 1, b"", None, None),
                                            RawRecord("t", 0, 2, b"k", b"v", None)]


def test_a_body_its_header_does_not_account_for_is_refused():
    parts, body = _pack([(TP("t", 0), [Rec(0, b"k", b"value", 1)])])
    with pytest.raises(ValueError, match="header accounts for"):
        _unpack(parts, memoryview(body + b"x"))


def test_a_body_cut_short_is_refused():
    parts, body = _pack([(TP("t", 0), [Rec(0, b"k", b"value", 1), Rec(1, b"k", b"value", 1)])])
    with pytest.raises(ValueError, match="ends within the columns"):
        _unpack(parts, memoryview(body[:16]))

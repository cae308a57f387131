import datetime as dt
import json

import pytest

from sentinel.errors import MessageError
from sentinel.messages import PairShape, decode_label, decode_traffic

SHAPES = {"triage": PairShape("triage", (3,), ("benign", "malignant"), ("a", "b", "c"))}


def enc(obj):
    return json.dumps(obj).encode()


def test_flat_array_message():
    m = decode_traffic(enc({"id": "r1", "ts": "2026-11-21T10:00:00Z", "inputs": [0.1, 2, 3],
                            "attributes": {"region": "eu", "age": 61}, "label": 1, "served_ms": 4}), SHAPES)
    assert (m.id, m.pair, m.inputs, m.label) == ("r1", "triage", [0.1, 2.0, 3.0], "malignant")
    assert m.attributes == {"region": "eu", "age": "61"}
    assert m.ts == dt.datetime(2026, 11, 21, 10, tzinfo=dt.timezone.utc)
    assert m.extra == {"served_ms": 4}


def test_named_features_are_ordered_by_the_pairs_feature_list():
    m = decode_traffic(enc({"id": "r", "inputs": {"c": 3, "a": 1, "b": 2}}), SHAPES)
    assert m.inputs == [1.0, 2.0, 3.0]


def test_named_tensor():
    m = decode_traffic(enc({"id": "r", "inputs": {"x": [[1, 2, 3]]}}), SHAPES)
    assert m.inputs == [1.0, 2.0, 3.0]


def test_epoch_millis_and_kafka_timestamp_fallback():
    m = decode_traffic(enc({"id": "r", "ts": 1_700_000_000_000, "inputs": [1, 2, 3]}), SHAPES)
    assert m.ts.year == 2023
    m = decode_traffic(enc({"id": "r", "inputs": [1, 2, 3]}), SHAPES, timestamp_ms=1_600_000_000_000)
    assert m.ts.year == 2020


@pytest.mark.parametrize("raw,reason", [
    (b"not json", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b"[1,2]", "not_an_object"),
    (enc({"inputs": [1, 2, 3]}), "missing_id"),
    (enc({"id": {"x": 1}, "inputs": [1, 2, 3]}), "bad_id"),
    (enc({"id": "r"}), "missing_inputs"),
    (enc({"id": "r", "inputs": [1, 2]}), "shape_mismatch"),
    (enc({"id": "r", "inputs": [1, "x", 3]}), "bad_inputs"),
    (b'{"id": "r", "inputs": [1, NaN, 3]}', "non_finite"),
    (enc({"id": "r", "inputs": {"a": 1, "b": 2}}), "shape_mismatch"),
    (enc({"id": "r", "inputs": {"a": 1, "b": 2, "c": 3, "d": 4}}), "shape_mismatch"),
    (enc({"id": "r", "model": "other", "inputs": [1, 2, 3]}), "unknown_model"),
    (enc({"id": "r", "inputs": [1, 2, 3], "label": 7}), "bad_label"),
    (enc({"id": "r", "inputs": [1, 2, 3], "ts": "yesterday"}), "bad_ts"),
    (enc({"id": "r", "inputs": [1, 2, 3], "attributes": {"a": [1]}}), "bad_attributes"),
    (None, "empty"),
])
def test_bad_messages_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(MessageError) as e:
        decode_traffic(raw, SHAPES)
    assert e.value.reason == reason


def test_model_required_when_several_pairs():
    shapes = {**SHAPES, "other": PairShape("other", (3,), ("x", "y"))}
    with pytest.raises(MessageError, match="'model' is required"):
        decode_traffic(enc({"id": "r", "inputs": [1, 2, 3]}), shapes)
    assert decode_traffic(enc({"id": "r", "model": "other", "inputs": [1, 2, 3]}), shapes).pair == "other"


def test_label_messages():
    assert decode_label(enc({"id": "r", "label": 0}), SHAPES).label == "benign"
    assert decode_label(enc({"id": "r", "label": "malignant"}), SHAPES).label == "malignant"
    with pytest.raises(MessageError):
        decode_label(enc({"id": "r"}), SHAPES)


def test_the_daemon_tags_each_sample_with_its_sampling_stratum():
    from sentinel.daemon import decode_batch
    from sentinel.sampling import Sampler
    from sentinel.sources.base import RawRecord

    records = [RawRecord("traffic", 0, i, None, enc({"id": f"r{i}", "inputs": [1, 2, 3], "attributes": attrs}), None)
               for i, attrs in enumerate([{"region": "eu", "age": "60+"}, {"region": "us"}, {}])]
    samples, _, bad = decode_batch(records, SHAPES, Sampler(stratify_by=("region", "age")), None)
    assert not bad
    assert [s.stratum for s in samples] == ["region=eu,age=60+", "region=us,age=", "region=,age="]
    unstratified, _, _ = decode_batch(records, SHAPES, Sampler(), None)
    assert {s.stratum for s in unstratified} == {""}

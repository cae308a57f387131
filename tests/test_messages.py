import datetime as dt
import json

import numpy as np
import pytest

from sentinel.errors import MessageError
from sentinel.messages import MAX_DEPTH, PairShape, decode_label, decode_traffic, nesting_depth

SHAPES = {"triage": PairShape("triage", (3,), ("benign", "malignant"), ("a", "b", "c"))}


def enc(obj):
    return json.dumps(obj).encode()


def single(m):
    """The one input of a legacy single-input pair's row, checked to be float32."""
    (name, arr), = m.inputs.items()
    assert name == "input" and arr.dtype == np.float32
    return arr.tolist()


def test_flat_array_message():
    m = decode_traffic(enc({"id": "r1", "ts": "2026-11-21T10:00:00Z", "inputs": [0.1, 2, 3],
                            "attributes": {"region": "eu", "age": 61}, "label": 1, "served_ms": 4}), SHAPES)
    assert (m.id, m.pair, m.label) == ("r1", "triage", "malignant")
    assert single(m) == np.float32([0.1, 2.0, 3.0]).tolist()
    assert m.attributes == {"region": "eu", "age": "61"}
    assert m.ts == dt.datetime(2026, 11, 21, 10, tzinfo=dt.timezone.utc)
    assert m.extra == {"served_ms": 4}


def test_named_features_are_ordered_by_the_pairs_feature_list():
    m = decode_traffic(enc({"id": "r", "inputs": {"c": 3, "a": 1, "b": 2}}), SHAPES)
    assert single(m) == [1.0, 2.0, 3.0]


def test_named_tensor():
    m = decode_traffic(enc({"id": "r", "inputs": {"x": [[1, 2, 3]]}}), SHAPES)
    assert single(m) == [1.0, 2.0, 3.0]


def test_epoch_millis_and_kafka_timestamp_fallback():
    m = decode_traffic(enc({"id": "r", "ts": 1_700_000_000_000, "inputs": [1, 2, 3]}), SHAPES)
    assert m.ts.year == 2023
    m = decode_traffic(enc({"id": "r", "inputs": [1, 2, 3]}), SHAPES, timestamp_ms=1_600_000_000_000)
    assert m.ts.year == 2020


@pytest.mark.parametrize("raw,reason", [
    (b"not json", "invalid_json"),
    (b"\xff\xfe", "not_utf8"),
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
    from sentinel.daemon import read_batch
    from sentinel.sampling import Sampler
    from sentinel.sources.base import RawRecord

    records = [RawRecord("traffic", 0, i, None, enc({"id": f"r{i}", "inputs": [1, 2, 3], "attributes": attrs}), None)
               for i, attrs in enumerate([{"region": "eu", "age": "60+"}, {"region": "us"}, {}])]
    b = read_batch(records, SHAPES, Sampler(stratify_by=("region", "age")), None)
    assert not b.bad
    assert [s.stratum for s in b.samples] == ["region=eu,age=60+", "region=us,age=", "region=,age="]
    unstratified = read_batch(records, SHAPES, Sampler(), None).samples
    assert len(unstratified) == 3 and {s.stratum for s in unstratified} == {""}



def reason_of(raw, shapes=SHAPES, **kw):
    with pytest.raises(MessageError) as e:
        decode_traffic(raw, shapes, **kw)
    return e.value.reason, e.value.detail


def splice(key, fragment: bytes, base=None):
    """A valid message with field ``key`` set to a raw JSON fragment json.dumps cannot write."""
    body = enc(base or {"id": "r", "inputs": [1, 2, 3]})
    return body[:-1] + b', "' + key.encode() + b'": ' + fragment + b"}"


GOOD = {"id": "r", "inputs": [1, 2, 3], "attributes": {"region": "eu"}}


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-16", "utf-32"])
def test_utf16_and_utf32_are_refused_as_not_utf8(encoding):
    # json.loads(bytes) would read these (RFC 4627 detection); the format is UTF-8 only
    reason, detail = reason_of(json.dumps(GOOD).encode(encoding))
    assert reason == "not_utf8" and "UTF-8" in detail


@pytest.mark.parametrize("raw,at", [(b'{"id": "caf\xe9", "inputs": [1, 2, 3]}', 11),         # Latin-1
                                    (b'{"id": "a\xed\xa0\x80", "inputs": [1, 2, 3]}', 9),    # CESU-8 surrogate
                                    (b'{"id": "\xc3", "inputs": [1, 2, 3]}', 8)])            # truncated sequence
def test_bytes_that_are_not_utf8_are_refused_naming_the_byte(raw, at):
    reason, detail = reason_of(raw)
    assert reason == "not_utf8" and detail.startswith(f"byte {at} ")


def test_a_utf8_byte_order_mark_is_allowed():
    assert decode_traffic(b"\xef\xbb\xbf" + enc(GOOD), SHAPES).id == "r"


def test_the_issues_deep_message_is_refused_before_parsing():
    raw = b'{"id":"x","inputs":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    reason, detail = reason_of(raw)
    assert reason == "too_deep" and "100001" in detail and str(MAX_DEPTH) in detail


def test_nesting_limit_is_exact_and_brackets_in_strings_do_not_count():
    inner = b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1)        # + the message object = MAX_DEPTH
    assert decode_traffic(splice("meta", inner), SHAPES).extra["meta"] == \
        json.loads(inner)
    assert reason_of(splice("meta", b"[" + inner + b"]"))[0] == "too_deep"
    text_brackets = enc({**GOOD, "note": "[{" * 500 + '\\"' + "}]" * 500})
    assert nesting_depth(text_brackets.decode()) == 2      # the message and its attributes
    assert decode_traffic(text_brackets, SHAPES).extra["note"].startswith("[{[{")
    # an unterminated string cannot hide brackets from the scan (or make it slow)
    assert nesting_depth('{"a": "' + '\\"' * 50_000 + "[" * 40) == 1


@pytest.mark.parametrize("key,fragment,where", [
    ("inputs", b"[1, 1" + b"0" * 400 + b", 2]", "inputs"),       # 1e400 written as an integer
    ("inputs", b"[1, 1e400, 2]", "inputs"),
    ("inputs", b"[1, -Infinity, 2]", "inputs"),
    ("meta", b"1" + b"0" * 5000, "meta"),                          # beyond json's 4,300-digit int limit
    ("meta", b'{"x": [1, {"y": NaN}]}', "meta.x[1].y"),
    ("meta", b"Infinity", "meta"),
    ("ts", b"NaN", "ts"),
    ("label", b"1" + b"0" * 400, "label"),
])
def test_non_finite_numbers_anywhere_are_refused_naming_where(key, fragment, where):
    reason, detail = reason_of(splice(key, fragment))
    assert reason == "non_finite" and f"'{where}'" in detail


def test_long_integers_are_read_as_doubles_and_short_ones_kept_exactly():
    m = decode_traffic(splice("meta", b'{"big": 1' + b"0" * 24 + b', "exact": 9223372036854775807}'), SHAPES)
    assert m.extra == {"meta": {"big": 1e24, "exact": 9223372036854775807}}
    assert type(m.extra["meta"]["exact"]) is int
    assert reason_of(splice("id", b"1" + b"0" * 30))[0] == "bad_id"   # a double is not an id


@pytest.mark.parametrize("key,fragment", [
    ("id", b'"a\\ud800"'), ("label", b'"\\udfff"'), ("model", b'"tri\\udc80age"'),
    ("attributes", b'{"region": "e\\ud800u"}'), ("attributes", b'{"\\ud800": "eu"}'),
    ("meta", b'{"x": ["ok", "\\ud83d"]}'), ("meta", b'{"\\udc00": 1}'),
])
def test_lone_surrogates_are_refused(key, fragment):
    base = {"id": "r", "inputs": [1, 2, 3]} if key != "id" else {"inputs": [1, 2, 3]}
    reason, detail = reason_of(splice(key, fragment, base))
    assert reason == "invalid_unicode" and "surrogate" in detail


def test_a_lone_surrogate_in_a_str_value_is_refused_too():
    assert reason_of('{"id": "a\ud800", "inputs": [1, 2, 3]}')[0] == "invalid_unicode"


def test_a_surrogate_pair_is_fine():
    assert decode_traffic(splice("meta", b'"\\ud83d\\ude00"'), SHAPES).extra["meta"] == "\U0001F600"


@pytest.mark.parametrize("key,fragment", [("id", b'"a\\u0000"'), ("meta", b'{"k": "x\\u0000y"}'),
                                          ("attributes", b'{"region": "\\u0000"}'), ("meta", b'{"\\u0000": 1}')])
def test_nul_characters_are_refused(key, fragment):
    base = {"id": "r", "inputs": [1, 2, 3]} if key != "id" else {"inputs": [1, 2, 3]}
    reason, detail = reason_of(splice(key, fragment, base))
    assert reason == "nul_character" and "NUL" in detail


@pytest.mark.parametrize("inputs,where", [(["1.5", 2, 3], "inputs[0]"), ([1, True, 3], "inputs[1]"),
                                          ([1, 2, None], "inputs[2]"), ({"x": [[1, "2", 3]]}, "inputs.x[0][1]"),
                                          ({"a": "1", "b": 2, "c": 3}, "inputs.a"),
                                          ({"a": 1, "b": False, "c": 3}, "inputs.b")])
def test_inputs_must_be_json_numbers_not_strings_or_booleans(inputs, where):
    reason, detail = reason_of(enc({"id": "r", "inputs": inputs}))
    assert reason == "bad_inputs" and where in detail


@pytest.mark.parametrize("attributes", [{"a": 1.5}, {"a": True}, {"a": None}, {"a": {"b": "c"}}, [], "eu",
                                        {"a": "x" * 129}, {"k" * 65: "x"}, {f"k{i}": "v" for i in range(65)},
                                        {"a": 10**25}])
def test_attributes_other_than_strings_and_integers_are_refused(attributes):
    assert reason_of(enc({"id": "r", "inputs": [1, 2, 3], "attributes": attributes}))[0] == "bad_attributes"


def test_integer_attributes_become_their_decimal_string():
    m = decode_traffic(enc({"id": "r", "inputs": [1, 2, 3], "attributes": {"age": 61, "n": -3}}), SHAPES)
    assert m.attributes == {"age": "61", "n": "-3"}


@pytest.mark.parametrize("label", ["²", "١", "①", "2", 1.5, True, "x" * 129, [], {}, ""])
def test_bad_labels_are_refused_not_raised(label):
    assert reason_of(enc({"id": "r", "inputs": [1, 2, 3], "label": label}))[0] == "bad_label"


@pytest.mark.parametrize("label,name", [("01", "malignant"), (1.0, "malignant"), ("0", "benign"), (0, "benign")])
def test_integer_labels_index_the_classes(label, name):
    assert decode_traffic(enc({"id": "r", "inputs": [1, 2, 3], "label": label}), SHAPES).label == name


def test_labels_without_classes_are_bounded():
    two = {**SHAPES, "other": PairShape("other", (3,), ("x", "y"))}
    assert decode_label(enc({"id": "r", "label": "x" * 128}), two).label == "x" * 128
    for label in ["x" * 129, 1e300]:
        with pytest.raises(MessageError) as e:
            decode_label(enc({"id": "r", "label": label}), two)
        assert e.value.reason == "bad_label"


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1969-12-31T23:59:59Z",
                                1e20, -1, 2**63, "2026-02-30T00:00:00Z", "x" * 100, True, []])
def test_timestamps_out_of_range_or_malformed_are_refused(ts):
    assert reason_of(enc({"id": "r", "inputs": [1, 2, 3], "ts": ts}))[0] == "bad_ts"


def test_a_kafka_timestamp_past_year_9999_is_refused_when_the_message_has_no_ts():
    reason, detail = reason_of(enc(GOOD), timestamp_ms=253_402_300_800_000 + 1)
    assert reason == "bad_ts" and "Kafka record timestamp" in detail
    # Kafka's -1 means "no timestamp": the message is dated now
    assert decode_traffic(enc(GOOD), SHAPES, timestamp_ms=-1).ts.year >= 2026
    end = decode_traffic(enc({**GOOD, "ts": "9999-12-31T23:59:59.999999Z"}), SHAPES).ts
    assert end == dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone.utc)


def test_a_failing_batch_decoder_leaves_each_message_decoded_on_its_own(monkeypatch):
    """A bug in the batch decoder's batch-wide steps does not stop ingest: the batch's messages
    are decoded one by one, with the same samples and quarantine rows."""
    import sentinel.daemon as daemon
    from sentinel.sampling import Sampler
    from sentinel.sources.base import RawRecord

    values = [enc({"id": "a", "inputs": [1, 2, 3]}), b"{not json", enc({"id": "b", "inputs": [4, 5, 6]})]
    records = [RawRecord("t", 0, i, None, v, None) for i, v in enumerate(values)]
    before = daemon.read_batch(records, SHAPES, Sampler(), None)

    def broken(*a, **k):
        raise RuntimeError("a bug")
    monkeypatch.setattr(daemon, "decode_traffic_many", broken)
    after = daemon.read_batch(records, SHAPES, Sampler(), None)
    assert [(s.msg_id, s.sample_key) for s in after.samples] == [(s.msg_id, s.sample_key) for s in before.samples]
    assert [(q.offset, q.reason) for q in after.bad] == [(q.offset, q.reason) for q in before.bad] == [(1, "invalid_json")]


def test_read_batch_quarantines_an_unexpected_exception_as_decoder_error():
    from sentinel.daemon import read_batch
    from sentinel.sampling import Sampler
    from sentinel.sources.base import RawRecord

    class Faulty(Sampler):   # a bug downstream of the format checks, for one id
        def key(self, pair, msg_id):
            if msg_id == "boom":
                raise ZeroDivisionError("division by zero")
            return super().key(pair, msg_id)

        def keys(self, pair, msg_ids):   # the daemon's batch form, failing for the batch
            if "boom" in msg_ids:
                raise ZeroDivisionError("division by zero")
            return super().keys(pair, msg_ids)

    values = [enc({"id": "a", "inputs": [1, 2, 3]}), enc({"id": "boom", "inputs": [1, 2, 3]}),
              b'{"id": "n\\u0000", "inputs": [1, 2, 3]}', b"\xff\x00 raw \xed\xa0\x80"]
    records = [RawRecord("t", 0, i, None, v, None) for i, v in enumerate(values)]
    b = read_batch(records, SHAPES, Faulty(), None)
    samples, bad = b.samples, b.bad
    assert [s.msg_id for s in samples] == ["a"]
    assert [(q.offset, q.reason) for q in bad] == [(1, "decoder_error"), (2, "nul_character"), (3, "not_utf8")]
    assert bad[0].detail == "ZeroDivisionError: division by zero"
    import hashlib
    assert bad[2].value_sha256 == hashlib.sha256(values[3]).hexdigest()
    assert bad[2].raw == "\\xff\x00 raw \\xed\\xa0\\x80"     # undecodable bytes escaped; NUL escaped at store

"""The hostile message generator behind `make fuzz` (benchmarks/fuzz.py): a pure function of its
seed, every family in every stream, ids that never collide, valid traffic that really is valid.
No broker: the end-to-end run is the benchmark's job."""
import json

import pytest

from sentinel.messages import PairShape, decode_traffic
from sentinel.testing.hostile import EITHER, FAMILIES, MESSAGE_LIMIT, QUARANTINE, STORE, HostileGenerator

SHAPES = {"triage": PairShape("triage", (30,), ("malignant", "benign"))}


def _stream(seed, n):
    return [(m.family, m.variant, m.expect, m.value, m.timestamp_ms, m.msg_id)
            for m in HostileGenerator(seed).generate(n)]


def test_same_seed_same_stream_other_seed_other_stream():
    assert _stream(3, 1500) == _stream(3, 1500)
    assert _stream(3, 1500) != _stream(4, 1500)


@pytest.mark.parametrize("n", [len(FAMILIES), 300])
def test_every_family_occurs(n):
    msgs = list(HostileGenerator(7).generate(n))
    assert {m.family for m in msgs} == set(FAMILIES)
    assert {m.expect for m in msgs} <= {STORE, QUARANTINE, EITHER}


def test_ids_are_unique_and_valid_traffic_decodes_as_written():
    msgs = list(HostileGenerator(11).generate(3000))
    ids = [m.msg_id for m in msgs if m.msg_id is not None]
    assert len(ids) == len(set(ids)) > 1000
    valid = [m for m in msgs if m.family == "valid"]
    assert valid and all(m.expect == STORE for m in valid)
    for m in valid:
        decoded = decode_traffic(m.value, SHAPES)
        assert decoded.id == m.msg_id == json.loads(m.value)["id"]
        assert decoded.inputs["input"].shape == (30,)


def test_families_carry_what_they_are_named_for():
    gen = HostileGenerator(5)
    oversized = gen.message("oversized", 1)
    assert len(oversized.value) > MESSAGE_LIMIT and oversized.expect == QUARANTINE
    kafka_ts = gen.message("kafka_ts_out_of_range", 2)
    assert kafka_ts.timestamp_ms >= 253_402_300_800_000 and b'"ts"' not in kafka_ts.value
    raw = [gen.message("surrogate_raw", i).value for i in range(40)]
    assert any(b"\xed\xa0\x80" in v or b"\xed\xbf\xbf" in v for v in raw)       # CESU-8 bytes, not escapes
    escaped = [gen.message("surrogate_escape", i).value for i in range(40)]
    assert all(v.isascii() for v in escaped) and any(b"\\ud800" in v for v in escaped)
    deep = [gen.message("deep_nesting", i).value for i in range(60)]
    assert max(v.count(b"[") for v in deep) >= 1000
    huge = [gen.message("int_1e400", i).value for i in range(30)]
    assert any(b"1" + b"0" * 400 in v for v in huge)
    with pytest.raises(ValueError, match="unknown hostile families"):
        HostileGenerator(0, families={"valid": 1.0, "no_such_family": 1.0})

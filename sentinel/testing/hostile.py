"""Hostile Kafka message values for fuzzing Sentinel end to end (``make fuzz``: ``benchmarks/fuzz.py``).

    gen = HostileGenerator(seed=1)
    for m in gen.generate(100_000):
        producer.send(topic, value=m.value, timestamp_ms=m.timestamp_ms)

Every message is tagged with its ``family`` (what kind of attack it is, the unit a report counts
by), a ``variant`` (the exact case inside the family) and ``expect``: what the documented message
format (README "Message format", issue 9) says must happen to it:

* ``store``: a well-formed message; it must end up as a sample;
* ``quarantine``: outside the format (not UTF-8 JSON, not an object, wrong shape, numbers that are
  not JSON numbers or not finite, out-of-range label, too large, ...); it must be quarantined;
* ``either``: the format leaves room (a value that may be made storable or refused, such as a NUL
  in an attribute or a timestamp past year 9999); it must be stored or quarantined, never lost.

Every message that carries an id carries one no other message of the stream has (a serial number
is part of it, also when the rest of the id is hostile), so "stored once per id" never hides a
loss. The stream is a pure function of the seed; every family occurs at least once in any stream
of ``len(FAMILIES)`` messages or more.

The values are built as bytes, not through ``json.dumps`` alone: integers of thousands of digits,
``NaN`` literals, lone surrogates as raw CESU-8 bytes and deep nesting cannot all be produced by
the standard encoder. Families and the facts behind them: ``/work/shared/PITFALLS.md`` and
issue 9 (a measured crash or store refusal for most of them on the code before issue 9).

This module must not import pytest or kafka (``tests/test_hostile.py`` uses it without a broker).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np

STORE, QUARANTINE, EITHER = "store", "quarantine", "either"

#: Year 10000 in epoch milliseconds: the first instant Python's datetime cannot hold.
YEAR_10000_MS = 253_402_300_800_000
#: Sentinel's message size limit in bytes (``sentinel.messages.MAX_MESSAGE_BYTES`` when this was
#: written); the oversized family goes just past it.
MESSAGE_LIMIT = 1_000_000
_RAW = "\u2063RAW\u2063"          # placeholder string replaced by raw JSON text after encoding

# Family -> share of the stream. `valid` is the ordinary traffic the hostile messages hide in.
FAMILIES: dict[str, float] = {
    "valid": 0.40,
    "deep_nesting": 0.03,
    "huge_int": 0.03,
    "int_1e400": 0.02,
    "surrogate_escape": 0.03,
    "surrogate_raw": 0.02,
    "id_lone_surrogate": 0.02,
    "nul_bytes": 0.03,
    "nan_literals": 0.03,
    "non_utf8": 0.02,
    "utf16_32": 0.02,
    "string_numbers": 0.03,
    "non_string_attrs": 0.03,
    "huge_labels": 0.02,
    "digit_labels": 0.02,
    "ts_out_of_range": 0.03,
    "kafka_ts_out_of_range": 0.01,
    "long_stratum": 0.02,
    "empty": 0.02,
    "oversized": 0.0004,
    "random_bytes": 0.04,
    "mutated": 0.04,
    "wrong_types": 0.03,
    "long_id": 0.01,
}


@dataclass(frozen=True)
class Hostile:
    """One message: the Kafka value (None is a tombstone), an optional Kafka record timestamp
    (None: the producer's clock), and what should happen to it."""
    family: str
    variant: str
    expect: str
    value: bytes | None
    timestamp_ms: int | None = None
    msg_id: str | None = None      # the id the generator wrote, when it wrote a usable one


def _dumps(obj: Any, *, ascii_only: bool = True) -> str:
    return json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":"), allow_nan=True)


def _raw(obj: dict[str, Any], raw: str, *, encoding: str = "utf-8") -> bytes:
    """``obj`` as JSON with the placeholder value replaced by ``raw`` (JSON text written verbatim)."""
    return _dumps(obj).replace(_dumps(_RAW), raw, 1).encode(encoding, "surrogatepass")


def _nest(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=n - 1))


class HostileGenerator:
    """A seeded stream of hostile and valid traffic messages for one model pair.

    ``rows`` is a pool of valid input rows (``n x n_features``) that valid messages draw from with
    a 2% jitter; by default the bundled example pair's reference data (30 features). ``classes``
    are the pair's class names (labels), ``regions`` the attribute values of valid traffic.
    """

    def __init__(self, seed: int = 0, *, rows: np.ndarray | None = None,
                 classes: Sequence[str] = ("malignant", "benign"), regions: Sequence[str] = ("eu", "us", "apac"),
                 families: dict[str, float] | None = None):
        if rows is None:
            from ..examples.traffic import load_reference

            rows = load_reference().x
        self.seed = seed
        self.rows = np.asarray(rows, dtype=np.float64)
        self.n_features = int(self.rows.shape[1])
        self.classes = tuple(classes)
        self.regions = tuple(regions)
        self.families = dict(families or FAMILIES)
        unknown = set(self.families) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown hostile families {sorted(unknown)}; known: {sorted(FAMILIES)}")
        self._makers: dict[str, Callable[[int], Hostile]] = {f: getattr(self, f"_{f}") for f in self.families}
        self.rng = random.Random(seed)
        self._np = np.random.default_rng(seed)
        self._buffer: list[list[float]] = []

    # -- the stream ------------------------------------------------------------------------------
    def generate(self, count: int) -> Iterator[Hostile]:
        """``count`` messages. Families are drawn by weight; one seeded position per family among
        the first ``min(count, 1000)`` is forced to it, so every family occurs."""
        names = list(self.families)
        weights = [self.families[n] for n in names]
        span = min(count, 1000)
        forced: dict[int, str] = {}
        if count >= len(names):
            forced = dict(zip(self.rng.sample(range(span), len(names)), names))
        for serial in range(count):
            family = forced.get(serial) or self.rng.choices(names, weights)[0]
            yield self._makers[family](serial)

    def message(self, family: str, serial: int) -> Hostile:
        """One message of ``family`` (for tests and reproductions)."""
        return self._makers[family](serial)

    # -- building blocks -------------------------------------------------------------------------
    def _id(self, serial: int) -> str:
        return f"fz{self.seed}-{serial}"

    def _row(self) -> list[float]:
        if not self._buffer:
            idx = self._np.integers(0, len(self.rows), size=1024)
            jitter = 1.0 + 0.02 * self._np.standard_normal((1024, self.n_features))
            self._buffer = np.round(self.rows[idx] * jitter, 6).tolist()
        return self._buffer.pop()

    def _valid_obj(self, serial: int) -> dict[str, Any]:
        obj: dict[str, Any] = {"id": self._id(serial), "inputs": self._row(),
                               "attributes": {"region": self.rng.choice(self.regions)}}
        r = self.rng.random()
        if r < 0.1:
            obj["label"] = self.rng.choice(self.classes)
        elif r < 0.2:
            obj["label"] = self.rng.randrange(len(self.classes))
        if self.rng.random() < 0.2:
            obj["ts"] = "2026-11-21T10:%02d:%02dZ" % (self.rng.randrange(60), self.rng.randrange(60))
        elif self.rng.random() < 0.1:
            obj["ts"] = 1_790_000_000_000 + self.rng.randrange(10**9)
        if self.rng.random() < 0.2:
            obj["served_latency_ms"] = round(self.rng.uniform(0.5, 20), 3)
        return obj

    def _msg(self, family: str, variant: str, expect: str, value: bytes | None, serial: int | None = None,
             timestamp_ms: int | None = None) -> Hostile:
        return Hostile(family, variant, expect, value, timestamp_ms,
                       self._id(serial) if serial is not None else None)

    def _pick(self, cases: Sequence[tuple[str, str, Callable[[], Any]]]) -> tuple[str, str, Any]:
        variant, expect, build = self.rng.choice(cases)
        return variant, expect, build()

    # -- families --------------------------------------------------------------------------------
    def _valid(self, serial: int) -> Hostile:
        return self._msg("valid", "ordinary", STORE, _dumps(self._valid_obj(serial)).encode(), serial)

    def _deep_nesting(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        depth = self.rng.choice((200, 1000, 1000, 3000, 10000))
        where = self.rng.choice(("inputs", "inputs", "extra", "attribute", "label"))
        if self.rng.random() < 0.03:   # issue 9's reproduction (200 kB), with this stream's id
            value = b'{"id":"%s","inputs":' % obj["id"].encode() + b"[" * 100000 + b"]" * 100000 + b"}"
            return self._msg("deep_nesting", "issue_repro", QUARANTINE, value, serial)
        inner = "1.0" if self.rng.random() < 0.5 else ""
        expect = QUARANTINE
        if where == "inputs":
            obj["inputs"] = _RAW
        elif where == "extra":
            obj["meta"], expect = _RAW, EITHER
        elif where == "attribute":
            obj["attributes"]["region"] = _RAW
        else:
            obj["label"] = _RAW
        return self._msg("deep_nesting", f"{where}_{depth}", expect, _raw(obj, _nest(depth, inner)), serial)

    def _huge_int(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        n = self.rng.choice((310, 400, 1000, 4299, 4301, 6000))
        big = ("-" if self.rng.random() < 0.3 else "") + _digits(self.rng, n)
        where = self.rng.choice(("inputs", "label", "ts", "attribute", "extra", "id"))
        expect = QUARANTINE if n > 4300 else {"inputs": QUARANTINE, "label": QUARANTINE, "ts": EITHER,
                                              "attribute": EITHER, "extra": EITHER, "id": QUARANTINE}[where]
        if where == "inputs":
            obj["inputs"][self.rng.randrange(self.n_features)] = _RAW
        elif where == "attribute":
            obj["attributes"]["region"] = _RAW
        elif where == "extra":
            obj["count"] = _RAW
        elif where == "id":   # longer than any id may be: unique anyway (the digits are random)
            obj["id"] = _RAW
        else:
            obj[where] = _RAW
        return self._msg("huge_int", f"{where}_{n}_digits", expect, _raw(obj, big),
                         None if where == "id" else serial)

    def _int_1e400(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        literal, kind = self.rng.choice((("1" + "0" * 400, "int"), ("-1" + "0" * 400, "int"),
                                         ("1e400", "float"), ("-1e400", "float"), ("1e309", "float"),
                                         ("1" + "0" * 309, "int")))
        where = self.rng.choice(("inputs", "inputs", "label", "extra", "ts"))
        expect = {"inputs": QUARANTINE, "label": QUARANTINE, "extra": EITHER, "ts": EITHER}[where]
        if where == "inputs":
            obj["inputs"][self.rng.randrange(self.n_features)] = _RAW
        elif where == "extra":
            obj["score"] = _RAW
        else:
            obj[where] = _RAW
        return self._msg("int_1e400", f"{where}_{kind}", expect, _raw(obj, literal), serial)

    _SURROGATES = ("\ud800", "\udfff", "\ud83d", "\udc00x", "a\ud800b")

    def _surrogate_fields(self, serial: int, family: str, ascii_only: bool) -> Hostile:
        obj = self._valid_obj(serial)
        s = self.rng.choice(self._SURROGATES)
        where = self.rng.choice(("attribute", "attribute_key", "label", "extra", "extra_key", "model", "ts"))
        expect = EITHER
        if where == "attribute":
            obj["attributes"]["region"] = s
        elif where == "attribute_key":
            obj["attributes"][s] = "eu"
        elif where == "label":
            obj["label"], expect = s, QUARANTINE
        elif where == "extra":
            obj["note"] = s
        elif where == "extra_key":
            obj[s] = "x"
        elif where == "model":
            obj["model"], expect = s, QUARANTINE
        else:
            obj["ts"] = "2026-11-21T10:00:00" + s
            expect = QUARANTINE
        return self._msg(family, where, expect, _dumps(obj, ascii_only=ascii_only).encode("utf-8", "surrogatepass"),
                         serial)

    def _surrogate_escape(self, serial: int) -> Hostile:
        return self._surrogate_fields(serial, "surrogate_escape", ascii_only=True)

    def _surrogate_raw(self, serial: int) -> Hostile:
        # raw CESU-8 bytes (b"\xed\xa0\x80" for U+D800): Python's json accepts them from bytes
        return self._surrogate_fields(serial, "surrogate_raw", ascii_only=False)

    def _id_lone_surrogate(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        obj["id"] = obj["id"] + "-" + self.rng.choice(self._SURROGATES)
        raw = self.rng.random() < 0.5
        return self._msg("id_lone_surrogate", "raw" if raw else "escape", EITHER,
                         _dumps(obj, ascii_only=not raw).encode("utf-8", "surrogatepass"), serial)

    def _nul_bytes(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        where = self.rng.choice(("id", "attribute", "attribute_key", "extra", "extra_key", "label",
                                 "raw_in_string", "raw_outside"))
        expect = EITHER
        if where == "id":
            obj["id"] += "\x00"
        elif where == "attribute":
            obj["attributes"]["region"] = "e\x00u"
        elif where == "attribute_key":
            obj["attributes"]["re\x00gion"] = "eu"
        elif where == "extra":
            obj["note"] = "\x00" * self.rng.randint(1, 5)
        elif where == "extra_key":
            obj["\x00"] = 1
        elif where == "label":
            obj["label"] = self.classes[-1] + "\x00"     # a class name once the NUL is gone: either
        if where == "raw_in_string":     # a raw control character inside a string: not JSON
            value = _dumps(obj).replace('"region":"', '"region":"\x00', 1).encode()
            return self._msg("nul_bytes", where, QUARANTINE, value, serial)
        if where == "raw_outside":
            return self._msg("nul_bytes", where, QUARANTINE, _dumps(obj).encode() + b"\x00", serial)
        return self._msg("nul_bytes", where, expect, _dumps(obj).encode(), serial)

    def _nan_literals(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        lit = self.rng.choice(("NaN", "Infinity", "-Infinity"))
        where = self.rng.choice(("inputs", "inputs", "extra", "extra_nested", "attribute", "label", "ts"))
        expect = {"inputs": QUARANTINE, "label": QUARANTINE}.get(where, EITHER)
        if where == "inputs":
            obj["inputs"][self.rng.randrange(self.n_features)] = _RAW
        elif where == "extra":
            obj["score"] = _RAW
        elif where == "extra_nested":
            obj["meta"] = {"scores": [1.0, _RAW]}
        elif where == "attribute":
            obj["attributes"]["region"] = _RAW
        else:
            obj[where] = _RAW
        return self._msg("nan_literals", f"{where}_{lit}", expect, _raw(obj, lit), serial)

    def _non_utf8(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        bad = self.rng.choice((b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xe0\x80", b"\xe9", b"\x80abc", b"\xf8\x88\x80\x80\x80"))
        where = self.rng.choice(("attribute", "id", "extra", "whole_latin1"))
        if where == "whole_latin1":
            obj["attributes"]["region"] = "r\u00e9gion-\u00fc"
            value = _dumps(obj, ascii_only=False).encode("latin-1")
            return self._msg("non_utf8", where, QUARANTINE, value, serial)
        if where == "attribute":
            obj["attributes"]["region"] = "\x01BAD\x01"
        elif where == "id":
            obj["id"] += "\x01BAD\x01"
        else:
            obj["note"] = "\x01BAD\x01"
        value = _dumps(obj).encode().replace(b"\\u0001BAD\\u0001", bad)
        return self._msg("non_utf8", f"{where}_{bad.hex()}", QUARANTINE, value, serial)

    def _utf16_32(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        enc = self.rng.choice(("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "utf-8-sig"))
        expect = EITHER if enc == "utf-8-sig" else QUARANTINE   # a BOM before UTF-8 is still UTF-8
        return self._msg("utf16_32", enc, expect, _dumps(obj).encode(enc), serial)

    def _string_numbers(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        i = self.rng.randrange(self.n_features)
        variant = self.rng.choice(("one_string", "all_strings", "bool", "all_bools", "named_strings",
                                   "label_string_float", "label_bool", "ts_numeric_string"))
        if variant == "one_string":
            obj["inputs"][i] = "1.5"
        elif variant == "all_strings":
            obj["inputs"] = [repr(v) for v in obj["inputs"]]
        elif variant == "bool":
            obj["inputs"][i] = self.rng.random() < 0.5
        elif variant == "all_bools":
            obj["inputs"] = [self.rng.random() < 0.5 for _ in obj["inputs"]]
        elif variant == "named_strings":
            obj["inputs"] = {"x": [str(v) for v in obj["inputs"]]}
        elif variant == "label_string_float":
            obj["label"] = "1.5"
        elif variant == "label_bool":
            obj["label"] = True
        else:
            obj["ts"] = "1790000000000"
        return self._msg("string_numbers", variant, EITHER if variant == "ts_numeric_string" else QUARANTINE,
                         _dumps(obj).encode(), serial)

    def _non_string_attrs(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        variant, expect, value = self._pick((
            ("int", EITHER, lambda: self.rng.randint(-10**6, 10**6)),
            ("float", EITHER, lambda: self.rng.uniform(-1e6, 1e6)),
            ("bool", EITHER, lambda: self.rng.random() < 0.5),
            ("big_float", EITHER, lambda: 1e308),
            ("neg_zero", EITHER, lambda: -0.0),
            ("object", QUARANTINE, lambda: {"a": "b"}),
            ("list", QUARANTINE, lambda: ["eu"]),
            ("null", EITHER, lambda: None),
        ))
        obj["attributes"]["region"] = value
        return self._msg("non_string_attrs", variant, expect, _dumps(obj).encode(), serial)

    def _huge_labels(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        variant, raw = self.rng.choice((("int_400_digits", "1" + "0" * 400), ("int_5000_digits", _digits(self.rng, 5000)),
                                        ("float_1e308", "1e308"), ("negative", "-1"), ("past_classes", "2"),
                                        ("fraction", "1.5"), ("long_string", _dumps("b" * 10000)),
                                        ("huge_string_index", _dumps("9" * 500))))
        obj["label"] = _RAW
        return self._msg("huge_labels", variant, QUARANTINE, _raw(obj, raw), serial)

    def _digit_labels(self, serial: int) -> Hostile:
        # str.isdigit() is True for all of these; int() refuses the first four
        obj = self._valid_obj(serial)
        label, expect = self.rng.choice((("\u00b2", QUARANTINE), ("\u00b3", QUARANTINE), ("\u00b9", QUARANTINE),
                                         ("\u2460", QUARANTINE), ("\u0663", QUARANTINE), ("\u0661", EITHER),
                                         ("\U0001d7d8", EITHER), ("0", EITHER), ("01", EITHER)))
        obj["label"] = label
        return self._msg("digit_labels", f"U+{ord(label[0]):04X}", expect, _dumps(obj).encode(), serial)

    def _ts_out_of_range(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        variant, ts = self.rng.choice((
            ("year1_plus0100", "0001-01-01T00:00:00+01:00"), ("year9999_minus0100", "9999-12-31T23:59:59-01:00"),
            ("year1_utc", "0001-01-01T00:00:00Z"), ("year0", "0000-01-01T00:00:00Z"),
            ("ms_year10000", YEAR_10000_MS + self.rng.randrange(10**6)), ("ms_1e20", 10**20),
            ("ms_float_1e300", 1e300), ("ms_before_year1", -62_135_596_800_001), ("ms_negative", -1),
            ("garbage", "yesterday"), ("offset_2400", "2026-01-01T00:00:00+24:00")))
        obj["ts"] = ts
        return self._msg("ts_out_of_range", variant, EITHER, _dumps(obj).encode(), serial)

    def _kafka_ts_out_of_range(self, serial: int) -> Hostile:
        # a valid message without 'ts': the Kafka record timestamp is the fallback, and it is past 9999
        obj = self._valid_obj(serial)
        obj.pop("ts", None)
        variant, ts = self.rng.choice((("year10000", YEAR_10000_MS + self.rng.randrange(10**9)),
                                       ("int64_max", 2**63 - 1)))
        return self._msg("kafka_ts_out_of_range", variant, EITHER, _dumps(obj).encode(), serial, timestamp_ms=ts)

    def _long_stratum(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        n = self.rng.choice((256, 300, 1000, 5000))
        obj["attributes"]["region"] = "".join(self.rng.choices("abcdefgh\u00e9\u4e2d", k=n))
        return self._msg("long_stratum", f"region_{n}_chars", EITHER, _dumps(obj, ascii_only=False).encode(), serial)

    def _empty(self, serial: int) -> Hostile:
        variant, value = self.rng.choice((("tombstone", None), ("zero_bytes", b""), ("empty_object", b"{}"),
                                          ("null", b"null"), ("whitespace", b" \n\t "), ("empty_array", b"[]"),
                                          ("empty_string", b'""'), ("zero", b"0"), ("id_only", None)))
        if variant == "id_only":
            value = _dumps({"id": self._id(serial)}).encode()
        return self._msg("empty", variant, QUARANTINE, value)

    def _oversized(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        obj["padding"] = ""
        base = len(_dumps(obj).encode())
        over = self.rng.choice((1, 10, 20_000))
        obj["padding"] = "p" * (MESSAGE_LIMIT + over - base)
        return self._msg("oversized", f"limit_plus_{over}", QUARANTINE, _dumps(obj).encode(), serial)

    def _random_bytes(self, serial: int) -> Hostile:
        n = self.rng.choice((1, 2, 8, 64, 400))
        if self.rng.random() < 0.5:
            return self._msg("random_bytes", f"binary_{n}", QUARANTINE, self.rng.randbytes(n))
        text = "".join(self.rng.choices('{}[]":,0123456789.eE-+ truefalsnid\\u', k=n))
        return self._msg("random_bytes", f"json_chars_{n}", QUARANTINE, text.encode())

    def _mutated(self, serial: int) -> Hostile:
        # a valid message with a few bytes flipped, dropped, inserted or cut, all after the id so that
        # a still-valid result keeps its unique id
        value = bytearray(_dumps(self._valid_obj(serial)).encode())
        start = value.index(b'"', value.index(b'"id":"') + 6) + 1
        ops = []
        for _ in range(self.rng.randint(1, 4)):
            op = self.rng.choice(("flip", "drop", "insert", "cut"))
            pos = self.rng.randrange(start, len(value))
            if op == "flip":
                value[pos] ^= 1 << self.rng.randrange(8)
            elif op == "drop":
                del value[pos]
            elif op == "insert":
                value.insert(pos, self.rng.randrange(256))
            else:
                del value[pos:]
            ops.append(op)
            if len(value) <= start:
                break
        return self._msg("mutated", "+".join(ops), EITHER, bytes(value), serial)

    def _wrong_types(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        unique_int = 10**12 + self.seed * 10**9 + serial
        variant, expect, change = self.rng.choice((
            ("id_int", EITHER, lambda: obj.update(id=unique_int)),
            ("id_float", QUARANTINE, lambda: obj.update(id=float(serial) + 0.5)),
            ("id_bool", QUARANTINE, lambda: obj.update(id=True)),
            ("id_list", QUARANTINE, lambda: obj.update(id=[obj["id"]])),
            ("id_null", QUARANTINE, lambda: obj.update(id=None)),
            ("id_empty", QUARANTINE, lambda: obj.update(id="")),
            ("no_id", QUARANTINE, lambda: obj.pop("id")),
            ("no_inputs", QUARANTINE, lambda: obj.pop("inputs")),
            ("inputs_string", QUARANTINE, lambda: obj.update(inputs="1,2,3")),
            ("inputs_null", QUARANTINE, lambda: obj.update(inputs=None)),
            ("inputs_short", QUARANTINE, lambda: obj.update(inputs=obj["inputs"][:-1])),
            ("inputs_2d", QUARANTINE, lambda: obj.update(inputs=[obj["inputs"][:15], obj["inputs"][15:]])),
            ("inputs_ragged", QUARANTINE, lambda: obj.update(inputs=[obj["inputs"][:10], obj["inputs"][10:]])),
            ("inputs_empty_object", QUARANTINE, lambda: obj.update(inputs={})),
            ("model_number", QUARANTINE, lambda: obj.update(model=7)),
            ("model_unknown", QUARANTINE, lambda: obj.update(model="no-such-pair")),
            ("attributes_list", QUARANTINE, lambda: obj.update(attributes=["eu"])),
            ("attributes_string", QUARANTINE, lambda: obj.update(attributes="eu")),
            ("top_level_array", QUARANTINE, None),
        ))
        if variant == "top_level_array":
            return self._msg("wrong_types", variant, QUARANTINE, _dumps([obj]).encode())
        change()
        has_id = variant == "id_int" or not variant.startswith(("id_", "no_id"))
        msg = self._msg("wrong_types", variant, expect, _dumps(obj).encode(), serial if has_id else None)
        return replace(msg, msg_id=str(unique_int)) if variant == "id_int" else msg

    def _long_id(self, serial: int) -> Hostile:
        obj = self._valid_obj(serial)
        n = self.rng.choice((256, 257, 1000, 20_000))
        obj["id"] = (obj["id"] + "-").ljust(n, "i")
        msg = self._msg("long_id", f"{n}_chars", STORE if n <= 256 else QUARANTINE, _dumps(obj).encode())
        return replace(msg, msg_id=obj["id"]) if n <= 256 else msg

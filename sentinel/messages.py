"""The traffic message format (DESIGN.md, README "Message format"), decoded and validated.

A message that does not parse, does not follow the format, or does not fit its model's input shape
raises ``MessageError`` with a short ``reason`` code; the daemon quarantines it with that reason and
carries on. The decoder is strict on purpose: whatever it accepts, the store can keep exactly, on
SQLite and on PostgreSQL (no NUL characters, no lone surrogates, no NaN/Infinity, bounded nesting
and lengths), so a stored batch is never refused for its content.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import MessageError

MAX_MESSAGE_BYTES = 1_000_000
MAX_ID_LEN = 256            # samples.msg_id / labels.msg_id are varchar(256)
MAX_LABEL_LEN = 128         # samples.label / labels.label are varchar(128)
MAX_DEPTH = 32              # arrays/objects inside each other, over the whole message
MAX_ATTRIBUTES = 64
MAX_ATTR_KEY_LEN = 64       # a slice is named "key=value": 64 + 1 + 128 fits check_results.slice (255)
MAX_ATTR_VALUE_LEN = 128
# integers of up to 19 characters (int64, sign included) are kept exactly; longer ones are read
# as doubles like every other JSON number (RFC 8259 §6), so 1e400 written out in digits is
# infinite, not a 401-digit integer that numpy, float() and str() choke on
_MAX_EXACT_INT_CHARS = 19
TS_MIN = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
TS_MAX = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone.utc)
KNOWN_KEYS = {"id", "ts", "model", "inputs", "attributes", "label"}

# a JSON string, also an unterminated one (to the end of the text): every '"' starts a match, so
# the scan is linear whatever the input (possessive quantifiers, Python 3.11+)
_JSON_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_INDEX = re.compile(r"[0-9]{1,9}")      # ASCII digits only: "²".isdigit() is True, int("²") raises


@dataclass(frozen=True)
class PairShape:
    """What a pair's models accept: the per-sample input shape and, for named features, their order.
    ``signature`` (sentinel.tensors.Signature) is every typed input the models take (None: one
    float32 input of ``input_shape``); ``text`` the pair's tokenizer (sentinel.text), when its
    messages may carry raw text."""
    name: str
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    features: tuple[str, ...] | None = None
    signature: Any = None
    text: Any = None

    @property
    def size(self) -> int:
        return int(np.prod(self.input_shape)) if self.input_shape else 1


@dataclass(frozen=True)
class TrafficMessage:
    id: str
    pair: str
    ts: dt.datetime
    inputs: list[float]          # flattened, in the model's feature order
    attributes: dict[str, str]
    label: str | None            # class name
    extra: dict[str, Any]


@dataclass(frozen=True)
class LabelMessage:
    id: str
    label: str


def _show(value: Any, n: int = 40) -> str:
    """A short printable form of a value for an error detail (repr escapes NUL and surrogates)."""
    if isinstance(value, (dict, list)):
        return f"<{type(value).__name__}>"
    if type(value) is int and value.bit_length() > 64:
        return f"<a {len(str(value)) if value.bit_length() < 14000 else 'huge'}-digit integer>"
    s = value if isinstance(value, str) else str(value)
    return repr(s[:n]) + ("..." if len(s) > n else "")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"a string ({_show(value, 20)})"
    return {dict: "an object", list: "an array"}.get(type(value), f"a {type(value).__name__}")


# -- bytes -> JSON object ---------------------------------------------------------------------------

def _utf8(data: bytes) -> str:
    """The message text: UTF-8 only (a UTF-8 byte order mark is allowed and dropped)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:4] == b"\x00\x00\xfe\xff":
        raise MessageError("not_utf8", "starts with a UTF-16/UTF-32 byte order mark; messages must be UTF-8")
    if b"\x00" in data[:4]:
        # what json.loads would silently read as UTF-16 or UTF-32 (RFC 4627 detection)
        raise MessageError("not_utf8", "NUL bytes among the first characters: UTF-16 or UTF-32 text? "
                                       "messages must be UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError("not_utf8", f"byte {exc.start} ({data[exc.start:exc.start + 4]!r}) is not valid "
                                       f"UTF-8 ({exc.reason}); messages must be UTF-8") from None


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in ``text``, found without parsing it: strings are cut
    out with a linear regular expression, then the brackets left are counted (numpy cumsum)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return min(MAX_DEPTH, text.count("[") + text.count("{"))
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode("ascii")
    if not brackets:
        return 0
    b = np.frombuffer(brackets, dtype=np.uint8)
    steps = ((b == ord("[")) | (b == ord("{"))).astype(np.int32) * 2 - 1     # +1 opens, -1 closes
    return int(np.cumsum(steps, dtype=np.int32).max())


def _parse_int(digits: str) -> int | float:
    return int(digits) if len(digits) <= _MAX_EXACT_INT_CHARS else float(digits)


_DECODER = json.JSONDecoder(parse_int=_parse_int)   # one instance: json.loads(**kw) builds one per call


def parse_json(value: bytes | str | None) -> dict[str, Any]:
    """The message as a JSON object: UTF-8, nesting bounded before parsing, long integers as
    doubles. Its values are checked by :func:`check_values`, not here."""
    if value is None:
        raise MessageError("empty", "message has no value (tombstone)")
    if len(value) > MAX_MESSAGE_BYTES:
        raise MessageError("too_large", f"message is {len(value)} bytes, limit {MAX_MESSAGE_BYTES}")
    text = value if isinstance(value, str) else _utf8(bytes(value))
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        # checked before json.loads, whose recursion a few thousand brackets exhaust
        raise MessageError("too_deep", f"arrays/objects nest {depth} deep, limit {MAX_DEPTH}")
    try:
        obj = _DECODER.decode(text)
    except ValueError as exc:
        raise MessageError("invalid_json", f"not JSON ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(obj, dict):
        raise MessageError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _where(path: tuple[Any, ...]) -> str:
    """A field's position for an error detail, e.g. 'meta.x[2]'."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p[:40]}"
    return repr(out.lstrip("."))


def _check_text(s: str, path: tuple[Any, ...], what: str = "") -> None:
    if not s.isascii() and _SURROGATE.search(s):
        raise MessageError("invalid_unicode", f"{what}{_where(path)} contains a lone surrogate "
                                              f"(U+D800..U+DFFF, e.g. \\ud800): not valid Unicode")
    if "\x00" in s:
        raise MessageError("nul_character", f"{what}{_where(path)} contains a NUL character (\\u0000), "
                                            "which the store cannot keep")


def check_values(obj: dict[str, Any], skip: tuple[str, ...] = ("inputs",)) -> None:
    """Every string (keys too) is valid Unicode without NUL and every number finite, anywhere in
    the message except the ``skip`` fields (``inputs`` is checked, numerically, by its decoder)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(v, (k,)) for k, v in obj.items() if k not in skip]
    for k in obj:
        _check_text(k, (k,), "the key of ")
    while stack:
        v, path = stack.pop()
        t = type(v)
        if t is str:
            _check_text(v, path)
        elif t is float:
            if not math.isfinite(v):
                raise MessageError("non_finite", f"{_where(path)} is {v} (NaN, Infinity or beyond ±1.8e308): "
                                                 "numbers must be finite JSON numbers")
        elif t is dict:
            for k, x in v.items():
                _check_text(k, path + (k,), "the key of ")
                stack.append((x, path + (k,)))
        elif t is list:
            stack.extend((x, path + (i,)) for i, x in enumerate(v))


def _id(obj: Mapping[str, Any]) -> str:
    if "id" not in obj:
        raise MessageError("missing_id", "field 'id' is required")
    mid = obj["id"]
    if type(mid) is not str and type(mid) is not int:
        raise MessageError("bad_id", f"'id' must be a string, got {_kind(mid)}")
    mid = str(mid)    # an integer id is taken as its decimal string (README)
    if not mid or len(mid) > MAX_ID_LEN:
        raise MessageError("bad_id", f"'id' must be 1..{MAX_ID_LEN} characters, got {len(mid)}")
    return mid


# -- timestamps -----------------------------------------------------------------------------------

def _in_range(t: dt.datetime, what: str) -> dt.datetime:
    if not TS_MIN <= t <= TS_MAX:
        raise MessageError("bad_ts", f"{what} {t.isoformat()} is outside {TS_MIN.year}..{TS_MAX.year}")
    return t


def _from_epoch_ms(ms: int | float, what: str) -> dt.datetime:
    # timedelta arithmetic, not fromtimestamp: no platform time_t limits, exact to the microsecond
    try:
        return _in_range(TS_MIN + dt.timedelta(milliseconds=ms), what)
    except (OverflowError, ValueError):
        raise MessageError("bad_ts", f"{what} {_show(ms)} ms since the epoch is out of range "
                                     f"({TS_MIN.year}..{TS_MAX.year})") from None


def parse_ts(value: Any, fallback_ms: int | None) -> dt.datetime:
    if value is None:
        if fallback_ms is not None and fallback_ms >= 0:     # Kafka says -1 when it has none
            return _from_epoch_ms(fallback_ms, "the Kafka record timestamp (the message has no 'ts')")
        return dt.datetime.now(dt.timezone.utc)
    if type(value) is int or type(value) is float:
        return _from_epoch_ms(value, "'ts'")
    if isinstance(value, str) and len(value) <= 64:
        try:
            t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise MessageError("bad_ts", f"'ts' {_show(value)} is not ISO 8601") from None
        if t.tzinfo is None:
            return _in_range(t.replace(tzinfo=dt.timezone.utc), "'ts'")
        try:
            return _in_range(t.astimezone(dt.timezone.utc), "'ts'")
        except OverflowError:   # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            raise MessageError("bad_ts", f"'ts' {_show(value)} is out of range in UTC") from None
    raise MessageError("bad_ts", f"'ts' must be ISO 8601 or epoch milliseconds, got {_kind(value)}")


# -- inputs ---------------------------------------------------------------------------------------

def _require_numbers(value: list[Any], where: str) -> None:
    """Every leaf of a (nested) array is a JSON number: not a string like "1.5", not a boolean."""
    stack = [(value, where)]
    while stack:
        v, w = stack.pop()
        for i, x in enumerate(v):
            t = type(x)
            if t is float or t is int:
                continue
            if t is list:
                stack.append((x, f"{w}[{i}]"))
                continue
            raise MessageError("bad_inputs", f"{w}[{i}] is {_kind(x)}: inputs must be JSON numbers")


def _numbers(value: list[Any], where: str) -> tuple[list[float], tuple[int, ...]]:
    """The numbers of a (nested) array, flattened, and its shape."""
    _require_numbers(value, where)
    if not any(type(x) is list for x in value):   # flat: plain Python is faster than numpy here
        flat = [float(x) for x in value]    # no OverflowError: integers longer than 19 characters are floats
        if not all(map(math.isfinite, flat)):
            raise MessageError("non_finite", f"'{where}' contains NaN, Infinity or a number beyond ±1.8e308")
        return flat, (len(flat),)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise MessageError("bad_inputs", f"'{where}' is ragged (nested arrays of different lengths)") from None
    if not np.all(np.isfinite(arr)):
        raise MessageError("non_finite", f"'{where}' contains NaN, Infinity or a number beyond ±1.8e308")
    return arr.reshape(-1).tolist(), tuple(arr.shape)


def _named_features(value: dict[str, Any], shape: PairShape) -> list[float]:
    if not shape.features:
        raise MessageError("bad_inputs", f"'inputs' has named features but pair {shape.name!r} "
                                         "has no 'features' list to order them")
    missing = [f for f in shape.features if f not in value]
    unknown = [k for k in value if k not in set(shape.features)]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unknown:
            parts.append(f"unknown {[k[:40] for k in unknown[:5]]}{'...' if len(unknown) > 5 else ''}")
        raise MessageError("shape_mismatch", "named features: " + ", ".join(parts))
    for f in shape.features:
        if type(value[f]) is not float and type(value[f]) is not int:
            raise MessageError("bad_inputs", f"'inputs.{f}' is {_kind(value[f])}: inputs must be JSON numbers")
    return _numbers([value[f] for f in shape.features], "inputs")[0]


def decode_inputs(value: Any, shape: PairShape) -> list[float]:
    """Flat array, named features (ordered by the pair's feature list) or named tensors."""
    if isinstance(value, list):
        flat, dims = _numbers(value, "inputs")
        if len(flat) != shape.size or (len(dims) > 1 and dims != shape.input_shape):
            raise MessageError("shape_mismatch",
                               f"'inputs' has shape {list(dims)}, model {shape.name!r} expects {list(shape.input_shape)}")
        return flat
    if isinstance(value, dict):
        if not value:
            raise MessageError("bad_inputs", "'inputs' object is empty")
        if not any(isinstance(v, list) for v in value.values()):
            return _named_features(value, shape)
        # named tensors: the runners take one input tensor, so exactly one name is accepted
        if len(value) != 1:
            raise MessageError("shape_mismatch", f"'inputs' has {len(value)} named tensors "
                                                 f"{[k[:40] for k in sorted(value)[:5]]}; model {shape.name!r} takes one input")
        (name, tensor), = value.items()
        if not isinstance(tensor, list):
            raise MessageError("bad_inputs", f"'inputs.{name[:40]}' is {_kind(tensor)}: a tensor is an array")
        flat, dims = _numbers(tensor, f"inputs.{name[:40]}")
        if dims != shape.input_shape and dims != (1, *shape.input_shape):
            raise MessageError("shape_mismatch",
                               f"'inputs.{name[:40]}' has shape {list(dims)}, model expects {list(shape.input_shape)}")
        return flat
    raise MessageError("bad_inputs", f"'inputs' must be an array or an object, got {_kind(value)}")


# -- labels and attributes ------------------------------------------------------------------------

def normalise_label(value: Any, classes: tuple[str, ...] | None) -> str:
    """Labels are stored as class names; an integer (a JSON number with no fraction, or a string of
    ASCII digits) is an index into the pair's classes."""
    if type(value) is float and math.isfinite(value) and value.is_integer():
        value = int(value)
    if type(value) is int:
        if classes is not None:
            if not 0 <= value < len(classes):
                raise MessageError("bad_label", f"'label' index {_show(value, 20)} is outside 0..{len(classes) - 1}")
            return classes[value]
        value = str(value)
    if isinstance(value, str) and value:
        if len(value) > MAX_LABEL_LEN:
            raise MessageError("bad_label", f"'label' is {len(value)} characters, limit {MAX_LABEL_LEN}")
        if classes is not None and value not in classes:
            if _INDEX.fullmatch(value) and int(value) < len(classes):
                return classes[int(value)]
            raise MessageError("bad_label", f"'label' {_show(value)} is not one of {list(classes)}")
        return value
    raise MessageError("bad_label", f"'label' is {_kind(value)}, not a class name or index")


def decode_attributes(value: Any) -> dict[str, str]:
    """String-valued slice keys. An integer value is taken as its decimal string (README); any
    other non-string value (a boolean, a fraction, null, an array, an object) is refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageError("bad_attributes", f"'attributes' must be an object of strings, got {_kind(value)}")
    if len(value) > MAX_ATTRIBUTES:
        raise MessageError("bad_attributes", f"'attributes' has {len(value)} keys, limit {MAX_ATTRIBUTES}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if len(k) > MAX_ATTR_KEY_LEN:
            raise MessageError("bad_attributes", f"attribute name {_show(k)} is {len(k)} characters, "
                                                 f"limit {MAX_ATTR_KEY_LEN}")
        if type(v) is int:
            v = str(v)
        elif type(v) is not str:
            raise MessageError("bad_attributes", f"'attributes.{k[:40]}' is {_kind(v)}: attribute values "
                                                 "must be strings (or integers)")
        if len(v) > MAX_ATTR_VALUE_LEN:
            raise MessageError("bad_attributes", f"'attributes.{k[:40]}' is {len(v)} characters, "
                                                 f"limit {MAX_ATTR_VALUE_LEN}")
        out[k] = v
    return out


# -- messages ---------------------------------------------------------------------------------------

def _pair_of(obj: Mapping[str, Any], pairs: Mapping[str, PairShape]) -> str:
    model = obj.get("model")
    if model is None:
        if len(pairs) != 1:
            raise MessageError("unknown_model", f"'model' is required when {len(pairs)} pairs are configured")
        return next(iter(pairs))
    if not isinstance(model, str) or model not in pairs:
        raise MessageError("unknown_model", f"'model' {_show(model, 60)} is not a configured pair {sorted(pairs)}")
    return model


def decode_traffic(value: bytes | str | None, pairs: Mapping[str, PairShape], *,
                   timestamp_ms: int | None = None) -> TrafficMessage:
    obj = parse_json(value)
    check_values(obj)
    mid = _id(obj)
    pair = _pair_of(obj, pairs)
    shape = pairs[pair]
    if "inputs" not in obj:
        raise MessageError("missing_inputs", "field 'inputs' is required")
    inputs = decode_inputs(obj["inputs"], shape)
    attributes = decode_attributes(obj.get("attributes"))
    label = normalise_label(obj["label"], shape.classes) if obj.get("label") is not None else None
    extra = {k: v for k, v in obj.items() if k not in KNOWN_KEYS}
    return TrafficMessage(mid, pair, parse_ts(obj.get("ts"), timestamp_ms), inputs, attributes, label, extra)


def decode_label(value: bytes | str | None, pairs: Mapping[str, PairShape]) -> LabelMessage:
    obj = parse_json(value)
    check_values(obj, skip=())
    mid = _id(obj)
    if obj.get("label") is None:
        raise MessageError("bad_label", "labels message needs 'label'")
    model = obj.get("model")
    classes = pairs[model].classes if isinstance(model, str) and model in pairs else (
        next(iter(pairs.values())).classes if len(pairs) == 1 else None)
    return LabelMessage(mid, normalise_label(obj["label"], classes))

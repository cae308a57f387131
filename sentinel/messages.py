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
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import MessageError
from .tensors import Row, Signature, TensorSpec, cast, encode_rows

MAX_MESSAGE_BYTES = 1_000_000
MAX_ID_LEN = 256            # samples.msg_id / labels.msg_id are varchar(256)
MAX_LABEL_LEN = 128         # samples.label / labels.label are varchar(128)
MAX_DEPTH = 32              # arrays/objects inside each other, over the whole message
MAX_ATTRIBUTES = 64
MAX_ATTR_KEY_LEN = 64       # a slice is named "key=value": 64 + 1 + 128 fits check_results.slice (255)
MAX_ATTR_VALUE_LEN = 128
MAX_TEXT_LEN = 100_000      # characters of a message's raw "text"
# integers of up to 19 characters (int64, sign included) are kept exactly; longer ones are read
# as doubles like every other JSON number (RFC 8259 §6), so 1e400 written out in digits is
# infinite, not a 401-digit integer that numpy, float() and str() choke on
_MAX_EXACT_INT_CHARS = 19
TS_MIN = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
TS_MAX = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone.utc)
KNOWN_KEYS = {"id", "ts", "model", "inputs", "text", "attributes", "label"}

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
    float32 input of ``input_shape``); ``text`` the pair's tokenizer (sentinel.text.TextEncoder),
    when its messages may carry raw text."""
    name: str
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    features: tuple[str, ...] | None = None
    signature: Any = None
    text: Any = None

    @classmethod
    def for_signature(cls, name: str, signature: Signature, classes: Sequence[str],
                      features: Sequence[str] | None = None, text: Any = None) -> "PairShape":
        """The shape of a pair whose models declare ``signature`` (``input_shape`` is the single
        fixed-shape input's, or ``()`` for typed multi-input or variable-length models)."""
        return cls(name, signature.input_shape or (), tuple(classes), tuple(features) if features else None,
                   signature, text)

    @property
    def size(self) -> int:
        return int(np.prod(self.input_shape)) if self.input_shape else 1

    @cached_property
    def single_spec(self) -> TensorSpec | None:
        """The one fixed-shape input the legacy forms (flat array, named features, one named
        tensor) fill; None for a typed pair with several or variable-length inputs."""
        if self.signature is None:
            return TensorSpec("input", "float32", tuple(self.input_shape))
        return self.signature.inputs[0] if self.signature.is_single else None


@dataclass(slots=True)
class TrafficMessage:
    """A decoded traffic message. Not frozen: a frozen dataclass sets each field through
    ``object.__setattr__`` (1.75 µs to build this one, 0.35 µs slotted), and one is built per
    message ingested; nothing changes a message once decoded."""
    id: str
    pair: str
    ts: dt.datetime
    inputs: Row                  # input name -> array of its declared dtype (no batch dimension)
    attributes: dict[str, str]
    label: str | None            # class name
    extra: dict[str, Any]
    text: str | None = None      # the raw text the inputs were made from (pairs with a tokenizer)
    # the inputs as the store keeps them (tensors.encode_row), when the batch decoder made them in bulk
    stored: bytes | None = field(default=None, repr=False, compare=False)


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
    opens = text.count("[") + text.count("{")
    if opens <= MAX_DEPTH:
        return opens
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode("ascii")
    if not brackets:
        return 0
    b = np.frombuffer(brackets, dtype=np.uint8)
    steps = ((b == ord("[")) | (b == ord("{"))).astype(np.int32) * 2 - 1     # +1 opens, -1 closes
    return int(np.cumsum(steps, dtype=np.int32).max())


def _parse_int(digits: str) -> int | float:
    return int(digits) if len(digits) <= _MAX_EXACT_INT_CHARS else float(digits)


_DECODER = json.JSONDecoder(parse_int=_parse_int)   # one instance: json.loads(**kw) builds one per call
# The parse_int hook costs a Python call per integer (half the decode time of a message of token
# ids). A longer message without a run of digits that could be a longer integer (anywhere, strings
# included) is read by the plain decoder, whose integers are then exactly what the hook keeps. The
# runs are found on the raw bytes (UTF-8 puts no ASCII digit inside a multi-byte character):
# digits and "-" mapped to "0", the rest blanked, then one substring search for a run one longer
# than the hook keeps exact (a regular expression over the text costs more than the decoding it
# would save). A "-" that is not a sign only makes the run longer: it can find a run where there
# is no long integer (then the slower, equally exact, path decides), never miss one; a sign and 19
# digits, or 20 digits, are both 20 in a row.
_PLAIN_DECODER = json.JSONDecoder()
_PLAIN_FROM = 512     # bytes; below, few integers, and the scan would cost more than it saves
_DIGITS = bytes(48 if 48 <= i <= 57 or i == 45 else 32 for i in range(256))
_LONG_RUN = b"0" * (_MAX_EXACT_INT_CHARS + 1)


def _long_digit_runs(value: bytes | str) -> bool:
    mapped = (value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)).translate(_DIGITS)
    return _LONG_RUN in mapped


def _decoder_for(value: bytes | str) -> json.JSONDecoder:
    if len(value) < _PLAIN_FROM:
        return _DECODER
    return _DECODER if _long_digit_runs(value) else _PLAIN_DECODER


# orjson, when installed, parses a message ~5x faster than the standard decoder. It is used only
# where both give the same object: without a run of digits that could be a longer integer (it keeps
# 20-digit integers exact, the decoder above makes them doubles), and only for what it accepts;
# whatever it refuses (NaN, Infinity, 1e400, lone surrogates, anything not JSON) the standard
# decoder decides, so what is accepted, the objects and every error message stay the same.
try:
    import orjson as _orjson
except ImportError:   # pragma: no cover - the standard decoder alone
    _orjson = None


def _loads(value: bytes | str, text: str) -> tuple[Any, bool]:
    """The parsed message, and whether orjson parsed it."""
    if _orjson is not None and not _long_digit_runs(value):
        try:
            return _orjson.loads(text), True
        except (ValueError, TypeError):
            pass
    return _decoder_for(value).decode(text), False


def parse_json(value: bytes | str | None, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """The message as a JSON object: at most ``max_bytes`` (``ingest.max_message_bytes``), UTF-8,
    nesting bounded before parsing, long integers as doubles. Its values are checked by
    :func:`check_values`, not here."""
    return _parse(value, max_bytes)[0]


def _parse(value: bytes | str | None, max_bytes: int) -> tuple[dict[str, Any], bool]:
    """:func:`parse_json`'s object, and whether :func:`check_values` is already known to pass on
    it: bytes without a backslash, which orjson parsed. No string in it can then hold a NUL or a
    lone surrogate (either needs an escape; orjson refuses raw control characters, and strict
    UTF-8 refuses encoded surrogates), and every number is finite (orjson refuses NaN, Infinity
    and numbers beyond a double's range). The checks' walk over every value was a fifth of
    decoding a tabular message."""
    if value is None:
        raise MessageError("empty", "message has no value (tombstone)")
    if len(value) > max_bytes:
        raise MessageError("too_large", f"message is {len(value)} bytes, limit {max_bytes}")
    raw = None if isinstance(value, str) else bytes(value)
    text = value if raw is None else _utf8(raw)
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        # checked before json.loads, whose recursion a few thousand brackets exhaust
        raise MessageError("too_deep", f"arrays/objects nest {depth} deep, limit {MAX_DEPTH}")
    try:
        obj, by_orjson = _loads(value, text)
    except ValueError as exc:
        raise MessageError("invalid_json", f"not JSON ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(obj, dict):
        raise MessageError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    return obj, by_orjson and raw is not None and b"\\" not in raw


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
_NUMBER_TYPES = frozenset((int, float))
_NUMBER_OR_BOOL = frozenset((int, float, bool))
_F32_MAX = float(np.finfo(np.float32).max)
_FAST_LEN = 64        # flat float arrays up to this length are checked in plain Python (faster there)


def _flat_float32(value: list[Any]) -> np.ndarray | None:
    """The hot path (tabular traffic): a flat array of finite numbers within float32's range, as
    float32; None for anything else (the general path then finds and names the problem)."""
    if not value or not set(map(type, value)) <= _NUMBER_TYPES:
        return None
    if len(value) <= _FAST_LEN:
        if not math.isfinite(sum(value)) or max(value) > _F32_MAX or min(value) < -_F32_MAX:
            return None
        return np.array(value, dtype=np.float32)
    wide = np.array(value, dtype=np.float64)
    if not np.maximum.reduce(np.abs(wide)) <= _F32_MAX:     # False for NaN too
        return None
    return wide.astype(np.float32)


def _require_numbers(value: list[Any], where: str, allow_bool: bool = False) -> None:
    """Every leaf of a (nested) array is a JSON number: not a string like "1.5", not a boolean
    (unless the input is declared bool)."""
    ok = _NUMBER_OR_BOOL if allow_bool else _NUMBER_TYPES
    stack = [(value, where)]
    while stack:
        v, w = stack.pop()
        if set(map(type, v)) <= ok:   # the common case, at C speed
            continue
        for i, x in enumerate(v):
            t = type(x)
            if t in ok:
                continue
            if t is list:
                stack.append((x, f"{w}[{i}]"))
                continue
            want = "JSON numbers or booleans" if allow_bool else "JSON numbers"
            raise MessageError("bad_inputs", f"{w}[{i}] is {_kind(x)}: inputs must be {want}")


def _array(value: list[Any], where: str, spec: TensorSpec) -> np.ndarray:
    """A (nested) JSON array as an ndarray: numbers only, not ragged, finite. Floats for a
    float input; integers kept exact for an integer one (:func:`_cast` then checks them)."""
    _require_numbers(value, where, allow_bool=spec.dtype == "bool")
    try:
        arr = np.array(value, dtype=np.float64 if not spec.is_integer else None)
    except (TypeError, ValueError, OverflowError):
        raise MessageError("bad_inputs", f"'{where}' is ragged (nested arrays of different lengths)") from None
    if arr.dtype.kind not in "fiub":      # integers beyond 64 bits mixed with others
        raise MessageError("bad_inputs", f"'{where}' holds numbers that do not fit one numeric type")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise MessageError("non_finite", f"'{where}' contains NaN, Infinity or a number beyond ±1.8e308")
    return arr


def _cast(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    try:
        return cast(arr, spec)
    except ValueError as exc:
        raise MessageError("bad_dtype", str(exc)) from None


def _named_features(value: dict[str, Any], shape: PairShape, spec: TensorSpec) -> np.ndarray:
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
    arr = _array([value[f] for f in shape.features], "inputs", spec)
    if arr.size != spec_size(spec):
        raise MessageError("shape_mismatch", f"named features: {arr.size} features, model {shape.name!r} "
                                             f"expects {list(spec.shape)}")
    return _cast(arr.reshape(spec.shape), spec)


def spec_size(spec: TensorSpec) -> int:
    return math.prod(spec.shape)  # type: ignore[arg-type]


def _single(value: Any, shape: PairShape, spec: TensorSpec) -> np.ndarray:
    """The legacy forms of a pair with one fixed-shape input: a flat array (reshaped to the
    input's shape), a nested array of exactly that shape, named features (ordered by the pair's
    feature list), or one named tensor (any name; a leading batch dimension of 1 allowed)."""
    if isinstance(value, list):
        if spec.dtype == "float32" and len(value) == spec_size(spec):
            fast = _flat_float32(value)
            if fast is not None:
                return fast.reshape(spec.shape)
        arr = _array(value, "inputs", spec)
        if arr.size != spec_size(spec) or (arr.ndim > 1 and arr.shape != spec.shape):
            raise MessageError("shape_mismatch",
                               f"'inputs' has shape {list(arr.shape)}, model {shape.name!r} expects {list(spec.shape)}")
        return _cast(arr.reshape(spec.shape), spec)
    if not isinstance(value, dict):
        raise MessageError("bad_inputs", f"'inputs' must be an array or an object, got {_kind(value)}")
    if not value:
        raise MessageError("bad_inputs", "'inputs' object is empty")
    if not any(isinstance(v, list) for v in value.values()):
        return _named_features(value, shape, spec)
    if len(value) != 1:
        raise MessageError("shape_mismatch", f"'inputs' has {len(value)} named tensors "
                                             f"{[k[:40] for k in sorted(value)[:5]]}; model {shape.name!r} takes one input")
    (name, tensor), = value.items()
    if not isinstance(tensor, list):
        raise MessageError("bad_inputs", f"'inputs.{name[:40]}' is {_kind(tensor)}: a tensor is an array")
    arr = _array(tensor, f"inputs.{name[:40]}", spec)
    if arr.shape != spec.shape and arr.shape != (1, *spec.shape):
        raise MessageError("shape_mismatch",
                           f"'inputs.{name[:40]}' has shape {list(arr.shape)}, model expects {list(spec.shape)}")
    return _cast(arr.reshape(spec.shape), spec)


def _tensor(value: Any, spec: TensorSpec, pair: str) -> np.ndarray:
    """One named tensor of a typed pair: rank and fixed dimensions checked (a leading batch
    dimension of 1 allowed), dynamic ones non-empty, cast to the declared dtype."""
    where = f"inputs.{spec.name[:40]}"
    if not isinstance(value, list):
        if spec.shape or type(value) not in _NUMBER_OR_BOOL:
            raise MessageError("bad_inputs", f"'{where}' is {_kind(value)}: a tensor is an array "
                                             f"({spec.describe()})")
        arr = _array([value], where, spec).reshape(())     # a rank-0 input may be sent as a bare number
    else:
        arr = _array(value, where, spec)
    if arr.ndim == len(spec.shape) + 1 and arr.shape[0] == 1:
        arr = arr[0]
    why = spec.misfit(arr.shape)
    if why is not None:
        raise MessageError("shape_mismatch", f"{why} (model {pair!r} takes {spec.describe()})")
    return _cast(arr, spec)


def _named_tensors(value: Any, sig: Signature, pair: str) -> Row:
    if isinstance(value, list) and len(sig.inputs) == 1:
        value = {sig.inputs[0].name: value}
    if not isinstance(value, dict):
        raise MessageError("bad_inputs", f"'inputs' must be an object of named tensors, got {_kind(value)}; "
                                         f"model {pair!r} takes {sig.describe()}")
    names = sig.names
    unknown = [k for k in value if k not in names]
    if unknown:
        raise MessageError("unknown_input", f"'inputs' has unknown input(s) {[k[:40] for k in unknown[:5]]}"
                                            f"{'...' if len(unknown) > 5 else ''}; model {pair!r} takes {sig.describe()}")
    missing = [n for n in names if n not in value]
    if missing:
        raise MessageError("missing_input", f"input(s) {missing[:5]} missing from 'inputs'; "
                                            f"model {pair!r} takes {sig.describe()}")
    return {spec.name: _tensor(value[spec.name], spec, pair) for spec in sig.inputs}


def decode_inputs(value: Any, shape: PairShape) -> Row:
    """The message's ``inputs`` as a row (input name -> array of the declared dtype, no batch
    dimension): the legacy forms for a pair with one fixed-shape input, named tensors otherwise."""
    spec = shape.single_spec
    if spec is not None:
        return {spec.name: _single(value, shape, spec)}
    return _named_tensors(value, shape.signature, shape.name)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise MessageError("bad_text", f"'text' must be a string, got {_kind(value)}")
    if not value:
        raise MessageError("bad_text", "'text' is empty")
    if len(value) > MAX_TEXT_LEN:
        raise MessageError("bad_text", f"'text' is {len(value)} characters, limit {MAX_TEXT_LEN}")
    return value


def text_rows(shape: PairShape, texts: Sequence[str]) -> list[Row]:
    """The model inputs of raw texts, by the pair's tokenizer: cast to the dtypes the models
    declare, and padded (with the tokenizer's pad id) where an input has a fixed length."""
    rows = shape.text.encode(texts)
    sig = shape.signature
    if sig is None:
        return rows
    pads = shape.text.pads
    out = []
    for row in rows:
        fitted: Row = {}
        for name, arr in row.items():
            spec = sig.spec(name) if name in sig.names else None
            if spec is None:
                fitted[name] = arr
                continue
            if len(spec.shape) == 1 and spec.shape[0] is not None and arr.shape[0] < spec.shape[0]:
                arr = np.concatenate([arr, np.full(spec.shape[0] - arr.shape[0], pads[name], dtype=arr.dtype)])
            why = spec.misfit(arr.shape)
            if why is not None:
                raise MessageError("shape_mismatch", f"the tokenizer's {why}")
            fitted[name] = _cast(arr, spec)
        out.append(fitted)
    return out


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


def _inputs_or_text(obj: Mapping[str, Any], shape: PairShape, encode_text: bool) -> tuple[Row, str | None]:
    """The message's inputs, from ``inputs`` or, for a pair with a tokenizer, from ``text``
    (``encode_text=False``: the text alone, its inputs left for the caller to make in a batch)."""
    if obj.get("text") is None:
        if "inputs" not in obj:
            raise MessageError("missing_inputs", "field 'inputs' is required" if shape.text is None
                               else "field 'inputs' or 'text' is required")
        return decode_inputs(obj["inputs"], shape), None
    if shape.text is None:
        raise MessageError("text_not_supported", f"'text' given, but pair {shape.name!r} has no tokenizer "
                                                 f"(pairs.{shape.name[:40]}.text in the config): send 'inputs'")
    if "inputs" in obj:
        raise MessageError("text_and_inputs", "'text' and 'inputs' are both given: send one of them")
    text = _text(obj["text"])
    return (text_rows(shape, [text])[0] if encode_text else {}), text


# -- the id before the full decode ------------------------------------------------------------------
# The sampling decision needs only (pair, id): the daemon takes it before decoding a message, and
# decodes only the messages inside the sample. The quick path reads the "id" (a plain string
# without escapes, or an integer of at most 19 characters) and the "model" (a plain string) of an
# object, in any order and wherever they are: a raw '"id"' or '"model"' is always a key or a whole
# string value (a quote inside a JSON string is escaped), so when each occurs at most once and is
# followed by ':', it is the message's own field, or one nested in it while the message has none
# (which the full decoder refuses: no id; no model with several pairs). Most producers write "id"
# first, and the batch form reads those first (``_QUICK``). Anything else, or any doubt, returns
# None and the full decoder decides. Doubts: a second '"id"' or (with several pairs) '"model"'
# anywhere (json keeps the last of repeated keys), a "\u00" escape anywhere (it could spell a key
# "id"), a message over the size limit or not UTF-8 (the full decoder quarantines those). With one
# pair the "model" is not read: a valid message can only name that pair, and a message naming
# another, which the decoder refuses, is sampled like any other malformed message (decoded, and
# quarantined, only inside the rate). Not scanning the batch for it was 3% of ingest at rate 0.1.
_WS = rb"[ \t\n\r]*"
_ID_VALUE = rb'(?:"([^"\\\x00-\x1f]*)"|(-?(?:0|[1-9][0-9]*))(?=' + _WS + rb"[,}]))"
_QUICK = re.compile(rb"\A" + _WS + rb"\{" + _WS + rb'"id"' + _WS + rb":" + _WS + _ID_VALUE + _WS
                    + rb'(?:,' + _WS + rb'"model"' + _WS + rb":" + _WS + rb'"([^"\\\x00-\x1f]*)")?')
_OPEN = re.compile(rb"\A" + _WS + rb"\{")
_ID = re.compile(rb'"id"' + _WS + rb":" + _WS + _ID_VALUE)
_MODEL = re.compile(rb'"model"' + _WS + rb":" + _WS + rb'"([^"\\\x00-\x1f]*)"')


def quick_id(value: bytes | None, pairs: Mapping[str, PairShape],
             max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[str, str] | None:
    """``(pair, id)`` as :func:`decode_traffic` would give them for ``value``, read without
    parsing it, or None when that is not certain (then decode it). When the message is not
    valid, what it holds is not checked: a message that the full decoder would refuse may get a
    pair and an id here."""
    if value is None or len(value) > max_bytes or type(value) is not bytes:
        return None
    if _nul_range_escape(value) or value.count(b'"id"') != 1:
        return None
    m = _QUICK.match(value)
    if m is not None:
        text, digits, model = m.groups()
    else:   # "id" not first: anywhere in the object
        m = _ID.search(value) if _OPEN.match(value) is not None else None
        if m is None:
            return None
        (text, digits), model = m.groups(), None
    mid = _quick_mid(text, digits)
    if mid is None:
        return None
    pair = _quick_pair(value, model, pairs)
    return None if pair is None else (pair, mid)


def quick_ids(values: Sequence[Any], pairs: Mapping[str, PairShape],
              max_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, str] | None]:
    """:func:`quick_id` of each of ``values``, the same answers, for a polled batch: the doubts
    that need a scan of a whole message (a second '"id"', a "\\u00" escape) are
    looked for once in the batch joined (by a NUL byte, which none of those contain, so none is
    found across two messages), and per message only where the batch has some."""
    if not values or any(type(v) is not bytes for v in values) or max(map(len, values)) > max_bytes:
        return [quick_id(v, pairs, max_bytes) for v in values]
    joined = b"\x00".join(values)
    if len(pairs) != 1 or _nul_range_escape(joined):   # with one pair, "model" cannot change it
        return [quick_id(v, pairs, max_bytes) for v in values]
    pair = next(iter(pairs))
    once = joined.count(b'"id"') == len(values)    # with one match per message below: exactly one each
    matches = list(map(_QUICK.match, values))
    if once and None not in matches:
        mids = _plain_mids([m.group(1) for m in matches])
        if mids is not None:
            return [(pair, mid) for mid in mids]
    out: list[tuple[str, str] | None] = []
    for v, m in zip(values, matches):
        if m is None:   # "id" not first: the message on its own
            out.append(quick_id(v, pairs, max_bytes))
            continue
        if not once and v.count(b'"id"') != 1:
            out.append(None)
            continue
        mid = _quick_mid(m.group(1), m.group(2))
        out.append(None if mid is None else (pair, mid))
    if once and None in out:   # a message without a match may hold two '"id"' and a matched one none
        return [quick_id(v, pairs, max_bytes) for v in values]
    return out


def _nul_range_escape(data: bytes) -> bool:
    """Whether ``data`` holds a "\\u00" escape. A backslash is looked for first: a search for one
    byte is a memchr, ~80x faster on a batch of numeric messages than the search for "\\u00",
    whose skip table keys on its last byte, "0", a byte found everywhere in numbers (that search
    was a third of reading a batch's ids). Numeric messages hold no backslash at all."""
    return b"\\" in data and b"\\u00" in data


def _plain_mids(texts: list[bytes | None]) -> list[str] | None:
    """The ids of a batch whose every id is a string (``_quick_mid``'s answers), decoded in one
    call: None when one is not (an integer, empty, too long or not UTF-8). No id the quick
    path reads holds a NUL byte, so the joined ids split back exactly."""
    if None in texts or min(map(len, texts)) == 0 or max(map(len, texts)) > MAX_ID_LEN:
        return None
    try:
        return b"\x00".join(texts).decode("utf-8").split("\x00")   # type: ignore[arg-type]
    except UnicodeDecodeError:
        return None


def _quick_mid(text: bytes | None, digits: bytes | None) -> str | None:
    """The id the quick path read: an integer of at most 19 characters as its decimal text, a
    string if UTF-8, not empty and not too long; None when the full decoder must decide."""
    if digits is not None:
        return str(int(digits)) if len(digits) <= _MAX_EXACT_INT_CHARS else None
    try:
        mid = text.decode("utf-8")   # type: ignore[union-attr]
    except UnicodeDecodeError:
        return None
    return mid if mid and len(mid) <= MAX_ID_LEN else None


def key_id(key: bytes | None) -> str | None:
    """The record key as a message id (``kafka.id_from: key``), or None when it cannot be one
    (absent, not UTF-8, empty, longer than ``MAX_ID_LEN``, a NUL or a surrogate in it)."""
    if not key or len(key) > MAX_ID_LEN * 4 or b"\x00" in key:
        return None
    try:
        mid = bytes(key).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return mid if len(mid) <= MAX_ID_LEN else None


def quick_pair(value: bytes | None, pairs: Mapping[str, PairShape]) -> str | None:
    """The pair of a message whose id comes from elsewhere (the record key), or None."""
    if type(value) is not bytes or _nul_range_escape(value):
        return None
    m = _QUICK.match(value)
    return _quick_pair(value, None if m is None else m.group(3), pairs)


def _quick_pair(value: bytes, model: bytes | None, pairs: Mapping[str, PairShape]) -> str | None:
    """The pair of ``value``: the only pair when there is one (a valid message's "model", if any,
    can only name it: the decoder refuses any other), else ``model`` (read right after the id),
    else its one "model" wherever it is; None when not certain."""
    if len(pairs) == 1:
        return next(iter(pairs))
    if value.count(b'"model"') != 1:   # none (several pairs: the decoder refuses it) or a repeat: it decides
        return None
    if model is None:
        m = _MODEL.search(value)
        if m is None:
            return None
        model = m.group(1)
    try:
        name = model.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name if name in pairs else None


def decode_traffic(value: bytes | str | None, pairs: Mapping[str, PairShape], *,
                   timestamp_ms: int | None = None, max_bytes: int = MAX_MESSAGE_BYTES,
                   encode_text: bool = True) -> TrafficMessage:
    """One traffic message, decoded and checked (``MessageError`` with a reason otherwise).
    ``encode_text=False`` leaves a text message's ``inputs`` empty: ``daemon.read_batch`` tokenizes
    the texts it keeps together (``text_rows``), which is faster than one at a time."""
    obj, checked = _parse(value, max_bytes)
    if not checked:
        check_values(obj)
    return _traffic(obj, pairs, timestamp_ms, encode_text)


def _traffic(obj: dict[str, Any], pairs: Mapping[str, PairShape], timestamp_ms: int | None, encode_text: bool,
             inputs: Row | None = None, stored: bytes | None = None, pair: str | None = None, *,
             seen: "_Seen | None" = None) -> TrafficMessage:
    """The message of a parsed object whose values are checked; ``inputs``: already decoded
    (``stored``: in their stored form; ``pair``: the pair :func:`_pair_of` gave it); ``seen``:
    the timestamps and attributes decoded already in the batch, shared (``_Seen``)."""
    mid = _id(obj)
    if pair is None:
        pair = _pair_of(obj, pairs)
    shape = pairs[pair]
    text = None
    if inputs is None:
        inputs, text = _inputs_or_text(obj, shape, encode_text)
    if seen is None:
        attributes, ts = decode_attributes(obj.get("attributes")), parse_ts(obj.get("ts"), timestamp_ms)
    else:
        attributes, ts = seen.attributes(obj.get("attributes")), seen.ts(obj.get("ts"), timestamp_ms)
    label = normalise_label(obj["label"], shape.classes) if obj.get("label") is not None else None
    extra = {} if obj.keys() <= KNOWN_KEYS else {k: v for k, v in obj.items() if k not in KNOWN_KEYS}
    return TrafficMessage(mid, pair, ts, inputs, attributes, label, extra, text, stored)


class _Seen:
    """What a batch's messages share, decoded once per distinct value: timestamps (a busy
    topic's record timestamps repeat, in milliseconds) and attributes (a few slices:
    ``{"region": "eu"}``). The messages then hold the same objects, which the store writes once
    each too (``repository._insert_samples``). Both are immutable in use: nothing changes a
    decoded message's attributes. Only what decodes the same every time is kept: not the time of
    a message without any (now), nor attributes with a value that is not a string (``1`` and
    ``True`` are equal keys with different answers)."""

    __slots__ = ("_ts", "_attrs")

    def __init__(self) -> None:
        self._ts: dict[tuple[type, Any, int | None], dt.datetime] = {}
        self._attrs: dict[tuple[tuple[str, Any], ...], dict[str, str]] = {}

    def ts(self, value: Any, fallback_ms: int | None) -> dt.datetime:
        if value is None and (type(fallback_ms) is not int or fallback_ms < 0):
            return parse_ts(value, fallback_ms)
        key = (type(value), value, fallback_ms if value is None else None)
        try:
            got = self._ts.get(key)
        except TypeError:    # not hashable: refused below
            return parse_ts(value, fallback_ms)
        if got is None:
            got = self._ts[key] = parse_ts(value, fallback_ms)
        return got

    def attributes(self, value: Any) -> dict[str, str]:
        if type(value) is not dict or not value:
            return decode_attributes(value)
        try:
            key = tuple(value.items())
            got = self._attrs.get(key)
        except TypeError:    # a list or an object among the values: refused below
            return decode_attributes(value)
        if got is None:
            got = decode_attributes(value)
            if all(type(v) is str for v in value.values()):
                self._attrs[key] = got
        return got


def decode_traffic_many(values: Sequence[Any], timestamps_ms: Sequence[int | None], pairs: Mapping[str, PairShape],
                        max_bytes: int = MAX_MESSAGE_BYTES) -> list[TrafficMessage | Exception]:
    """``decode_traffic(v, pairs, timestamp_ms=ts, max_bytes=max_bytes, encode_text=False)`` of
    each of a polled batch, in order: the message, or the exception it raises. The same answers,
    at less cost per message, where a message allows it (``_plain_objects``): the scans for a
    backslash and for a long run of digits are made once over the batch, orjson parses the bytes
    as they are (no text made first), and the flat float32 inputs of a pair go to numpy as one
    array (``_flat_float32_rows``), their stored form made from it in bulk too
    (``TrafficMessage.stored``), and equal timestamps and attributes are decoded once per batch
    (``_Seen``). A message that does not take that path, or fails on it, is
    decoded on its own by :func:`decode_traffic`, which then decides its answer and its error."""
    objs = _plain_objects(values, max_bytes)
    out: list[Any] = [None] * len(values)
    flat: dict[str, tuple[list[int], list[list[Any]]]] = {}   # pair -> positions and inputs for numpy
    for i, obj in enumerate(objs):
        if obj is None:
            continue
        try:
            pair = _flat_pair(obj, pairs)
        except Exception:   # noqa: BLE001 - decided again below, on the message's own
            objs[i] = None
            continue
        if pair is not None:
            got = flat.setdefault(pair, ([], []))
            got[0].append(i)
            got[1].append(obj["inputs"])
    arrays: dict[int, tuple[Row, bytes | None, str]] = {}   # position -> its inputs, their stored form, its pair
    for pair, (idx, lists) in flat.items():
        spec = pairs[pair].single_spec
        rows, batch = _flat_float32_rows(lists, spec)   # type: ignore[arg-type]
        stored = encode_rows(spec.name, batch) if batch is not None else [None] * len(rows)   # type: ignore[union-attr]
        for i, arr, blob in zip(idx, rows, stored):
            if arr is None:
                objs[i] = None
            else:
                arrays[i] = ({spec.name: arr}, blob, pair)   # type: ignore[union-attr]
    seen = _Seen()
    for i, obj in enumerate(objs):
        if obj is None:
            continue
        got_inputs = arrays.get(i)
        try:
            if got_inputs is None:
                out[i] = _traffic(obj, pairs, timestamps_ms[i], False, seen=seen)
            else:
                out[i] = _traffic(obj, pairs, timestamps_ms[i], False, *got_inputs, seen=seen)
        except Exception:   # noqa: BLE001 - decided again below, on the message's own
            objs[i] = None
    for i, obj in enumerate(objs):
        if obj is None:
            try:
                out[i] = decode_traffic(values[i], pairs, timestamp_ms=timestamps_ms[i], max_bytes=max_bytes,
                                        encode_text=False)
            except Exception as exc:   # noqa: BLE001 - the caller quarantines it
                out[i] = exc
    return out


def _plain_objects(values: Sequence[Any], max_bytes: int) -> list[dict[str, Any] | None]:
    """Each message parsed by orjson, as :func:`_parse` would give it with its values known to be
    checked, or None where that is not certain: not bytes, over ``max_bytes``, a backslash or a
    run of digits that could be a long integer in it (looked for in the batch joined by a NUL,
    which maps to neither, so none is found across two messages, then per message only where the
    batch has one), more brackets than ``MAX_DEPTH`` (its depth is then counted), or what orjson
    refuses or is not an object. orjson reads the bytes as strictly as ``_utf8`` and its text
    would: it refuses invalid UTF-8, encoded surrogates, a byte order mark and NUL bytes."""
    if _orjson is None or not values or any(type(v) is not bytes for v in values):
        return [None] * len(values)
    joined = b"\x00".join(values)
    clean = b"\\" not in joined and not _long_digit_runs(joined)
    out: list[dict[str, Any] | None] = []
    for v in values:
        obj = None
        if (len(v) <= max_bytes and (clean or (b"\\" not in v and not _long_digit_runs(v)))
                and v.count(b"[") + v.count(b"{") <= MAX_DEPTH):
            try:
                obj = _orjson.loads(v)
            except ValueError:
                pass
        out.append(obj if type(obj) is dict else None)
    return out


def _flat_pair(obj: dict[str, Any], pairs: Mapping[str, PairShape]) -> str | None:
    """The pair of a message whose inputs :func:`_single` would read as a flat float32 array (a
    list of its input's size, no text), else None."""
    value = obj.get("inputs")
    if type(value) is not list or obj.get("text") is not None:
        return None
    pair = _pair_of(obj, pairs)
    spec = pairs[pair].single_spec
    return pair if spec is not None and spec.dtype == "float32" and len(value) == spec_size(spec) else None


def _flat_float32_rows(lists: list[list[Any]], spec: TensorSpec) -> tuple[list[np.ndarray | None], np.ndarray | None]:
    """:func:`_flat_float32` of each of ``lists`` (all of ``spec``'s size), reshaped to
    ``spec.shape``, made by numpy in one call when every value is a number: the same arrays (the
    same conversion per length: float32 from each value up to ``_FAST_LEN``, through float64
    beyond); None where that function gives None (a value beyond float32's range, or not a
    number), or where a value is at float32's largest magnitude (it decides those). Also the
    batch's array whose rows they are (None when they were made one by one)."""
    if not set(map(type, chain.from_iterable(lists))) <= _NUMBER_TYPES:
        return [None if (a := _flat_float32(v)) is None else a.reshape(spec.shape) for v in lists], None
    with np.errstate(over="ignore"):
        if len(lists[0]) <= _FAST_LEN:
            arr = np.array(lists, dtype=np.float32)
            ok = np.abs(arr).max(axis=1) < _F32_MAX      # inf (beyond the range) and the largest: decided per row
        else:
            wide = np.array(lists, dtype=np.float64)
            ok = np.abs(wide).max(axis=1) <= _F32_MAX
            arr = wide.astype(np.float32)
    rows = arr.reshape(len(lists), *spec.shape)
    return [rows[i] if good else None for i, good in enumerate(ok.tolist())], rows


def decode_label(value: bytes | str | None, pairs: Mapping[str, PairShape],
                 max_bytes: int = MAX_MESSAGE_BYTES) -> LabelMessage:
    obj, checked = _parse(value, max_bytes)
    if not checked:
        check_values(obj, skip=())
    mid = _id(obj)
    if obj.get("label") is None:
        raise MessageError("bad_label", "labels message needs 'label'")
    model = obj.get("model")
    classes = pairs[model].classes if isinstance(model, str) and model in pairs else (
        next(iter(pairs.values())).classes if len(pairs) == 1 else None)
    return LabelMessage(mid, normalise_label(obj["label"], classes))

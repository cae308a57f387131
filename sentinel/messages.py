"""The traffic message format (DESIGN.md), decoded and validated.

A message that does not parse or does not fit its model's input shape raises ``MessageError`` with
a short ``reason`` code; the daemon quarantines it with that reason and carries on.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import MessageError

MAX_MESSAGE_BYTES = 1_000_000
MAX_ID_LEN = 256
KNOWN_KEYS = {"id", "ts", "model", "inputs", "attributes", "label"}


@dataclass(frozen=True)
class PairShape:
    """What a pair's models accept: the per-sample input shape and, for named features, their order."""
    name: str
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    features: tuple[str, ...] | None = None

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


def parse_json(value: bytes | str | None) -> dict[str, Any]:
    if value is None:
        raise MessageError("empty", "message has no value (tombstone)")
    if len(value) > MAX_MESSAGE_BYTES:
        raise MessageError("too_large", f"message is {len(value)} bytes, limit {MAX_MESSAGE_BYTES}")
    try:
        obj = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MessageError("invalid_json", f"not UTF-8 JSON ({str(exc)[:120]})") from None
    if not isinstance(obj, dict):
        raise MessageError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _id(obj: Mapping[str, Any]) -> str:
    if "id" not in obj:
        raise MessageError("missing_id", "field 'id' is required")
    mid = obj["id"]
    if isinstance(mid, bool) or not isinstance(mid, (str, int)):
        raise MessageError("bad_id", f"'id' must be a string, got {type(mid).__name__}")
    mid = str(mid)
    if not mid or len(mid) > MAX_ID_LEN:
        raise MessageError("bad_id", f"'id' must be 1..{MAX_ID_LEN} characters")
    return mid


def parse_ts(value: Any, fallback_ms: int | None) -> dt.datetime:
    if value is None:
        if fallback_ms is not None and fallback_ms >= 0:
            return dt.datetime.fromtimestamp(fallback_ms / 1000, dt.timezone.utc)
        return dt.datetime.now(dt.timezone.utc)
    if isinstance(value, bool):
        raise MessageError("bad_ts", "'ts' must be ISO 8601 or epoch milliseconds")
    if isinstance(value, (int, float)):
        try:
            return dt.datetime.fromtimestamp(float(value) / 1000, dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise MessageError("bad_ts", f"'ts' {value!r} is out of range") from None
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise MessageError("bad_ts", f"'ts' {value[:40]!r} is not ISO 8601") from None
        return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)
    raise MessageError("bad_ts", "'ts' must be ISO 8601 or epoch milliseconds")


def _numbers(value: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise MessageError("bad_inputs", f"{where} must be numbers (or nested arrays of numbers)") from None
    if arr.dtype == object:
        raise MessageError("bad_inputs", f"{where} is ragged or not numeric")
    if not np.all(np.isfinite(arr)):
        raise MessageError("non_finite", f"{where} contains NaN or infinity")
    return arr


def decode_inputs(value: Any, shape: PairShape) -> list[float]:
    """Flat array, named features (ordered by the pair's feature list) or named tensors."""
    if isinstance(value, list):
        arr = _numbers(value, "'inputs'")
        if arr.size != shape.size or (arr.ndim > 1 and tuple(arr.shape) != shape.input_shape):
            raise MessageError("shape_mismatch",
                               f"'inputs' has shape {list(arr.shape)}, model {shape.name!r} expects {list(shape.input_shape)}")
        return arr.reshape(-1).tolist()
    if isinstance(value, dict):
        if not value:
            raise MessageError("bad_inputs", "'inputs' object is empty")
        scalar = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values())
        if scalar:
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
                    parts.append(f"unknown {unknown[:5]}{'...' if len(unknown) > 5 else ''}")
                raise MessageError("shape_mismatch", "named features: " + ", ".join(parts))
            return _numbers([value[f] for f in shape.features], "'inputs'").tolist()
        # named tensors: the runners take one input tensor, so exactly one name is accepted
        if len(value) != 1:
            raise MessageError("shape_mismatch", f"'inputs' has {len(value)} named tensors {sorted(value)[:5]}; "
                                                 f"model {shape.name!r} takes one input")
        (name, tensor), = value.items()
        arr = _numbers(tensor, f"'inputs.{name}'")
        if tuple(arr.shape) != shape.input_shape and arr.shape != (1, *shape.input_shape):
            raise MessageError("shape_mismatch",
                               f"'inputs.{name}' has shape {list(arr.shape)}, model expects {list(shape.input_shape)}")
        return arr.reshape(-1).tolist()
    raise MessageError("bad_inputs", f"'inputs' must be an array or an object, got {type(value).__name__}")


def normalise_label(value: Any, classes: tuple[str, ...] | None) -> str:
    """Labels are stored as class names; an integer is an index into the pair's classes."""
    if isinstance(value, bool) or value is None:
        raise MessageError("bad_label", f"'label' {value!r} is not a class name or index")
    if isinstance(value, (int, float)) and float(value).is_integer():
        idx = int(value)
        if classes is not None:
            if not 0 <= idx < len(classes):
                raise MessageError("bad_label", f"'label' index {idx} is outside 0..{len(classes) - 1}")
            return classes[idx]
        return str(idx)
    if isinstance(value, str) and value:
        if classes is not None and value not in classes:
            if value.isdigit() and int(value) < len(classes):
                return classes[int(value)]
            raise MessageError("bad_label", f"'label' {value[:40]!r} is not one of {list(classes)}")
        return value
    raise MessageError("bad_label", f"'label' {str(value)[:40]!r} is not a class name or index")


def decode_traffic(value: bytes | str | None, pairs: Mapping[str, PairShape], *,
                   timestamp_ms: int | None = None) -> TrafficMessage:
    obj = parse_json(value)
    mid = _id(obj)
    model = obj.get("model")
    if model is None:
        if len(pairs) != 1:
            raise MessageError("unknown_model", f"'model' is required when {len(pairs)} pairs are configured")
        pair = next(iter(pairs))
    elif not isinstance(model, str) or model not in pairs:
        raise MessageError("unknown_model", f"'model' {str(model)[:60]!r} is not a configured pair {sorted(pairs)}")
    else:
        pair = model
    shape = pairs[pair]
    if "inputs" not in obj:
        raise MessageError("missing_inputs", "field 'inputs' is required")
    inputs = decode_inputs(obj["inputs"], shape)
    attrs_raw = obj.get("attributes") or {}
    if not isinstance(attrs_raw, dict):
        raise MessageError("bad_attributes", "'attributes' must be an object of strings")
    attributes: dict[str, str] = {}
    for k, v in attrs_raw.items():
        if isinstance(v, (dict, list)) or v is None:
            raise MessageError("bad_attributes", f"'attributes.{k}' must be a string")
        attributes[str(k)] = str(v)
    label = normalise_label(obj["label"], shape.classes) if obj.get("label") is not None else None
    extra = {k: v for k, v in obj.items() if k not in KNOWN_KEYS}
    return TrafficMessage(mid, pair, parse_ts(obj.get("ts"), timestamp_ms), inputs, attributes, label, extra)


def decode_label(value: bytes | str | None, pairs: Mapping[str, PairShape]) -> LabelMessage:
    obj = parse_json(value)
    mid = _id(obj)
    if obj.get("label") is None:
        raise MessageError("bad_label", "labels message needs 'label'")
    model = obj.get("model")
    classes = pairs[model].classes if isinstance(model, str) and model in pairs else (
        next(iter(pairs.values())).classes if len(pairs) == 1 else None)
    return LabelMessage(mid, normalise_label(obj["label"], classes))


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None

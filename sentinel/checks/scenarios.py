"""Scenario suites: fixed, versioned data sets (edge cases, adversarial, routine) stored under
``checks/`` with their sha256, re-run through both models on every revalidation and judged by
their own checks (their pass criteria). A scenario is itself a check (type ``scenario``) whose
results are named ``scenario:<name>/<inner check>``."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..registry import PluginError
from ..tensors import Row, Signature, cast
from .base import build_check
from .data import Predict, ReferenceData, RunData, label_indices, model_feed, reference_data, stacked
from .params import CheckParamError, CheckParams, parse_params
from .result import CheckResult

KINDS = ("edge_cases", "adversarial", "routine")


@dataclass
class Rows:
    """Rows of a data-set file (JSON lines, one traffic message each, optional ``id``,
    ``attributes``, ``label``) whose model input is one of: ``inputs`` as a flat array of
    numbers (single-input models), ``inputs`` as an object of named tensors (nested arrays,
    several or typed inputs), or ``text`` (raw text, for pairs with a tokenizer). ``inputs`` is
    the stacked flat arrays when every line has one (else None); ``rows[i]`` line i's named
    tensors and ``texts[i]`` its text (None where the line has the other kinds); ``lines`` the
    line numbers, for messages."""
    path: str
    sha256: str
    ids: list[str]
    inputs: np.ndarray | None
    attributes: list[dict[str, str]]
    labels: list[str | None]
    rows: list[dict[str, np.ndarray] | None] = field(default_factory=list)
    texts: list[str | None] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    flat: list[list[float] | None] = field(default_factory=list)

    @property
    def legacy(self) -> bool:
        """Every line is a flat array (what any single-input model takes without a signature)."""
        return self.inputs is not None


class DataSetError(ValueError):
    """A data-set file is missing, altered (sha256) or malformed; ``key`` says where."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


def read_rows(path: str | Path, sha256: str) -> Rows:
    """Read and verify a data-set file (the sha256 of its bytes must be ``sha256``). Raises
    DataSetError naming the line or the hash."""
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise DataSetError("file", f"cannot read {p} ({exc.strerror or exc})") from None
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha256.lower():
        raise DataSetError("sha256", f"{p.name} has sha256 {actual}, the suite pins {sha256}: the data set changed; "
                                     f"re-pin it on purpose (and bump the suite's version)")
    out = Rows(str(p), actual, [], None, [], [])
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        raise DataSetError("file", f"{p.name} is not UTF-8 text") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            _read_line(out, p.name, lineno, line)
    if not out.ids:
        raise DataSetError("file", f"{p.name} has no rows")
    widths = {len(x) for x in out.flat if x is not None}
    if len(widths) > 1:
        first = next(x for x in out.flat if x is not None)
        bad = next(i for i, x in enumerate(out.flat) if x is not None and len(x) != len(first))
        raise DataSetError("file", f"{p.name} line {out.lines[bad]}: {len(out.flat[bad])} inputs, "
                                   f"earlier lines have {len(first)}")
    if all(x is not None for x in out.flat):
        out.inputs = np.asarray(out.flat, dtype=np.float32)
    return out


def _read_line(out: Rows, name: str, lineno: int, line: str) -> None:
    where = f"{name} line {lineno}"
    try:
        obj = json.loads(line)
    except RecursionError:
        raise DataSetError("file", f"{where}: arrays nest too deep") from None
    except ValueError as exc:
        raise DataSetError("file", f"{where}: not JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(obj, dict):
        raise DataSetError("file", f"{where}: not a message (a JSON object)")
    flat, row, text = None, None, obj.get("text")
    value = obj.get("inputs")
    if text is not None and not isinstance(text, str):
        raise DataSetError("file", f"{where}: 'text' must be a string")
    if isinstance(value, dict) and value:
        row = {}
        for key, tensor in value.items():
            try:
                arr = np.asarray(tensor) if isinstance(tensor, (list, int, float, bool)) else None
            except ValueError:      # ragged nested lists
                arr = None
            if arr is None or arr.dtype.kind not in "biuf" or arr.size == 0 or not np.all(np.isfinite(arr)):
                raise DataSetError("file", f"{where}: input {str(key)[:40]!r} is not a non-empty array of finite numbers")
            row[str(key)] = arr
    elif isinstance(value, list):
        try:
            flat = [float(v) for v in value]
            if not all(np.isfinite(flat)):
                raise ValueError("not finite")
        except (ValueError, TypeError):
            raise DataSetError("file", f"{where}: 'inputs' is not a flat array of finite numbers") from None
    elif text is None:
        raise DataSetError("file", f"{where}: a message needs 'inputs' (a flat array of numbers or an object of "
                                   f"named tensors) or 'text'")
    if text is not None and (row is not None or flat is not None):
        raise DataSetError("file", f"{where}: give 'inputs' or 'text', not both")
    out.ids.append(str(obj.get("id", lineno)))
    out.flat.append(flat)
    out.rows.append(row)
    out.texts.append(text)
    out.lines.append(lineno)
    out.attributes.append({str(k): str(v) for k, v in (obj.get("attributes") or {}).items()})
    out.labels.append(None if obj.get("label") is None else str(obj["label"]))


def model_rows(rows: Rows, signature: Signature, encode_texts: Callable[[list[str]], list[Row]] | None) -> list[Row]:
    """Every line of ``rows`` as a row the models take: named tensors checked against the
    signature (names, ranks, fixed dimensions) and cast to its dtypes, flat arrays given to the
    single input, texts encoded with the pair's tokenizer. Raises DataSetError naming the line."""
    name = Path(rows.path).name
    encoded = iter(())
    want = [t for t in rows.texts if t is not None]
    if want:
        if encode_texts is None:
            line = rows.lines[next(i for i, t in enumerate(rows.texts) if t is not None)]
            raise DataSetError("file", f"{name} line {line}: 'text' needs a pair with a tokenizer (text.tokenizer)")
        encoded = iter(encode_texts(want))
    out = []
    for i, lineno in enumerate(rows.lines):
        if rows.texts[i] is not None:
            out.append(next(encoded))
            continue
        try:
            out.append(_fit(rows.rows[i], rows.flat[i], signature))
        except ValueError as exc:
            raise DataSetError("file", f"{name} line {lineno}: {exc}") from None
    return out


def _fit(row: dict[str, np.ndarray] | None, flat: list[float] | None, signature: Signature) -> Row:
    if row is None:
        if not signature.is_single:
            raise ValueError(f"a flat 'inputs' array fits a model with one fixed-shape input; these models "
                             f"take {signature.describe()}")
        spec = signature.inputs[0]
        size = int(np.prod(signature.input_shape))
        if len(flat) != size:
            raise ValueError(f"{len(flat)} inputs, the models take {size}")
        return {spec.name: cast(np.asarray(flat).reshape(signature.input_shape), spec)}
    unknown, missing = sorted(set(row) - set(signature.names)), [n for n in signature.names if n not in row]
    if unknown:
        raise ValueError(f"unknown input {unknown[0]!r} (the models take {', '.join(signature.names)})")
    if missing:
        raise ValueError(f"missing input {missing[0]!r}")
    out = {}
    for spec in signature.inputs:
        problem = spec.misfit(tuple(row[spec.name].shape))
        if problem:
            raise ValueError(problem)
        out[spec.name] = cast(row[spec.name], spec)
    return out


def pinned_reference(rows: Rows, classes: Sequence[str], predict: Predict, *, signature: Signature | None = None,
                     encode_texts: Callable[[list[str]], list[Row]] | None = None,
                     input_shape: Sequence[int] | None = None, **fields: Any) -> ReferenceData:
    """The ReferenceData of a pinned data set: both current models on its rows (the legacy
    flat file without a signature: reshaped to ``input_shape``); ``fields`` are further
    ReferenceData fields (``text_stats``, ``embeddings``). Raises DataSetError naming the line."""
    source = {"kind": "pinned", "file": rows.path, "sha256": rows.sha256}
    if signature is None:
        if rows.inputs is None:
            raise DataSetError("file", f"{Path(rows.path).name}: named tensors or text need the models' signature")
        x = rows.inputs.reshape((len(rows.inputs), *(input_shape or rows.inputs.shape[1:])))
        return reference_data(source, x, rows.attributes, rows.labels, classes, predict, **fields)
    mrows = model_rows(rows, signature, encode_texts)
    return reference_data(source, model_feed(mrows, signature), rows.attributes, rows.labels, classes, predict,
                          rows=mrows, texts=list(rows.texts), **fields)


class ScenarioParams(CheckParams):
    file: str
    sha256: Any
    kind: str = "routine"
    checks: list[Any] = []
    description: str | None = None


class ScenarioCheck:
    """``params``: ``file`` (absolute path), ``sha256``, ``kind`` (one of KINDS), ``checks`` (a
    list of check specs: the scenario's pass criteria, evaluated on the scenario's rows with no
    reference window), optional ``description``."""
    type = "scenario"
    Params = ScenarioParams

    def __init__(self, spec: Any):
        from ..config import CheckSpec

        self.name = spec.check_name
        p = parse_params(self.Params, spec.params, check_type=self.type, check_name=self.name)
        self.kind = p["kind"]
        if self.kind not in KINDS:
            raise CheckParamError("kind", f"must be one of {', '.join(KINDS)}, got {self.kind!r}")
        try:
            self.rows = read_rows(p["file"], str(p["sha256"]))
        except DataSetError as exc:
            raise CheckParamError(exc.key, exc.problem) from None
        self.checks = []
        for i, c in enumerate(p["checks"] or []):
            try:
                self.checks.append(build_check(c if isinstance(c, CheckSpec) else CheckSpec(**c)))
            except CheckParamError as exc:
                raise CheckParamError(f"checks.{i}.params.{exc.key}", exc.problem) from None
            except PluginError as exc:
                raise CheckParamError(f"checks.{i}.type", str(exc)) from None
        self.record = {"file": self.rows.path, "sha256": self.rows.sha256, "kind": self.kind, "rows": len(self.rows.ids),
                       "description": p.get("description")}

    def evaluate(self, data: RunData) -> list[CheckResult]:
        if data.predict is None:
            return [CheckResult(self.name, "overall", "error", None, 0, "scenario needs the models (no predict function)")]
        if data.signature is None:
            return self._evaluate_flat(data)
        try:
            mrows = model_rows(self.rows, data.signature, data.encode_texts)
        except DataSetError as exc:
            return [CheckResult(self.name, "overall", "error", None, len(self.rows.ids), exc.problem)]
        pb, pc = data.predict(model_feed(mrows, data.signature))
        return self._judge(data, pb, pc, inputs=stacked(mrows, data.signature), rows=mrows,
                           texts=list(self.rows.texts))

    def _evaluate_flat(self, data: RunData) -> list[CheckResult]:
        """A legacy single-input pair (no signature): the file's flat arrays, reshaped."""
        x = self.rows.inputs
        if x is None:
            return [CheckResult(self.name, "overall", "error", None, len(self.rows.ids),
                                f"{Path(self.rows.path).name}: named tensors or text need the models' input "
                                f"signature, which this run does not have")]
        width = int(np.prod(data.inputs.shape[1:])) if data.inputs is not None else None
        if width is not None and x.shape[1] != width:
            return [CheckResult(self.name, "overall", "error", None, len(x),
                                f"{Path(self.rows.path).name}: rows have {x.shape[1]} inputs, the models take {width}")]
        x = x.reshape((len(x), *data.inputs.shape[1:])) if data.inputs is not None else x
        pb, pc = data.predict(x)
        return self._judge(data, pb, pc, inputs=x)

    def _judge(self, data: RunData, pb: np.ndarray, pc: np.ndarray, **typed: Any) -> list[CheckResult]:
        """The scenario's checks on its own rows (no reference window)."""
        sdata = RunData(pair=data.pair, classes=data.classes, critical_classes=data.critical_classes, baseline=pb,
                        candidate=pc, labels=label_indices(self.rows.labels, data.classes),
                        attributes=self.rows.attributes, latency={}, seed=data.seed, reference=None,
                        predict=data.predict, feature_names=data.feature_names, signature=data.signature,
                        modality=data.modality, image_layout=data.image_layout, encode_texts=data.encode_texts,
                        output_kind=data.output_kind, **typed)
        out = []
        for check in self.checks:
            for r in check.evaluate(sdata):
                r.check = f"{self.name}/{r.check}"
                r.type = r.type or check.type
                r.evidence = {**r.evidence, "scenario": self.record}
                out.append(r)
        return out

"""Scenario suites: fixed, versioned data sets (edge cases, adversarial, routine) stored under
``checks/`` with their sha256, re-run through both models on every revalidation and judged by
their own checks (their pass criteria). A scenario is itself a check (type ``scenario``) whose
results are named ``scenario:<name>/<inner check>``."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import PluginError
from .base import build_check
from .data import RunData, label_indices
from .params import CheckParamError, CheckParams, parse_params
from .result import CheckResult

KINDS = ("edge_cases", "adversarial", "routine")


@dataclass
class Rows:
    """Rows of a data-set file (JSON lines, one traffic message each: ``inputs`` a flat array of
    numbers, optional ``id``, ``attributes``, ``label``)."""
    path: str
    sha256: str
    ids: list[str]
    inputs: np.ndarray
    attributes: list[dict[str, str]]
    labels: list[str | None]


class DataSetError(ValueError):
    """A data-set file is missing, altered (sha256) or malformed; ``key`` says where."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


def read_rows(path: str | Path, sha256: str) -> Rows:
    """Read and verify a data-set file. Raises DataSetError naming the line or the hash."""
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise DataSetError("file", f"cannot read {p} ({exc.strerror or exc})") from None
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha256.lower():
        raise DataSetError("sha256", f"{p.name} has sha256 {actual}, the suite pins {sha256}: the data set changed; "
                                     f"re-pin it on purpose (and bump the suite's version)")
    ids, xs, attrs, labels = [], [], [], []
    for lineno, line in enumerate(blob.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            x = [float(v) for v in obj["inputs"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataSetError("file", f"{p.name} line {lineno}: not a message with a flat numeric 'inputs' array "
                                       f"({type(exc).__name__})") from None
        if xs and len(x) != len(xs[0]):
            raise DataSetError("file", f"{p.name} line {lineno}: {len(x)} inputs, earlier lines have {len(xs[0])}")
        ids.append(str(obj.get("id", lineno)))
        xs.append(x)
        attrs.append({str(k): str(v) for k, v in (obj.get("attributes") or {}).items()})
        labels.append(None if obj.get("label") is None else str(obj["label"]))
    if not xs:
        raise DataSetError("file", f"{p.name} has no rows")
    return Rows(str(p), actual, ids, np.asarray(xs, dtype=np.float32), attrs, labels)


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
        width = int(np.prod(data.inputs.shape[1:])) if data.inputs is not None else None
        x = self.rows.inputs
        if width is not None and x.shape[1] != width:
            return [CheckResult(self.name, "overall", "error", None, len(x),
                                f"{Path(self.rows.path).name}: rows have {x.shape[1]} inputs, the models take {width}")]
        x = x.reshape((len(x), *data.inputs.shape[1:])) if data.inputs is not None else x
        pb, pc = data.predict(x)
        sdata = RunData(pair=data.pair, classes=data.classes, critical_classes=data.critical_classes, baseline=pb,
                        candidate=pc, labels=label_indices(self.rows.labels, data.classes),
                        attributes=self.rows.attributes, latency={}, inputs=x, seed=data.seed, reference=None,
                        predict=data.predict, feature_names=data.feature_names)
        out = []
        for check in self.checks:
            for r in check.evaluate(sdata):
                r.check = f"{self.name}/{r.check}"
                r.type = r.type or check.type
                r.evidence = {**r.evidence, "scenario": self.record}
                out.append(r)
        return out

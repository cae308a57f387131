"""The check protocol: a named, configured test that turns a run's paired outputs into results,
one per slice, each with a status ``pass | warn | fail | insufficient_data | error``."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol, Sequence

import numpy as np

from ..registry import resolve

STATUSES = ("pass", "warn", "fail", "insufficient_data", "error")
# how bad a status is, for a run's overall status (the worst of its results)
SEVERITY_ORDER = {"pass": 0, "insufficient_data": 1, "warn": 2, "error": 3, "fail": 4}
OVERALL = "overall"


@dataclass
class CheckResult:
    """One check on one slice of one run."""
    check: str
    slice: str
    status: str
    value: float | None
    n: int
    message: str
    warn: float | None = None
    fail: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    critical: bool = False      # concerns a safety-critical class (raises incident severity)

    def to_row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("critical")
        d["evidence"] = {**_jsonable(self.evidence), "critical": self.critical}
        d["value"] = None if self.value is None or not math.isfinite(self.value) else float(self.value)
        return d


@dataclass
class RunData:
    """Everything a check may look at: the paired outputs on the same rows, plus context."""
    pair: str
    classes: list[str]
    critical_classes: list[str]
    baseline: np.ndarray          # (n, k) probabilities
    candidate: np.ndarray         # (n, k)
    labels: np.ndarray | None     # (n,) class index, -1 where unknown; None when no labels at all
    attributes: list[dict[str, str]]
    latency: dict[str, np.ndarray]        # per-batch seconds by role
    batch_sizes: np.ndarray
    inputs: np.ndarray | None = None
    seed: int = 0
    # performance (sentinel.perf): this run's measurement, earlier runs' perf records of the pair
    # (newest first, accepted ones only; checks must still gate them by fingerprint), and the
    # production latency (seconds) the messages reported
    perf: Any = None
    perf_history: list[dict[str, Any]] = field(default_factory=list)
    served_latency: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.baseline.shape[0])


class Check(Protocol):
    """A check built from a ``CheckSpec`` (``type``, ``name``, ``warn``, ``fail``, ``min_samples``,
    ``params``). ``evaluate`` must not raise for bad data: it returns ``insufficient_data`` when
    there are fewer than ``min_samples`` rows and ``error`` results for what it cannot compute."""
    name: str

    def evaluate(self, data: RunData) -> list[CheckResult]: ...


class ThresholdCheck:
    """Base for checks whose value gets worse as it grows: value >= fail → fail, >= warn → warn."""
    type: ClassVar[str] = ""

    def __init__(self, spec: Any):
        self.spec = spec
        self.name = spec.check_name
        self.warn = spec.warn
        self.fail = spec.fail
        self.min_samples = spec.min_samples
        self.params = dict(spec.params)

    def judge(self, slice_: str, value: float | None, n: int, what: str, *, warn: float | None = None,
              fail: float | None = None, evidence: dict[str, Any] | None = None, critical: bool = False,
              min_samples: int | None = None) -> CheckResult:
        warn = self.warn if warn is None else warn
        fail = self.fail if fail is None else fail
        need = self.min_samples if min_samples is None else min_samples
        ev = evidence or {}
        if n < need:
            return CheckResult(self.name, slice_, "insufficient_data", value, n,
                               f"{what}: {n} samples, need {need}", warn, fail, ev, critical)
        if value is None or not math.isfinite(value):
            return CheckResult(self.name, slice_, "error", None, n, f"{what}: value could not be computed",
                               warn, fail, ev, critical)
        if fail is not None and value >= fail:
            status, cmp = "fail", f">= fail level {fail:g}"
        elif warn is not None and value >= warn:
            status, cmp = "warn", f">= warn level {warn:g}"
        else:
            status, cmp = "pass", f"< {'warn' if warn is not None else 'fail'} level {(warn if warn is not None else fail)}"
        return CheckResult(self.name, slice_, status, float(value), n, f"{what} = {value:.4g} ({cmp}, n={n})",
                           warn, fail, ev, critical)


CHECKS: dict[str, str] = {
    "decision_flips": "sentinel.checks.safety:DecisionFlipCheck",
    "latency_p95": "sentinel.checks.perf:LatencyP95Check",
    "perf_history": "sentinel.checks.perf:PerfHistoryCheck",
    "latency_served": "sentinel.checks.perf:ServedLatencyCheck",
}


def build_check(spec: Any) -> Check:
    cls = resolve("check", spec.type, CHECKS)
    return cls(spec)


def worst(statuses: Sequence[str]) -> str:
    return max(statuses, key=lambda s: SEVERITY_ORDER.get(s, 0), default="insufficient_data")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj

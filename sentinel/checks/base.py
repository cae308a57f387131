"""The check protocol: a named, configured test that turns a run's paired outputs into results,
one per slice, each with a status ``pass | warn | fail | insufficient_data | error``."""
from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Protocol, Sequence

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
class ReferenceData:
    """The window a run is compared with: the traffic of the pair's last accepted run (status
    pass or warn) or a pinned data set, with both current models' outputs on its rows."""
    source: dict[str, Any]        # {"kind": "run", "run_id": ...} or {"kind": "pinned", "file": ..., "sha256": ...}
    inputs: np.ndarray            # (m, ...) float32
    baseline: np.ndarray          # (m, k)
    candidate: np.ndarray         # (m, k)
    attributes: list[dict[str, str]]
    labels: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.baseline.shape[0])


# (x) -> (baseline probabilities, candidate probabilities): both models on new rows
Predict = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]


@dataclass
class RunData:
    """Everything a check may look at: the paired outputs on the same rows, plus context.
    ``reference`` is None when there is nothing to compare with yet; ``predict`` runs both models
    on rows a check makes up (perturbations, scenario data sets) and is None where no models
    are loaded."""
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
    reference: ReferenceData | None = None
    predict: Predict | None = None
    feature_names: list[str] | None = None
    # performance (sentinel.perf): this run's measurement, earlier runs' perf records of the pair
    # (newest first, accepted ones only; checks must still gate them by fingerprint), and the
    # production latency (seconds) the messages reported
    perf: Any = None
    perf_history: list[dict[str, Any]] = field(default_factory=list)
    served_latency: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.baseline.shape[0])

    def flat_inputs(self) -> np.ndarray:
        """Inputs as (n, features), also when n is 0."""
        assert self.inputs is not None
        return self.inputs.reshape(self.n, int(np.prod(self.inputs.shape[1:])))

    def features(self) -> list[str]:
        width = int(np.prod(self.inputs.shape[1:])) if self.inputs is not None else 0
        if self.feature_names and len(self.feature_names) == width:
            return list(self.feature_names)
        return [f"x{i}" for i in range(width)]


def slices(attributes: list[dict[str, str]], slice_by: Sequence[str]) -> Iterator[tuple[str, np.ndarray]]:
    """``("overall", all rows)`` then one ``("attr=value", rows)`` per value of each attribute."""
    n = len(attributes)
    yield OVERALL, np.arange(n)
    for attr in slice_by:
        groups: dict[str, list[int]] = {}
        for i, a in enumerate(attributes):
            if attr in a:
                groups.setdefault(str(a[attr]), []).append(i)
        for value, rows in sorted(groups.items()):
            yield f"{attr}={value}", np.asarray(rows, dtype=int)


def slice_rows(attributes: list[dict[str, str]], name: str) -> np.ndarray:
    """Rows of ``attributes`` in the slice called ``name`` (``overall`` or ``attr=value``)."""
    if name == OVERALL:
        return np.arange(len(attributes))
    attr, _, value = name.partition("=")
    return np.asarray([i for i, a in enumerate(attributes) if str(a.get(attr)) == value], dtype=int)


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


class CheckParamError(ValueError):
    """A check's ``params`` are wrong; ``key`` is the param's name (the suite loader adds the file
    and the check's position)."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"params.{key}: {problem}")


@dataclass
class Test:
    """One hypothesis test inside a check: ``p`` is the p-value of "a change at least this bad
    happened by chance"; ``effect`` is compared with ``warn``/``fail`` (minimum effect sizes)."""
    name: str
    p: float
    effect: float
    warn: float | None
    fail: float | None
    p_adjusted: float = 1.0


@dataclass
class Finding:
    """A check's measurement on one slice, before the family of tests is judged together."""
    slice: str
    value: float | None
    n: int
    what: str
    tests: list[Test] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    critical: bool = False
    min_samples: int | None = None
    warn: float | None = None
    fail: float | None = None
    primary: bool = False       # an overall-level finding: primary findings share half the budget


class StatisticalCheck(ThresholdCheck):
    """Base for checks with a stated false-alarm rate.

    Each check gathers ``Finding``s (one per slice, class, feature...), each carrying one or more
    ``Test``s. All tests of one check in one run form a family: their p-values are adjusted by
    ``params.family`` (``holm``, default: the chance of *any* false alarm in the run is at most
    ``params.false_alarm_rate``, default 0.01; or ``bh``: the expected share of false alarms among
    alarms is at most that). A test alarms when its adjusted p-value is at most the rate AND its
    effect reaches the warn (or fail) level: the levels are minimum effect sizes, so a
    statistically real but tiny change stays a pass. The status of a finding is its worst test.

    Weights: when a check has both *primary* findings (overall, per class) and slice findings,
    the primary ones share half the false-alarm budget and the slices the other half (weighted
    Holm/BH), so adding slices does not blunt the overall test; a finding's tests share its
    weight equally.
    """
    # params every statistical check accepts; subclasses add their own in ``PARAMS``
    COMMON_PARAMS: ClassVar[dict[str, Any]] = {"false_alarm_rate": 0.01, "family": "holm", "slice_by": []}
    PARAMS: ClassVar[dict[str, Any]] = {}
    # (warn, fail) minimum effect sizes used when the spec sets neither
    LEVELS: ClassVar[tuple[float | None, float | None]] = (None, None)

    def __init__(self, spec: Any):
        super().__init__(spec)
        if self.warn is None and self.fail is None:
            self.warn, self.fail = self.LEVELS
        allowed = {**self.COMMON_PARAMS, **self.PARAMS}
        for key in self.params:
            if key not in allowed:
                close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(allowed))})"
                raise CheckParamError(key, f"unknown param for check type {self.type!r}{hint}")
        self.params = {**allowed, **self.params}
        self.alpha = float(self.params["false_alarm_rate"])
        if not 0 < self.alpha < 1:
            raise CheckParamError("false_alarm_rate", f"must be between 0 and 1, got {self.alpha}")
        self.family = str(self.params["family"])
        if self.family not in ("holm", "bh"):
            raise CheckParamError("family", f"must be 'holm' or 'bh', got {self.family!r}")
        sb = self.params["slice_by"]
        if not isinstance(sb, list) or not all(isinstance(a, str) for a in sb):
            raise CheckParamError("slice_by", "must be a list of attribute names")

    def decide(self, findings: Sequence[Finding]) -> list[CheckResult]:
        """Judge every finding's tests as one family and turn findings into results."""
        from .stats import adjust

        def enough(f: Finding) -> bool:
            return f.n >= (self.min_samples if f.min_samples is None else f.min_samples) and f.value is not None \
                and math.isfinite(f.value)
        judged = [f for f in findings if enough(f) and f.tests]
        n_primary = sum(f.primary for f in judged)
        split = 0 < n_primary < len(judged)
        family, weights = [], []
        for f in judged:
            w = (0.5 / n_primary if f.primary else 0.5 / (len(judged) - n_primary)) if split else 1.0 / len(judged)
            family += f.tests
            weights += [w / len(f.tests)] * len(f.tests)
        for t, pa in zip(family, adjust([t.p for t in family], self.family, weights)):
            t.p_adjusted = float(pa)
        out = []
        for f in findings:
            res = self.judge(f.slice, f.value, f.n, f.what, warn=f.warn, fail=f.fail, critical=f.critical,
                             min_samples=f.min_samples, evidence=f.evidence)
            if res.status in ("insufficient_data", "error"):
                out.append(res)
                continue
            # the test that decides: the worst status, then the smallest adjusted p-value
            worst_t = max(f.tests, key=lambda t: (SEVERITY_ORDER[_test_status(t, self.alpha)], -t.p_adjusted),
                          default=None)
            status = "pass" if worst_t is None else _test_status(worst_t, self.alpha)
            res.status = status
            rule = f"{self.family} over {len(family)} test{'s' if len(family) != 1 else ''}, false-alarm rate {self.alpha:g}"
            if worst_t is None:
                res.message = f"{f.what} = {f.value:.4g} (nothing to compare with; n={f.n})"
            else:
                verdict = {"fail": "significant, reaches fail level", "warn": "significant, reaches warn level",
                           "pass": ("significant but below the minimum effect" if worst_t.p_adjusted <= self.alpha
                                    else "not significant")}[status]
                eff = "" if worst_t.effect == f.value else f" {worst_t.effect:+.4g}"
                res.message = (f"{f.what} = {f.value:.4g}; {worst_t.name}{eff}: {verdict} "
                               f"(p_adj={worst_t.p_adjusted:.3g}, {rule}; n={f.n})")
            res.evidence = {**f.evidence, "tests": [
                {"name": t.name, "p_value": t.p, "p_adjusted": t.p_adjusted, "effect": t.effect, "warn": t.warn,
                 "fail": t.fail, "status": _test_status(t, self.alpha)} for t in f.tests],
                "false_alarm_rate": self.alpha, "family": self.family, "family_size": len(family),
                "weighting": "primary findings share half the budget" if split else "equal"}
            out.append(res)
        return out


def _test_status(t: Test, alpha: float) -> str:
    if t.p_adjusted > alpha:
        return "pass"
    if t.fail is not None and t.effect >= t.fail:
        return "fail"
    if t.warn is not None and t.effect >= t.warn:
        return "warn"
    return "pass"


CHECKS: dict[str, str] = {
    "decision_flips": "sentinel.checks.safety:DecisionFlipCheck",
    "critical_recall": "sentinel.checks.safety:CriticalRecallCheck",
    "calibration": "sentinel.checks.calibration:CalibrationCheck",
    "confidence": "sentinel.checks.calibration:ConfidenceCheck",
    "fairness": "sentinel.checks.fairness:FairnessCheck",
    "robustness": "sentinel.checks.robustness:RobustnessCheck",
    "data_drift": "sentinel.checks.drift:DataDriftCheck",
    "prediction_drift": "sentinel.checks.drift:PredictionDriftCheck",
    "scenario": "sentinel.checks.scenarios:ScenarioCheck",
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

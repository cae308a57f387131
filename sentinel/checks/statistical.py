"""Checks with a stated false-alarm rate: :class:`Test` (one hypothesis test), :class:`Finding`
(a measurement with its tests) and :class:`StatisticalCheck`, which judges all tests of one
check in one run as one family."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

from pydantic import field_validator

from ..verdict import Decision, sentence
from .params import CheckParams
from .result import SEVERITY_ORDER, CheckResult
from .stats import adjust
from .threshold import ThresholdCheck


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


def open_unit(v: float) -> float:
    """``v`` when it lies strictly between 0 and 1 (a rate, a probability threshold)."""
    if not 0 < v < 1:
        raise ValueError(f"must be between 0 and 1, got {v}")
    return v


class StatisticalParams(CheckParams):
    """Params every statistical check accepts (a suite's ``defaults`` fill them in)."""
    false_alarm_rate: float = 0.01
    family: str = "holm"
    slice_by: Any = []

    @field_validator("false_alarm_rate")
    @classmethod
    def _rate(cls, v: float) -> float:
        return open_unit(v)

    @field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        if v not in ("holm", "bh"):
            raise ValueError(f"must be 'holm' or 'bh', got {v!r}")
        return v

    @field_validator("slice_by")
    @classmethod
    def _slice_by(cls, v: Any) -> list[str]:
        if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
            raise ValueError("must be a list of attribute names")
        return v


def status_of(t: Test, alpha: float) -> str:
    if t.p_adjusted > alpha:
        return "pass"
    if t.fail is not None and t.effect >= t.fail:
        return "fail"
    if t.warn is not None and t.effect >= t.warn:
        return "warn"
    return "pass"


def decision_of_test(t: Test, alpha: float, what: str) -> Decision:
    """The comparisons behind ``status_of(t, alpha)``, as stated in words."""
    status = status_of(t, alpha)
    sig = dict(p_value=t.p_adjusted, alpha=alpha, p_name="p_adj", measure=what)
    if status in ("fail", "warn"):
        return Decision(t.name, t.effect, ">=", getattr(t, status), status, p_op="<=", **sig)
    if t.p_adjusted > alpha:
        return Decision(t.name, t.effect, p_op=">", **sig)
    levels = [(lv, name) for lv, name in ((t.warn, "warn"), (t.fail, "fail")) if lv is not None]
    if not levels:
        return Decision(t.name, t.effect, p_op="<=", **sig)
    level, name = min(levels)
    return Decision(t.name, t.effect, "<", level, name, p_op="<=", **sig)


class StatisticalCheck(ThresholdCheck):
    """Base for checks with a stated false-alarm rate.

    Each check gathers ``Finding``s (one per slice, class, feature...), each carrying one or more
    ``Test``s. All tests of one check in one run form a family: their p-values are adjusted by
    ``params.family`` (``holm``, default: the chance of *any* false alarm in the run is at most
    ``params.false_alarm_rate``, default 0.01; or ``bh``: the expected share of false alarms among
    alarms is at most that). A test alarms when its adjusted p-value is at most the rate AND its
    effect reaches the warn (or fail) level: the levels are minimum effect sizes, so a
    statistically real but tiny change stays a pass. The status of a finding is its worst test,
    and that test is the result's ``decision``.

    Weights: when a check has both *primary* findings (overall, per class) and slice findings,
    the primary ones share half the false-alarm budget and the slices the other half (weighted
    Holm/BH), so adding slices does not blunt the overall test; a finding's tests share its
    weight equally.
    """
    Params: ClassVar[type[CheckParams]] = StatisticalParams
    # (warn, fail) minimum effect sizes used when the spec sets neither
    LEVELS: ClassVar[tuple[float | None, float | None]] = (None, None)

    def __init__(self, spec: Any):
        super().__init__(spec)
        if self.warn is None and self.fail is None:
            self.warn, self.fail = self.LEVELS
        self.alpha = float(self.params["false_alarm_rate"])
        self.family = str(self.params["family"])

    def decide(self, findings: Sequence[Finding]) -> list[CheckResult]:
        """Judge every finding's tests as one family and turn findings into results."""
        family, split = self._adjust(findings)
        rule = f"{self.family} over {len(family)} test{'s' if len(family) != 1 else ''}, false-alarm rate {self.alpha:g}"
        return [self._result(f, rule, len(family), split) for f in findings]

    def _enough(self, f: Finding) -> bool:
        need = self.min_samples if f.min_samples is None else f.min_samples
        return f.n >= need and f.value is not None and math.isfinite(f.value)

    def _adjust(self, findings: Sequence[Finding]) -> tuple[list[Test], bool]:
        """Set every judged test's ``p_adjusted``; returns the family and whether the budget was split."""
        judged = [f for f in findings if self._enough(f) and f.tests]
        n_primary = sum(f.primary for f in judged)
        split = 0 < n_primary < len(judged)
        family, weights = [], []
        for f in judged:
            w = (0.5 / n_primary if f.primary else 0.5 / (len(judged) - n_primary)) if split else 1.0 / len(judged)
            family += f.tests
            weights += [w / len(f.tests)] * len(f.tests)
        for t, pa in zip(family, adjust([t.p for t in family], self.family, weights)):
            t.p_adjusted = float(pa)
        return family, split

    def _result(self, f: Finding, rule: str, family_size: int, split: bool) -> CheckResult:
        res = self.judge(f.slice, f.value, f.n, f.what, warn=f.warn, fail=f.fail, critical=f.critical,
                         min_samples=f.min_samples, evidence=f.evidence)
        if res.status in ("insufficient_data", "error"):
            return res
        # the test that decides: the worst status, then the smallest adjusted p-value
        worst_t = max(f.tests, key=lambda t: (SEVERITY_ORDER[status_of(t, self.alpha)], -t.p_adjusted), default=None)
        if worst_t is None:
            res.status, res.decision = "pass", None
            res.message = f"{f.what} = {f.value:.4g} (nothing to compare with; n={f.n})"
        else:
            res.status = status_of(worst_t, self.alpha)
            res.decision = decision_of_test(worst_t, self.alpha, f.what)
            verdict = {"fail": "significant, reaches fail level", "warn": "significant, reaches warn level",
                       "pass": ("significant but below the minimum effect" if worst_t.p_adjusted <= self.alpha
                                else "not significant")}[res.status]
            res.message = (f"{f.what} = {f.value:.4g}; {sentence(res.decision, with_measure=False)}: {verdict} "
                           f"({rule}; n={f.n})")
        res.evidence = {**f.evidence, "tests": [
            {"name": t.name, "p_value": t.p, "p_adjusted": t.p_adjusted, "effect": t.effect, "warn": t.warn,
             "fail": t.fail, "status": status_of(t, self.alpha)} for t in f.tests],
            "false_alarm_rate": self.alpha, "family": self.family, "family_size": family_size,
            "weighting": "primary findings share half the budget" if split else "equal"}
        return res

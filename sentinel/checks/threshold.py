"""Base of the checks whose value gets worse as it grows: value >= fail -> fail, >= warn -> warn."""
from __future__ import annotations

import math
from typing import Any, ClassVar

from ..verdict import Decision, comparison
from .params import CheckParams, parse_params
from .result import CheckResult


def threshold_decision(what: str, value: float, warn: float | None, fail: float | None) -> tuple[str, Decision]:
    """(status, the comparison that set it) of ``value`` against the levels."""
    if fail is not None and value >= fail:
        return "fail", Decision(what, float(value), ">=", float(fail), "fail", measure=what)
    if warn is not None and value >= warn:
        return "warn", Decision(what, float(value), ">=", float(warn), "warn", measure=what)
    level, name = (warn, "warn") if warn is not None else (fail, "fail")
    if level is None:
        return "pass", Decision(what, float(value), measure=what)
    return "pass", Decision(what, float(value), "<", float(level), name, measure=what)


class ThresholdCheck:
    """Base for checks whose value gets worse as it grows. Subclasses set ``type`` and their
    ``Params`` model; ``self.params`` is the validated params as a dict, defaults filled in."""
    type: ClassVar[str] = ""
    Params: ClassVar[type[CheckParams]] = CheckParams

    def __init__(self, spec: Any):
        self.spec = spec
        self.name = spec.check_name
        self.warn = spec.warn
        self.fail = spec.fail
        self.min_samples = spec.min_samples
        self.params = parse_params(self.Params, spec.params, check_type=self.type or type(self).__name__,
                                   check_name=self.name)

    def judge(self, slice_: str, value: float | None, n: int, what: str, *, warn: float | None = None,
              fail: float | None = None, evidence: dict[str, Any] | None = None, critical: bool = False,
              min_samples: int | None = None) -> CheckResult:
        warn = self.warn if warn is None else warn
        fail = self.fail if fail is None else fail
        need = self.min_samples if min_samples is None else min_samples
        ev = evidence or {}
        if n < need:
            return CheckResult(self.name, slice_, "insufficient_data", value, n,
                               f"{what}: {n} samples, need {need}", warn, fail, ev, critical, type=self.type)
        if value is None or not math.isfinite(value):
            return CheckResult(self.name, slice_, "error", None, n, f"{what}: value could not be computed",
                               warn, fail, ev, critical, type=self.type)
        status, decision = threshold_decision(what, value, warn, fail)
        # "0.23 >= fail level 0.05" -> "flip rate = 0.23 (>= fail level 0.05, n=1000)"
        shown, _, cmp = comparison(decision).partition(" ")
        return CheckResult(self.name, slice_, status, float(value), n,
                           f"{what} = {shown} ({cmp or 'no level set'}, n={n})",
                           warn, fail, ev, critical, decision, self.type)

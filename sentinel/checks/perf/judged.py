"""The base of the performance checks: a :class:`~sentinel.checks.perf.judge.Comparison` becomes
pass/warn/fail/insufficient_data/error, with the comparison that decided it."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import model_validator

from ...perf.timing import summarize
from ...verdict import Decision, sentence
from ..data import RunData
from ..params import CheckParams
from ..result import CheckResult
from ..threshold import ThresholdCheck
from .judge import Comparison, compare

EVIDENCE_POINTS = 128   # quantiles per distribution kept in the evidence
_CHECK_LEVEL = object()  # verdict(): use the check's own warn/fail level
RATIO_TEST = "latency ratio (Hodges-Lehmann)"


def ms_sketch(seconds: Any, points: int = EVIDENCE_POINTS, scale: float = 1e3) -> list[float]:
    """A sorted quantile sketch of ``seconds`` in milliseconds (``scale=1`` keeps the unit)."""
    v = np.asarray(seconds if seconds is not None else [], dtype=float)
    v = np.sort(v[np.isfinite(v)]) * scale
    if v.size > points:
        v = np.quantile(v, (np.arange(points) + 0.5) / points)
    return [round(float(x), 6) for x in v]


def timing_summary(v: Any, batch_size: int = 1) -> dict[str, Any]:
    """p50/p95/p99/mean/throughput of per-call seconds, without the (large) sketch."""
    s = summarize(np.asarray(v, dtype=float), batch_size)
    s.pop("sketch", None)
    return s


class JudgedParams(CheckParams):
    """``alpha`` (0.01), ``keep`` (0.2, fastest fraction used by the rank test), ``confidence``
    (0.99, of the bootstrap CIs), ``bootstrap`` (1000 resamples), ``tail_warn`` (1.5) and
    ``tail_fail`` (unset). A value out of range is ``params.<key> must be a number > ...``."""
    RANGES: ClassVar[dict[str, tuple[float, float | None]]] = {
        "alpha": (0.0, 1.0), "keep": (0.0, 1.0), "confidence": (0.0, 1.0), "bootstrap": (99.0, None),
        "tail_warn": (0.0, None), "tail_fail": (0.0, None)}
    alpha: float = 0.01
    keep: float = 0.2
    confidence: float = 0.99
    bootstrap: int = 1000
    tail_warn: float | None = 1.5
    tail_fail: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _ranges(cls, raw: Any) -> Any:
        for key, (lo, hi) in cls.RANGES.items():
            value = raw.get(key) if isinstance(raw, dict) else None
            if value is None:
                continue
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > lo
            if not ok or (hi is not None and value > hi):
                bound = f"a number > {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
                raise ValueError(f"params.{key} must be {bound}, got {value!r}")
        return raw


class JudgedCheck(ThresholdCheck):
    """Shared judging of the performance checks (``params``: :class:`JudgedParams`)."""
    Params: ClassVar[type[CheckParams]] = JudgedParams

    @property
    def alpha(self) -> float:
        return float(self.params["alpha"])

    @property
    def tail_levels(self) -> tuple[float | None, float | None]:
        """(warn, fail) levels for tail growth (p95/p99 CI); wide because tails are where a
        shared machine's noise lives. Default warn 1.5, never fail unless ``tail_fail`` is set."""
        warn, fail = self.params["tail_warn"], self.params["tail_fail"]
        return (None if warn is None else float(warn)), (None if fail is None else float(fail))

    def compare(self, reference: Any, experiment: Any, data: RunData) -> Comparison:
        return compare(reference, experiment, keep=float(self.params["keep"]), min_n=5,
                       n_boot=int(self.params["bootstrap"]), confidence=float(self.params["confidence"]),
                       seed=data.seed)

    def verdict(self, slice_: str, cmp: Comparison, n: int, what: str, evidence: dict[str, Any], *,
                warn: Any = _CHECK_LEVEL, fail: Any = _CHECK_LEVEL, tails: bool = True) -> CheckResult:
        """``warn``/``fail`` default to the check's levels; None means "never". ``tails=False``
        ignores the p95/p99 intervals (tails compared across runs are mostly the host's noise)."""
        warn = self.warn if warn is _CHECK_LEVEL else warn
        fail = self.fail if fail is _CHECK_LEVEL else fail
        evidence = {**evidence, "comparison": cmp.to_dict(), "alpha": self.alpha}

        def result(status: str, value: float | None, message: str, decision: Decision | None = None) -> CheckResult:
            return CheckResult(self.name, slice_, status, value, n, f"{what}: {message}", warn, fail, evidence,
                               decision=decision, type=self.type)
        if n < self.min_samples:
            return result("insufficient_data", cmp.hl_ratio, f"{n} samples, need {self.min_samples}")
        if cmp.state == "no_reference":
            return result("insufficient_data", None, f"the reference has no finite latencies "
                          f"({cmp.dropped.get('reference', 0)} dropped as NaN/non-positive); nothing to compare with")
        if cmp.state == "no_experiment":
            return result("error", None, f"the candidate has no finite latencies "
                          f"({cmp.dropped.get('experiment', 0)} dropped as NaN/non-positive)")
        if cmp.state != "ok":
            return result("insufficient_data", None,
                          f"too few finite values ({cmp.n_reference} reference, {cmp.n_experiment} candidate)")
        status, decision, tail_why = self._decide(cmp, warn, fail, tails)
        detail = tail_why if status != "pass" else (
            f"typical x{cmp.hl_ratio:.3f}, p95 x{cmp.p95_ratio:.3f} (CI {cmp.p95_ci[0]:.3f}..{cmp.p95_ci[1]:.3f}), "
            f"p99 x{cmp.p99_ratio:.3f}; within tolerance")
        said = sentence(decision, with_measure=False)
        return result(status, cmp.hl_ratio, f"{said}; {detail}" if detail else said, decision)

    def _decide(self, cmp: Comparison, warn: float | None, fail: float | None,
                tails: bool) -> tuple[str, Decision, str | None]:
        """(status, the comparison that set it, how the tail grew when a tail decided) of an ``ok``
        comparison: the typical ratio (significant and outside the band) first, then the tails."""
        tail_warn, tail_fail = self.tail_levels if tails else (None, None)
        sig = {} if cmp.constant else dict(p_value=cmp.p_value, alpha=self.alpha, p_name="Mann-Whitney p")
        for status, level, tail in (("fail", fail, tail_fail), ("warn", warn, tail_warn)):
            if cmp.exceeds(level, self.alpha):
                return status, Decision(RATIO_TEST, cmp.hl_ratio, ">=", level, status,
                                        p_op="<" if sig else None, **sig), None
            why = cmp.tail_exceeds(tail)
            if why:
                name, ci = next((q, ci) for q, ci in (("p95", cmp.p95_ci), ("p99", cmp.p99_ci))
                                if ci is not None and ci[0] >= tail)
                test = f"{name} ratio, low end of its {float(self.params['confidence']):.0%} CI"
                return status, Decision(test, ci[0], ">=", tail, status), why
        levels = sorted((lv, name) for lv, name in ((warn, "warn"), (fail, "fail")) if lv is not None)
        if not levels:
            return "pass", Decision(RATIO_TEST, cmp.hl_ratio), None
        level, name = levels[0]
        if cmp.hl_ratio < level:
            return "pass", Decision(RATIO_TEST, cmp.hl_ratio, "<", level, name), None
        # at or above the band but the rank test is not significant (a constant pair never gets here)
        return "pass", Decision(RATIO_TEST, cmp.hl_ratio, p_op=">=", **sig), None

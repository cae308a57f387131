"""Safety checks on paired outputs: decisions that flip between baseline and candidate."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from .base import OVERALL, CheckResult, RunData, ThresholdCheck
from .stats import wilson_interval


class DecisionFlipCheck(ThresholdCheck):
    """Share of rows where the candidate's decision (argmax) differs from the baseline's.

    Results: ``overall`` against ``warn``/``fail``; for each critical class ``class=<name>`` the
    share of the baseline's decisions for that class that the candidate *missed* (the dangerous
    direction) against ``params.critical_warn``/``critical_fail`` (minimum ``params.critical_min_samples``
    baseline decisions, default 30); and for each attribute named in ``params.slice_by`` one result
    per value (``region=eu``). Evidence: counts, a 95% Wilson interval, the flip matrix
    (rows = baseline decision, columns = candidate decision).
    """
    type = "decision_flips"

    def evaluate(self, data: RunData) -> list[CheckResult]:
        b = data.baseline.argmax(axis=1) if data.n else np.zeros(0, dtype=int)
        c = data.candidate.argmax(axis=1) if data.n else np.zeros(0, dtype=int)
        flips = b != c
        k = len(data.classes)
        results = [self._rate(OVERALL, flips, b, c, k, data.classes)]
        cw, cf = self.params.get("critical_warn", self.warn), self.params.get("critical_fail", self.fail)
        cmin = int(self.params.get("critical_min_samples", 30))
        for name in data.critical_classes:
            idx = data.classes.index(name)
            mask = b == idx
            n = int(mask.sum())
            missed = int((c[mask] != idx).sum())
            added = int(((c == idx) & (b != idx)).sum())
            rate = missed / n if n else float("nan")
            lo, hi = wilson_interval(missed, n)
            results.append(self.judge(
                f"class={name}", rate if n else None, n, f"missed {name} rate",
                warn=cw, fail=cf, min_samples=cmin, critical=True,
                evidence={"missed": missed, "added": added, "baseline_decisions": n, "ci95": [lo, hi]}))
        for attr in self.params.get("slice_by", []) or []:
            groups: dict[str, list[int]] = defaultdict(list)
            for i, a in enumerate(data.attributes):
                if attr in a:
                    groups[a[attr]].append(i)
            for value, rows in sorted(groups.items()):
                ix = np.asarray(rows)
                results.append(self._rate(f"{attr}={value}", flips[ix], b[ix], c[ix], k, data.classes))
        return results

    def _rate(self, slice_: str, flips: np.ndarray, b: np.ndarray, c: np.ndarray, k: int,
              classes: list[str]) -> CheckResult:
        n = int(flips.size)
        nflip = int(flips.sum())
        matrix = np.zeros((k, k), dtype=int)
        np.add.at(matrix, (b, c), 1)
        lo, hi = wilson_interval(nflip, n)
        return self.judge(slice_, nflip / n if n else None, n, "flip rate", evidence={
            "flips": nflip, "ci95": [lo, hi], "classes": classes, "flip_matrix": matrix.tolist()})

"""Safety checks on paired outputs: decisions that flip between baseline and candidate, and the
critical classes' recall when labels are known.

Decisions: a single-label model decides its top class (argmax); a multilabel model
(``output_kind == "multilabel"``: an independent probability per label) decides each label on
its own, positive when its probability reaches ``params.threshold`` (default 0.5). A row's
decision flips when any of its labels does."""
from __future__ import annotations

import numpy as np
from pydantic import field_validator

from .data import OVERALL, RunData, slice_rows, slices
from .result import CheckResult
from .statistical import Finding, StatisticalCheck, StatisticalParams, Test, open_unit
from .stats import binom_greater, mcnemar_greater, rate_increase, wilson_interval


def decisions(p: np.ndarray) -> np.ndarray:
    return p.argmax(axis=1) if p.size else np.zeros(0, dtype=int)


def class_decisions(p: np.ndarray, kind: str = "single", threshold: float = 0.5) -> np.ndarray:
    """``(n, k)`` bool: which classes each row decides (one per row for a single-label model,
    every label at or above ``threshold`` for a multilabel one)."""
    p = np.asarray(p)
    if kind == "multilabel":
        return p >= threshold
    out = np.zeros(p.shape, dtype=bool)
    if p.size:
        out[np.arange(p.shape[0]), p.argmax(axis=1)] = True
    return out


def flipped(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: rows whose decisions differ (``class_decisions`` of two models)."""
    return (a != b).any(axis=1) if a.ndim == 2 else a != b


def not_multilabel(check: "StatisticalCheck", data: RunData, what: str) -> list[CheckResult] | None:
    """The result of a check that has no meaning on multilabel outputs (its labels are one class
    per row), or None when the outputs are single-label."""
    if data.output_kind != "multilabel":
        return None
    return [CheckResult(check.name, OVERALL, "insufficient_data", None, data.n,
                        f"{what} is not applicable to multilabel outputs (labels here are one class per row)",
                        check.warn, check.fail, {"output_kind": "multilabel"})]


class DecisionParams(StatisticalParams):
    """Params of checks that turn probabilities into decisions."""
    threshold: float = 0.5

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: float) -> float:
        return open_unit(v)


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


class DecisionFlipParams(DecisionParams):
    critical_warn: float | None = None
    critical_fail: float | None = None
    critical_min_samples: int = 30
    increase_warn: float | None = 0.005
    increase_fail: float | None = 0.02


class CriticalRecallParams(StatisticalParams):
    classes: list[str] | None = None


class DecisionFlipCheck(StatisticalCheck):
    """Share of rows where the candidate's decision (argmax; for multilabel outputs any label's
    decision at ``params.threshold``) differs from the baseline's.

    Findings: ``overall`` and one per slice (``params.slice_by``: ``region=eu``) on the flip rate;
    one per class ``class=<name>`` on the share of the baseline's decisions for that class that
    the candidate *missed* (for a critical class the dangerous direction; levels
    ``params.critical_warn``/``critical_fail``, at least ``params.critical_min_samples`` baseline
    decisions, default 30). Tests per finding, judged as one family (see ``StatisticalCheck``):

    * *above level*: the rate is significantly above the warn level (exact binomial), so a level
      is reported crossed only when the data show it, not when a small window happens to; the
      status is then fail when the rate also reaches the fail level;
    * *increase over reference*: the rate is significantly above the same rate on the reference
      window (exact conditional binomial) by at least ``params.increase_warn`` (default 0.005) /
      ``increase_fail`` (0.02).

    Evidence: counts, a 95% Wilson interval, the flip matrix (rows = baseline decision, columns =
    candidate decision), missed/added per class (the direction of each flip), the reference rate.
    """
    type = "decision_flips"
    LEVELS = (0.02, 0.05)
    Params = DecisionFlipParams

    def evaluate(self, data: RunData) -> list[CheckResult]:
        kind, t = data.output_kind, float(self.params["threshold"])
        b, c = class_decisions(data.baseline, kind, t), class_decisions(data.candidate, kind, t)
        ref = data.reference
        rb, rc = (class_decisions(ref.baseline, kind, t), class_decisions(ref.candidate, kind, t)) if ref else (None, None)
        findings = []
        for name, rows in slices(data.attributes, self.params["slice_by"]):
            ref_rows = slice_rows(ref.attributes, name) if ref is not None else None
            flips = flipped(b[rows], c[rows])
            ref_counts = (int(flipped(rb[ref_rows], rc[ref_rows]).sum()), ref_rows.size) if ref is not None else None
            findings.append(self._finding(name, int(flips.sum()), int(rows.size), ref_counts, "flip rate",
                                          self.warn, self.fail, None, False, self._flip_evidence(data, b[rows], c[rows])))
        for i, cls in enumerate(data.classes):
            critical = cls in data.critical_classes
            mask = b[:, i]
            missed = int((~c[mask, i]).sum())
            ref_counts = (int((~rc[rb[:, i], i]).sum()), int(rb[:, i].sum())) if ref is not None else None
            warn = self.params["critical_warn"] if critical and self.params["critical_warn"] is not None else self.warn
            fail = self.params["critical_fail"] if critical and self.params["critical_fail"] is not None else self.fail
            findings.append(self._finding(
                f"class={cls}", missed, int(mask.sum()), ref_counts, f"missed {cls} rate", warn, fail,
                int(self.params["critical_min_samples"]), critical,
                {"missed": missed, "added": int((c[:, i] & ~b[:, i]).sum()), "baseline_decisions": int(mask.sum())}))
        return self.decide(findings)

    def _flip_evidence(self, data: RunData, b: np.ndarray, c: np.ndarray) -> dict:
        """The direction of the flips per class, and the flip matrix (single-label) or the
        flips per label (multilabel)."""
        ev: dict = {"classes": data.classes, "by_class": {
            cls: {"missed": int((b[:, i] & ~c[:, i]).sum()), "added": int((c[:, i] & ~b[:, i]).sum())}
            for i, cls in enumerate(data.classes)}}
        if data.output_kind == "multilabel":
            ev.update(output_kind="multilabel", threshold=float(self.params["threshold"]),
                      label_flips={cls: int((b[:, i] != c[:, i]).sum()) for i, cls in enumerate(data.classes)})
            return ev
        k = len(data.classes)
        matrix = np.zeros((k, k), dtype=int)
        np.add.at(matrix, (b.argmax(axis=1), c.argmax(axis=1)), 1)
        ev["flip_matrix"] = matrix.tolist()
        return ev

    def _finding(self, name: str, k: int, n: int, ref: tuple[int, int] | None, what: str, warn: float | None,
                 fail: float | None, min_samples: int | None, critical: bool, evidence: dict) -> Finding:
        rate = _rate(k, n)
        lo, hi = wilson_interval(k, n)
        tests = []
        level = warn if warn is not None else fail
        if level is not None and rate is not None:
            tests.append(Test(f"above level {level:g}", binom_greater(k, n, level), rate, warn, fail))
        ev = {"flips" if what == "flip rate" else "count": k, "n": n, "ci95": [lo, hi], **evidence}
        if ref is not None and ref[1] > 0 and rate is not None:
            ref_rate = ref[0] / ref[1]
            tests.append(Test("increase over reference", rate_increase(k, n, ref[0], ref[1]), rate - ref_rate,
                              self.params["increase_warn"], self.params["increase_fail"]))
            ev["reference"] = {"count": ref[0], "n": ref[1], "rate": ref_rate}
        return Finding(name, rate, n, what, tests, ev, critical, min_samples, warn, fail,
                       primary=name == OVERALL or name.startswith("class="))


class CriticalRecallCheck(StatisticalCheck):
    """Recall (and false-negative rate) of each critical class, candidate vs baseline, on the rows
    whose label is known (labels join by message id). Value: the recall the candidate lost
    (baseline recall - candidate recall, i.e. the FNR increase); test: exact one-sided McNemar on
    the labelled positives (rows only the candidate misses vs rows only the baseline misses);
    ``warn``/``fail`` are minimum recall losses. ``min_samples`` counts labelled positives.
    Without labels the result is ``insufficient_data`` saying so: no number is made up."""
    type = "critical_recall"
    LEVELS = (0.02, 0.05)
    Params = CriticalRecallParams

    def evaluate(self, data: RunData) -> list[CheckResult]:
        skipped = not_multilabel(self, data, "critical_recall")
        if skipped:
            return skipped
        targets = self.params["classes"] or data.critical_classes or data.classes[-1:]
        labels = data.labels if data.labels is not None else np.full(data.n, -1)
        if not (labels >= 0).any():
            return [CheckResult(self.name, f"class={cls}", "insufficient_data", None, 0,
                                f"no labels joined for the {data.n} rows of this window: {cls} recall not computed",
                                self.warn, self.fail, {"labelled": 0}, cls in data.critical_classes)
                    for cls in targets]
        b, c = decisions(data.baseline), decisions(data.candidate)
        findings = []
        for cls in targets:
            i = data.classes.index(cls)
            for name, rows in slices(data.attributes, self.params["slice_by"]):
                pos = rows[labels[rows] == i]
                n = int(pos.size)
                hit_b, hit_c = b[pos] == i, c[pos] == i
                rb, rc = _rate(int(hit_b.sum()), n), _rate(int(hit_c.sum()), n)
                loss = None if n == 0 else rb - rc
                only_c_misses, only_b_misses = int((hit_b & ~hit_c).sum()), int((~hit_b & hit_c).sum())
                slice_name = f"class={cls}" if name == OVERALL else f"class={cls},{name}"
                findings.append(Finding(
                    slice_name, loss, n, f"{cls} recall lost", [Test(
                        "recall loss", mcnemar_greater(only_c_misses, only_b_misses), loss if loss is not None else 0.0,
                        self.warn, self.fail)],
                    {"positives": n, "recall": {"baseline": rb, "candidate": rc},
                     "fnr": {"baseline": None if rb is None else 1 - rb, "candidate": None if rc is None else 1 - rc},
                     "candidate_only_misses": only_c_misses, "baseline_only_misses": only_b_misses,
                     "labelled_rows": int((labels[rows] >= 0).sum())},
                    critical=cls in data.critical_classes, primary=name == OVERALL))
        return self.decide(findings)

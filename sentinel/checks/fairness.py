"""Fairness across groups, computed by Sentinel itself: Evidently 0.7's GroupBy returns the
whole-data-set value in every group for classification metrics, so it cannot be used here."""
from __future__ import annotations

import numpy as np

from .data import RunData
from .result import CheckResult, decided_by, deciding, worst
from .statistical import Finding, StatisticalCheck, Test
from .safety import DecisionParams, class_decisions
from .stats import group_shift


class FairnessParams(DecisionParams):
    groups: list[str] | None = None
    positive_class: str | None = None


class FairnessCheck(StatisticalCheck):
    """Per group of each attribute in ``params.groups`` (default ``params.slice_by``): positive
    rate and, when labels are known, true-positive rate of both models, the gap between groups
    (max - min) of each, and its change. The *positive* class is ``params.positive_class``
    (default the first critical class).

    A gap opens when the candidate changes one group's decisions differently from the others.
    Per group, value: |change in the group's positive rate - change in the rest| (candidate minus
    baseline, same rows); test: exact permutation test of the paired decision changes in the
    group against random subsets of the same size (two-sided), and the same on labelled positives
    for TPR. ``warn``/``fail`` are minimum differences. One summary result per attribute
    (slice = the attribute's name) carries the gap change and the per-group table."""
    type = "fairness"
    LEVELS = (0.03, 0.08)
    Params = FairnessParams

    def evaluate(self, data: RunData) -> list[CheckResult]:
        attrs = self.params["groups"] or self.params["slice_by"]
        if not attrs:
            return [CheckResult(self.name, "overall", "error", None, data.n,
                                "no groups: set params.groups (or slice_by) to attributes such as region")]
        pos_name = self.params["positive_class"] or (data.critical_classes or data.classes[-1:])[0]
        pos = data.classes.index(pos_name)
        kind, t = data.output_kind, float(self.params["threshold"])
        b = class_decisions(data.baseline, kind, t)[:, pos].astype(int)
        c = class_decisions(data.candidate, kind, t)[:, pos].astype(int)
        d = c - b
        labels = data.labels if data.labels is not None else np.full(data.n, -1)
        positives = labels == pos
        out: list[CheckResult] = []
        for attr in attrs:
            values = np.asarray([str(a.get(attr)) if attr in a else "" for a in data.attributes])
            groups = sorted(set(values) - {""})
            findings, table = [], {}
            for g in groups:
                m = values == g
                n = int(m.sum())
                row = {"n": n, "positive_rate": {"baseline": float(b[m].mean()), "candidate": float(c[m].mean())}}
                shift = float(d[m].mean() - d[~m].mean()) if (~m).any() else 0.0
                tests = [Test("positive-rate change vs other groups", group_shift(d, m), abs(shift), self.warn, self.fail)]
                lm = m & positives
                if lm.any():
                    row["tpr"] = {"baseline": float(b[lm].mean()), "candidate": float(c[lm].mean()), "n": int(lm.sum())}
                    lshift = float(d[lm].mean() - d[~m & positives].mean()) if (~m & positives).any() else 0.0
                    tests.append(Test("TPR change vs other groups", group_shift(d[positives], m[positives]),
                                      abs(lshift), self.warn, self.fail))
                table[g] = row
                findings.append(Finding(f"{attr}={g}", abs(shift), n, f"{pos_name} positive-rate change vs rest",
                                        tests, {"group": row, "signed_change_vs_rest": shift}))
            results = self.decide(findings)
            gaps = {}
            for key in ("positive_rate", "tpr"):
                for role in ("baseline", "candidate"):
                    vals = [r[key][role] for r in table.values() if key in r]
                    if len(vals) >= 2:
                        gaps.setdefault(key, {})[role] = max(vals) - min(vals)
            gap_change = (gaps["positive_rate"]["candidate"] - gaps["positive_rate"]["baseline"]
                          if "positive_rate" in gaps and len(gaps["positive_rate"]) == 2 else None)
            status = worst([r.status for r in results]) if results else "insufficient_data"
            flagged = [r.slice for r in results if r.status in ("warn", "fail")]
            msg = (f"{pos_name} positive-rate gap across {attr} groups: change {gap_change:+.4g}" if gap_change is not None
                   else f"fewer than two {attr} groups") + (f"; groups moved: {', '.join(flagged)}" if flagged else "")
            decision = deciding(results)
            out.append(CheckResult(self.name, attr, status, gap_change, data.n, msg + decided_by(decision, status),
                                   self.warn, self.fail, {"positive_class": pos_name, "groups": table, "gaps": gaps,
                                                          "labels": bool(positives.any())}, decision=decision))
            out.extend(results)
        return out

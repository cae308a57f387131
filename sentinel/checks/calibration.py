"""How much the models' probabilities can be trusted: calibration against labels (ECE, Brier,
reliability curves) and, with no labels needed, confidence and uncertainty (top probability,
margin, the share of low-confidence decisions a deployment would route to a person)."""
from __future__ import annotations

import numpy as np

from .data import OVERALL, RunData, slices
from .result import CheckResult
from .safety import DecisionParams, not_multilabel
from .statistical import Finding, StatisticalCheck, StatisticalParams, Test
from .stats import mcnemar_greater, paired_mean_greater

HIST_BINS = np.linspace(0.0, 1.0, 21)


def brier_rows(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row multi-class Brier score: sum over classes of (p - onehot(y))^2."""
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return ((p - onehot) ** 2).sum(axis=1)


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> dict:
    """Top-label reliability curve (equal-width confidence bins) and its expected calibration
    error: sum over bins of (rows in bin / n) * |accuracy - mean confidence|."""
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, bins) / count
        acc = np.bincount(idx, correct, bins) / count
    ece = float(np.nansum(count / max(len(y), 1) * np.abs(acc - mean_conf)))
    return {"ece": ece, "bins": bins, "count": count.tolist(),
            "confidence": [None if not np.isfinite(v) else float(v) for v in mean_conf],
            "accuracy": [None if not np.isfinite(v) else float(v) for v in acc]}


class CalibrationParams(StatisticalParams):
    bins: int = 10


class ConfidenceParams(DecisionParams):
    low_margin: float = 0.2


class CalibrationCheck(StatisticalCheck):
    """ECE and Brier score of each model on the labelled rows, and the change. Value: the Brier
    score the candidate added (candidate - baseline, averaged over rows); test: one-sided paired
    t-test on the per-row Brier difference (same rows, same labels), so sharpened or flattened
    candidate probabilities are caught whether or not the decisions change. ``warn``/``fail`` are
    minimum Brier increases. Evidence: ECE, Brier and reliability curves of both models.
    Without labels: ``insufficient_data``, no number made up."""
    type = "calibration"
    LEVELS = (0.005, 0.02)
    Params = CalibrationParams

    def evaluate(self, data: RunData) -> list[CheckResult]:
        skipped = not_multilabel(self, data, "calibration")
        if skipped:
            return skipped
        labels = data.labels if data.labels is not None else np.full(data.n, -1)
        if not (labels >= 0).any():
            return [CheckResult(self.name, OVERALL, "insufficient_data", None, 0,
                                f"no labels joined for the {data.n} rows of this window: calibration not computed",
                                self.warn, self.fail, {"labelled": 0})]
        findings = []
        for name, rows in slices(data.attributes, self.params["slice_by"]):
            rows = rows[labels[rows] >= 0]
            y = labels[rows]
            pb, pc = data.baseline[rows], data.candidate[rows]
            db, dc = brier_rows(pb, y), brier_rows(pc, y)
            n = int(rows.size)
            inc = float((dc - db).mean()) if n else None
            ev = {"brier": {"baseline": float(db.mean()) if n else None, "candidate": float(dc.mean()) if n else None}}
            if n:
                rel_b, rel_c = reliability(pb, y, int(self.params["bins"])), reliability(pc, y, int(self.params["bins"]))
                ev["ece"] = {"baseline": rel_b["ece"], "candidate": rel_c["ece"], "change": rel_c["ece"] - rel_b["ece"]}
                if name == OVERALL:
                    ev["reliability"] = {"baseline": rel_b, "candidate": rel_c}
            findings.append(Finding(name, inc, n, "Brier score increase",
                                    [Test("Brier increase", paired_mean_greater(dc - db), inc or 0.0,
                                          self.warn, self.fail)], ev, primary=name == OVERALL))
        return self.decide(findings)


def _top_and_margin(p: np.ndarray, kind: str = "single", threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the probability of the decision and its margin over the alternative. Multilabel:
    each label is a two-way decision (probability max(p, 1-p), margin 2|p - threshold|, which is
    top - second at 0.5), and a row is as uncertain as its least certain label."""
    if kind == "multilabel":
        return np.maximum(p, 1 - p).min(axis=1), (2 * np.abs(p - threshold)).min(axis=1)
    s = np.sort(p, axis=1)
    return s[:, -1], s[:, -1] - s[:, -2]


def _distribution(v: np.ndarray) -> dict:
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), "mean": float(v.mean()), "p05": float(np.percentile(v, 5)),
            "p50": float(np.percentile(v, 50)), "hist": np.histogram(v, HIST_BINS)[0].tolist()}


class ConfidenceCheck(StatisticalCheck):
    """Confidence and uncertainty, candidate vs baseline on the same rows, no labels needed.
    A decision is *low confidence* when its margin (top probability - second) is below
    ``params.low_margin`` (default 0.2; multilabel outputs: the least certain label's
    2|p - ``params.threshold``|): the rows a deployment would route to human review.
    Value: the low-confidence share the candidate added; test: exact one-sided McNemar (rows
    low-confidence only for the candidate vs only for the baseline); ``warn``/``fail`` are minimum
    share increases. Evidence: histograms and quantiles of top probability and margin."""
    type = "confidence"
    LEVELS = (0.02, 0.05)
    Params = ConfidenceParams

    def evaluate(self, data: RunData) -> list[CheckResult]:
        how = (data.output_kind, float(self.params["threshold"]))
        tb, mb = _top_and_margin(data.baseline, *how) if data.n else (np.zeros(0), np.zeros(0))
        tc, mc = _top_and_margin(data.candidate, *how) if data.n else (np.zeros(0), np.zeros(0))
        low_b, low_c = mb < self.params["low_margin"], mc < self.params["low_margin"]
        findings = []
        for name, rows in slices(data.attributes, self.params["slice_by"]):
            n = int(rows.size)
            sb, sc = (float(low_b[rows].mean()), float(low_c[rows].mean())) if n else (None, None)
            only_c, only_b = int((low_c[rows] & ~low_b[rows]).sum()), int((low_b[rows] & ~low_c[rows]).sum())
            ev = {"low_confidence_share": {"baseline": sb, "candidate": sc}, "low_margin": self.params["low_margin"],
                  "candidate_only_low": only_c, "baseline_only_low": only_b,
                  "top_probability": {"baseline": _distribution(tb[rows]), "candidate": _distribution(tc[rows])},
                  "margin": {"baseline": _distribution(mb[rows]), "candidate": _distribution(mc[rows])},
                  "hist_edges": HIST_BINS.tolist() if name == OVERALL else None}
            inc = None if sb is None else sc - sb
            findings.append(Finding(name, inc, n, "low-confidence share increase",
                                    [Test("low-confidence increase", mcnemar_greater(only_c, only_b), inc or 0.0,
                                          self.warn, self.fail)], ev, primary=name == OVERALL))
        return self.decide(findings)

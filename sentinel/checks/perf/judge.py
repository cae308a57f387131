"""A Kayenta-style judge for "is the experiment slower than the reference?".

Two samples of positive measurements (latencies) are compared on the log scale, so every effect
is a *ratio* (1.10 = 10% slower):

* **Mann–Whitney U** (one-sided, experiment greater) says whether the shift is real;
* the **Hodges–Lehmann estimate** (median of all pairwise log differences) says how big it is,
  and it is compared with a **tolerance band**: a significant shift smaller than the band is
  ignored, as in Netflix Kayenta's MannWhitneyClassifier;
* a **bootstrap confidence interval of the p95 (and p99) ratio** catches what a rank test
  misses: a tail that grew while the typical latency stayed put (increased variance).

The rank test and the estimate use the **fastest** ``keep`` fraction of each sample (20% by
default). On a shared machine interference only ever *adds* time (preemption, cache and memory
contention), so the slow part of a timing sample mostly measures the neighbours: measured here,
run-to-run variation is ~1% at p5-p10, 10-18% at the median and 30-120% at p95. Extra work in
the model moves every quantile by the same factor, so the fast part sees it with a fraction of
the noise. Tail growth that only the slow part shows is what the p95/p99 interval is for; its
level is separate and wider (see :meth:`Comparison.tail_exceeds`).

Samples are compared through at most ``SKETCH`` evenly spaced quantiles per side. Timings taken
back to back are autocorrelated, so treating 20,000 calls as 20,000 independent draws would
make every p-value tiny; a 512-point sketch keeps the distribution's shape and keeps the test
honest (conservative) about how much independent information there is.

Edge cases are explicit (see :class:`Comparison.state`): empty or all-NaN samples never pass
silently, constant samples are compared exactly (no noise: any difference is real).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SKETCH = 512
STATES = ("ok", "no_reference", "no_experiment", "too_few")


@dataclass
class Comparison:
    """Experiment vs reference. Ratios are experiment / reference (> 1: experiment slower).

    ``state``: ``ok``; ``no_reference`` (reference empty or all NaN/non-positive);
    ``no_experiment`` (experiment empty or all NaN); ``too_few`` (fewer than ``min_n`` finite
    values on a side). Only an ``ok`` comparison has ratios.
    """
    state: str
    n_reference: int
    n_experiment: int
    dropped: dict[str, int] = field(default_factory=dict)   # non-finite or non-positive values
    p_value: float | None = None
    hl_ratio: float | None = None
    p95_ratio: float | None = None
    p95_ci: tuple[float, float] | None = None
    p99_ratio: float | None = None
    p99_ci: tuple[float, float] | None = None
    spread_ratio: float | None = None   # IQR ratio: > 1 means more variable
    constant: bool = False

    def exceeds(self, level: float | None, alpha: float) -> str | None:
        """Why the experiment is slower than ``level`` (a ratio), or None: the rank test is
        significant at ``alpha`` *and* the Hodges–Lehmann ratio is outside the tolerance band."""
        if self.state != "ok" or level is None:
            return None
        if self.constant:   # both sides noise-free: the ratio is exact
            return f"constant latencies, ratio {self.hl_ratio:.3f} >= {level:g}" if self.hl_ratio >= level else None
        if self.p_value is not None and self.p_value < alpha and self.hl_ratio >= level:
            return f"latency x{self.hl_ratio:.3f} (Hodges-Lehmann, Mann-Whitney p={self.p_value:.2g}) >= {level:g}"
        return None

    def tail_exceeds(self, level: float | None) -> str | None:
        """Why the tail grew past ``level`` (the whole bootstrap CI of the p95 or p99 ratio is at
        or above it), or None. Catches increased variance that leaves the typical latency alone."""
        if self.state != "ok" or level is None or self.constant:
            return None
        for name, ratio, ci in (("p95", self.p95_ratio, self.p95_ci), ("p99", self.p99_ratio, self.p99_ci)):
            if ci is not None and ci[0] >= level:
                return (f"{name} x{ratio:.3f} (CI {ci[0]:.3f}..{ci[1]:.3f}) >= {level:g} while the typical latency is "
                        f"x{self.hl_ratio:.3f}: the tail grew (spread x{self.spread_ratio:.2f})")
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clean(v: Any) -> tuple[np.ndarray, int]:
    a = np.asarray(v if v is not None else [], dtype=float).ravel()
    keep = np.isfinite(a) & (a > 0)
    return a[keep], int(a.size - keep.sum())


def _sketch(a: np.ndarray, points: int = SKETCH) -> np.ndarray:
    a = np.sort(a)
    return a if a.size <= points else np.quantile(a, (np.arange(points) + 0.5) / points)


def hodges_lehmann(reference: np.ndarray, experiment: np.ndarray) -> float:
    """Median of all pairwise differences experiment_j - reference_i (a location shift)."""
    return float(np.median(np.subtract.outer(experiment, reference)))


def bootstrap_quantile_ratio(reference: np.ndarray, experiment: np.ndarray, q: float, *, n_boot: int,
                             confidence: float, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap CI of quantile(experiment, q) / quantile(reference, q)."""
    r = reference[rng.integers(0, reference.size, (n_boot, reference.size))]
    e = experiment[rng.integers(0, experiment.size, (n_boot, experiment.size))]
    ratios = np.quantile(e, q, axis=1) / np.quantile(r, q, axis=1)
    lo, hi = np.quantile(ratios, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(lo), float(hi)


def fastest(a: np.ndarray, keep: float, min_n: int) -> np.ndarray:
    """The fastest ``keep`` fraction of ``a`` (at least ``min_n`` values), sorted."""
    a = np.sort(a)
    return a[: max(min_n, int(math.ceil(keep * a.size)))]


def compare(reference: Any, experiment: Any, *, keep: float = 0.2, min_n: int = 5, n_boot: int = 1000,
            confidence: float = 0.99, seed: int = 0) -> Comparison:
    """Compare two samples of positive measurements; never raises on bad data (see ``state``).

    ``keep``: fraction of the fastest values each side contributes to the rank test and the
    Hodges–Lehmann ratio (1.0 uses everything). Tail ratios always use all values."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    ref, dropped_ref = _clean(reference)
    exp, dropped_exp = _clean(experiment)
    base = dict(n_reference=int(ref.size), n_experiment=int(exp.size),
                dropped={"reference": dropped_ref, "experiment": dropped_exp})
    if ref.size == 0:
        return Comparison("no_reference", **base)
    if exp.size == 0:
        return Comparison("no_experiment", **base)
    if ref.size < min_n or exp.size < min_n:
        return Comparison("too_few", **base)
    if np.ptp(ref) == 0 and np.ptp(exp) == 0:
        ratio = float(exp[0] / ref[0])
        return Comparison("ok", **base, p_value=0.0 if ratio != 1 else 1.0, hl_ratio=ratio, p95_ratio=ratio,
                          p95_ci=(ratio, ratio), p99_ratio=ratio, p99_ci=(ratio, ratio), spread_ratio=1.0, constant=True)
    ls_ref = np.log(_sketch(fastest(ref, keep, min_n)))
    ls_exp = np.log(_sketch(fastest(exp, keep, min_n)))
    # one side constant and the other not is fine: the rank test handles ties
    from scipy import stats   # imported when a comparison runs (~90 MB), not at daemon start
    p = float(stats.mannwhitneyu(ls_exp, ls_ref, alternative="greater").pvalue)
    rng = np.random.default_rng(seed)
    s_ref, s_exp = _sketch(ref), _sketch(exp)
    iqr_ref = float(np.subtract(*np.percentile(ref, [75, 25])))
    iqr_exp = float(np.subtract(*np.percentile(exp, [75, 25])))
    return Comparison(
        "ok", **base, p_value=p if math.isfinite(p) else 1.0,
        hl_ratio=math.exp(hodges_lehmann(ls_ref, ls_exp)),
        p95_ratio=float(np.percentile(exp, 95) / np.percentile(ref, 95)),
        p95_ci=bootstrap_quantile_ratio(s_ref, s_exp, 0.95, n_boot=n_boot, confidence=confidence, rng=rng),
        p99_ratio=float(np.percentile(exp, 99) / np.percentile(ref, 99)),
        p99_ci=bootstrap_quantile_ratio(s_ref, s_exp, 0.99, n_boot=n_boot, confidence=confidence, rng=rng),
        spread_ratio=(iqr_exp / iqr_ref) if iqr_ref > 0 else (math.inf if iqr_exp > 0 else 1.0))

"""Small statistics helpers shared by checks (numpy/scipy only)."""
from __future__ import annotations

import math


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (95% by default); (0, 1) when n == 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# ---------------------------------------------------------------------------------------------
# Tests with a known false-alarm rate. Every p-value here is one-sided unless said otherwise and
# exact (or conservative) under its null, so a check that declares a change when p <= alpha
# false-alarms at most alpha of the time.

import numpy as np

# scipy (~90 MB) is imported by the functions that use it: the daemon holds it only once a run needs it

FAMILY_METHODS = ("holm", "bh")


def adjust(pvalues: "np.ndarray | list[float]", method: str = "holm",
           weights: "np.ndarray | list[float] | None" = None) -> np.ndarray:
    """Family-wise adjusted p-values: Holm (controls the chance of *any* false alarm in the family)
    or Benjamini-Hochberg (controls the expected share of false alarms among alarms).

    ``weights`` (positive, any scale) split the false-alarm budget unevenly: weighted Holm
    (Holm 1979) and weighted BH (Genovese, Roeder & Wasserman 2006) keep their guarantee for any
    fixed weights, and a test with twice the weight needs a p-value twice as large to alarm."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    if m == 0:
        return p
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()
    q = p / (w * m)                       # equal weights: q == p
    order = np.argsort(q)
    if method == "holm":
        tail = np.cumsum(w[order][::-1])[::-1]           # weight still in play at each step
        adj = np.maximum.accumulate(np.minimum(1.0, p[order] * tail / w[order]))
    elif method == "bh":
        ranked = q[order]
        adj = np.minimum(1.0, np.minimum.accumulate((m / np.arange(m, 0, -1)) * ranked[::-1])[::-1])
    else:
        raise ValueError(f"family method must be one of {FAMILY_METHODS}, not {method!r}")
    out = np.empty(m)
    out[order] = adj
    return out


def binom_greater(k: int, n: int, p0: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p0): is a rate of k/n significantly above p0?"""
    if n <= 0 or k <= 0:
        return 1.0
    if p0 <= 0:
        return 0.0
    from scipy import stats
    return float(stats.binom.sf(k - 1, n, min(p0, 1.0)))


def rate_increase(k1: int, n1: int, k0: int, n0: int) -> float:
    """Exact conditional test that rate k1/n1 exceeds rate k0/n0 (two independent samples):
    given the k1 + k0 events, k1 ~ Binomial(k1 + k0, n1 / (n1 + n0)) under equal rates."""
    if n1 <= 0 or n0 <= 0:
        return 1.0
    return binom_greater(k1, k1 + k0, n1 / (n1 + n0))


def mcnemar_greater(worse: int, better: int) -> float:
    """Exact one-sided McNemar test on paired binary outcomes: of the discordant rows, are
    significantly more ``worse`` (candidate only) than ``better`` (baseline only)?"""
    return binom_greater(worse, worse + better, 0.5)


def paired_mean_greater(d: np.ndarray) -> float:
    """One-sided paired t-test that mean(d) > 0; 1.0 when d has no spread."""
    d = np.asarray(d, dtype=float)
    if d.size < 2:
        return 1.0
    sd = d.std(ddof=1)
    if not np.isfinite(sd) or sd == 0:
        return 1.0 if d.mean() <= 0 else 0.0
    t = d.mean() / (sd / np.sqrt(d.size))
    from scipy import stats
    return float(stats.t.sf(t, d.size - 1))


def group_shift(d: np.ndarray, in_group: np.ndarray) -> float:
    """Exact two-sided permutation p-value that the paired changes ``d`` (values -1, 0, +1, e.g.
    candidate decision minus baseline decision) sum differently inside the group than a random
    subset of the same size would. The permutation distribution of the group's sum is the
    difference of a multivariate hypergeometric's +1 and -1 counts, enumerated exactly."""
    d = np.asarray(d)
    g = np.asarray(in_group, dtype=bool)
    n, m = d.size, int(g.sum())
    a, b = int((d > 0).sum()), int((d < 0).sum())
    if m == 0 or m == n or a + b == 0:
        return 1.0
    z = n - a - b
    observed = int(d[g].sum())
    x = np.arange(0, min(a, m) + 1)[:, None]
    y = np.arange(0, min(b, m) + 1)[None, :]
    rest = m - x - y
    ok = (rest >= 0) & (rest <= z)
    from scipy import special
    lc = lambda N, K: special.gammaln(N + 1) - special.gammaln(K + 1) - special.gammaln(N - K + 1)  # noqa: E731
    with np.errstate(invalid="ignore"):
        logp = lc(a, x) + lc(b, y) + lc(z, np.where(ok, rest, 0)) - lc(n, m)
    prob = np.where(ok, np.exp(logp), 0.0)
    mean = m * (a - b) / n
    dev = np.abs((x - y) - mean)
    return float(min(1.0, prob[dev >= abs(observed - mean) - 1e-9].sum()))

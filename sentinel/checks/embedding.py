"""Embedding drift: each model's embedding output (an intermediate representation, named by the
model config's ``embedding_output``) on this window against the same model's embeddings of the
reference window.

The test is a kernel two-sample test (Gretton et al., "A Kernel Two-Sample Test", JMLR 2012):
the unbiased squared maximum mean discrepancy (MMD²) with a Gaussian kernel whose bandwidth is
the median distance between the pooled rows (fixed before permuting, so it is the same for every
split), and a seeded permutation p-value, (1 + splits at least as extreme) / (1 + splits). Under
"same distribution" every split of the pooled rows is equally likely, so p <= alpha happens at
most alpha of the time: the stated false-alarm rate holds at any sample size and dimension, with
no classifier to train. It sees any change of distribution (mean, spread, shape), not only a
moved centroid.
"""
from __future__ import annotations

import math

import numpy as np
from pydantic import field_validator

from .data import OVERALL, RunData, slice_rows, slices
from .result import CheckResult
from .statistical import Finding, StatisticalCheck, StatisticalParams, Test

ROLES = ("baseline", "candidate")


class EmbeddingDriftParams(StatisticalParams):
    roles: list[str] = list(ROLES)
    permutations: int = 0
    max_rows: int = 500
    seed: int = 0

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: list[str]) -> list[str]:
        unknown = [r for r in v if r not in ROLES]
        if unknown or not v:
            raise ValueError(f"must be a non-empty list of {' and '.join(ROLES)}, got {v}")
        return v

    @field_validator("max_rows")
    @classmethod
    def _max_rows(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"must be at least 2, got {v}")
        return v


def median_bandwidth(z: np.ndarray) -> float:
    """The median pairwise Euclidean distance of the rows of ``z`` (1.0 when they all coincide)."""
    sq = _sq_dists(z)
    d = np.sqrt(sq[np.triu_indices(len(z), 1)])
    med = float(np.median(d)) if d.size else 0.0
    return med if med > 0 else 1.0


def _sq_dists(z: np.ndarray) -> np.ndarray:
    norms = (z * z).sum(axis=1)
    return np.maximum(norms[:, None] + norms[None, :] - 2 * z @ z.T, 0.0)


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """(unbiased MMD², permutation p-value, bandwidth) of samples ``x`` (n, d) and ``y`` (m, d)."""
    z = np.concatenate([x, y]).astype(np.float64)
    n, total = len(x), len(z)
    bandwidth = median_bandwidth(z)
    k = np.exp(-_sq_dists(z) / (2 * bandwidth ** 2))
    observed = _mmd2(k, np.arange(total) < n)[0]
    extreme, done = 0, 0
    while done < permutations:       # splits in chunks: K @ A costs total² per split
        b = min(256, permutations - done)
        picks = np.argsort(rng.random((b, total)), axis=1)[:, :n]      # b random splits at once
        a = np.zeros((total, b), dtype=bool)
        a[picks.T, np.arange(b)[None, :]] = True
        extreme += int((_mmd2(k, a) >= observed - 1e-12).sum())
        done += b
    return float(observed), (1 + extreme) / (1 + permutations), bandwidth


def _mmd2(k: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Unbiased MMD² of every split in the columns of ``a`` (True = first sample); the kernel's
    diagonal is 1."""
    a = a.reshape(len(k), -1).astype(np.float64)
    n = a[:, 0].sum()
    m = len(k) - n
    ka = k @ a
    k1 = k.sum(axis=1)
    aka = (a * ka).sum(axis=0)
    akb = a.T @ k1 - aka
    bkb = k1.sum() - 2 * (a.T @ k1) + aka
    return (aka - n) / (n * (n - 1)) + (bkb - m) / (m * (m - 1)) - 2 * akb / (n * m)


def centroid_cosine_distance(x: np.ndarray, y: np.ndarray) -> float:
    """1 - cosine similarity of the two samples' mean embeddings (0: same direction)."""
    a, b = x.mean(axis=0), y.mean(axis=0)
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(1 - a @ b / denom) if denom > 0 else 0.0


class EmbeddingDriftCheck(StatisticalCheck):
    """Drift of each role's embeddings (``params.roles``, default baseline and candidate) on this
    window vs the same role's embeddings of the reference window, overall and per
    ``slice_by``: kernel MMD² with a seeded permutation test (module docstring), on at most
    ``params.max_rows`` rows of each window (default 500, drawn with the seed). Value and effect:
    MMD (the square root of the unbiased MMD², 0 when negative; the kernel is bounded by 1, so
    MMD lies in 0..1.41); ``warn``/``fail`` are minimum MMDs (default 0.1 / 0.2). The number of
    splits is at least 2 × tests / false-alarm rate (``params.permutations`` raises it), so the
    smallest p-value can survive the family correction. Evidence: MMD², the kernel bandwidth,
    the centroid cosine distance and the rows compared. Slices ``role=candidate`` and
    ``role=candidate,region=eu``. Without embeddings (no ``embedding_output`` configured) or a
    reference with them: ``insufficient_data`` saying so."""
    type = "embedding_drift"
    LEVELS = (0.1, 0.2)
    Params = EmbeddingDriftParams

    def evaluate(self, data: RunData) -> list[CheckResult]:
        missing = self._missing(data)
        if missing:
            return [CheckResult(self.name, OVERALL, "insufficient_data", None, data.n, missing, self.warn, self.fail)]
        ref = data.reference
        roles = [r for r in self.params["roles"] if (data.embeddings or {}).get(r) is not None
                 and (ref.embeddings or {}).get(r) is not None]
        n_tests = len(roles) * sum(1 for _ in slices(data.attributes, self.params["slice_by"]))
        permutations = max(int(self.params["permutations"]), math.ceil(2 * max(n_tests, 1) / self.alpha))
        rng = np.random.default_rng([int(data.seed), int(self.params["seed"]), 0xE3B])
        findings, errors = [], []
        for role in roles:
            cur, old = np.asarray(data.embeddings[role], dtype=float), np.asarray(ref.embeddings[role], dtype=float)
            if cur.ndim != 2 or old.ndim != 2 or cur.shape[1] != old.shape[1]:
                errors.append(CheckResult(self.name, f"role={role}", "error", None, data.n,
                                          f"{role} embeddings have shape {list(cur.shape[1:])} here and "
                                          f"{list(old.shape[1:])} in the reference window", self.warn, self.fail))
                continue
            for name, rows in slices(data.attributes, self.params["slice_by"]):
                findings.append(self._finding(role, name, cur[rows], old[slice_rows(ref.attributes, name)],
                                              permutations, rng))
        return errors + self.decide(findings)

    def _missing(self, data: RunData) -> str | None:
        if not data.embeddings or all(v is None for v in data.embeddings.values()):
            return ("no embeddings in this run: name the models' embedding output (embedding_output in the "
                    "pair's model config) to check embedding drift")
        if data.reference is None or data.reference.n == 0:
            return "no reference window yet (no accepted run of this pair and no pinned data set)"
        if not data.reference.embeddings or not any(
                (data.reference.embeddings.get(r) is not None and data.embeddings.get(r) is not None)
                for r in self.params["roles"]):
            return "the reference window has no embeddings of the roles checked (it predates embedding_output)"
        return None

    def _finding(self, role: str, name: str, cur: np.ndarray, old: np.ndarray, permutations: int,
                 rng: np.random.Generator) -> Finding:
        label = f"role={role}" if name == OVERALL else f"role={role},{name}"
        cur, old = cur[np.isfinite(cur).all(axis=1)], old[np.isfinite(old).all(axis=1)]
        cap = int(self.params["max_rows"])
        cur = cur[np.sort(rng.choice(len(cur), cap, replace=False))] if len(cur) > cap else cur
        old = old[np.sort(rng.choice(len(old), cap, replace=False))] if len(old) > cap else old
        n = int(min(len(cur), len(old)))
        what = f"{role} embedding drift (MMD)"
        if n < max(2, self.min_samples):
            return Finding(label, None, n, what, primary=name == OVERALL)
        mmd2, p, bandwidth = mmd_test(cur, old, permutations, rng)
        mmd = math.sqrt(max(mmd2, 0.0))
        return Finding(label, mmd, n, what, [Test("MMD vs reference", p, mmd, self.warn, self.fail)],
                       {"role": role, "mmd2": mmd2, "bandwidth": bandwidth, "permutations": permutations,
                        "centroid_cosine_distance": centroid_cosine_distance(cur, old),
                        "n_current": int(len(cur)), "n_reference": int(len(old)), "dim": int(cur.shape[1])},
                       primary=name == OVERALL)

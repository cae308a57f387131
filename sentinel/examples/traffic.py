"""Synthetic traffic for the example ``triage`` model pair; pure numpy, seeded by the caller.

* :func:`ordinary_traffic` - real rows of the breast-cancer data set with a small
  multiplicative jitter: what the models were built for. The int8 candidate agrees with the
  fp32 baseline on almost all of it.
* :func:`drifted_traffic` - rows interpolated between a malignant and a benign example,
  inside a narrow band around the point where the baseline's decision flips. Quantization
  moves the decision boundary a little, so in that band the candidate disagrees with the
  baseline far more often: the demo uses it to open a safety incident.

Measured for the committed pair (build seed 7; see ``meta.json`` ->
``flip_rate_vs_baseline``, 20,000 rows per kind): the int8 candidate flips 0.18% of the
data set's decisions, 0.25% of ordinary traffic and 37% of drifted traffic; the ``damaged``
model flips 35% of ordinary traffic. Over traffic seeds 0-19: with 2,000 rows per draw,
ordinary <= 0.6%, drifted 34-40%, damaged 32-37%; with 200 rows, ordinary <= 0.5%, drifted
28-41%, damaged 27-42%. Rebuilding the pair with build seeds 1-5 gave drifted 36-39% and
ordinary <= 0.21%.

The data live in ``triage/reference.npz`` (written by ``scripts/make_example_pair.py``), so
scikit-learn is not needed at runtime.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

# Relative per-feature noise of ordinary traffic: enough that rows are not verbatim copies
# of the data set, small enough not to change what they are.
ORDINARY_JITTER = 0.02


class Reference(NamedTuple):
    """Contents of ``reference.npz``."""

    x: np.ndarray  # (569, 30) float32 raw features
    y: np.ndarray  # (569,) int64, 0 = malignant, 1 = benign
    anchor_malignant: np.ndarray  # row index of each anchor's malignant end
    anchor_benign: np.ndarray  # row index of each anchor's benign end
    anchor_t: np.ndarray  # where the baseline's decision flips along the segment (0..1)
    drift_width: float  # half width of the drifted band, in units of t


def load_example_pair_dir() -> Path:
    """Directory of the committed example pair (``sentinel/examples/triage``)."""
    return Path(__file__).resolve().parent / "triage"


@lru_cache(maxsize=4)
def _load(directory: str) -> Reference:
    with np.load(Path(directory) / "reference.npz", allow_pickle=False) as z:
        return Reference(
            x=z["x"].astype(np.float32),
            y=z["y"].astype(np.int64),
            anchor_malignant=z["anchor_malignant"].astype(np.int64),
            anchor_benign=z["anchor_benign"].astype(np.int64),
            anchor_t=z["anchor_t"].astype(np.float64),
            drift_width=float(z["drift_width"]),
        )


def load_reference(directory: str | Path | None = None) -> Reference:
    """Load (and cache) ``reference.npz`` from ``directory`` (default: the committed pair)."""
    return _load(str(Path(directory) if directory is not None else load_example_pair_dir()))


def ordinary_traffic(
    rng: np.random.Generator, n: int, *, reference: Reference | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows drawn (with replacement) from the data set, each feature multiplied by
    ``1 + N(0, 0.02)``. Returns ``(x float32 (n, 30), labels int64 (n,))``."""
    ref = reference or load_reference()
    rows = rng.integers(0, len(ref.y), size=n)
    jitter = 1.0 + ORDINARY_JITTER * rng.standard_normal((n, ref.x.shape[1]))
    x = (ref.x[rows].astype(np.float64) * jitter).astype(np.float32)
    return x, ref.y[rows].copy()


def drifted_traffic(
    rng: np.random.Generator, n: int, *, reference: Reference | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows near the baseline's decision boundary, where the int8 candidate disagrees.

    Each row picks a boundary anchor (a malignant row ``m``, a benign row ``b`` and the
    point ``t*`` where the baseline flips along ``m + t (b - m)``) and returns
    ``m + t (b - m)`` for ``t`` uniform in ``t* +- drift_width``. The width is set by the
    build script from how far the candidate's boundary sits from the baseline's on the same
    segments, so the band straddles both.

    Labels are best effort: the class of the nearest data-set row in standardised feature
    space (the true class of an interpolated tumour is unknowable).
    """
    ref = reference or load_reference()
    k = rng.integers(0, len(ref.anchor_t), size=n)
    t = ref.anchor_t[k] + ref.drift_width * rng.uniform(-1.0, 1.0, size=n)
    xm = ref.x[ref.anchor_malignant[k]].astype(np.float64)
    xb = ref.x[ref.anchor_benign[k]].astype(np.float64)
    x = (xm + t[:, None] * (xb - xm)).astype(np.float32)
    return x, nearest_class(x, ref)


def nearest_class(x: np.ndarray, reference: Reference | None = None) -> np.ndarray:
    """Label of the nearest data-set row (1-NN, standardised Euclidean distance)."""
    ref = reference or load_reference()
    mean = ref.x.mean(axis=0, dtype=np.float64)
    std = ref.x.std(axis=0, dtype=np.float64) + 1e-12
    a = (ref.x - mean) / std
    labels = np.empty(len(x), dtype=np.int64)
    # Chunked so memory stays at chunk x 569 distances whatever n is.
    for lo in range(0, len(x), 4096):
        q = (x[lo : lo + 4096] - mean) / std
        d2 = (q * q).sum(1)[:, None] - 2.0 * q @ a.T + (a * a).sum(1)[None, :]
        labels[lo : lo + 4096] = ref.y[np.argmin(d2, axis=1)]
    return labels

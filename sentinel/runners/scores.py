"""A model's raw scores as what the checks read: float64 class probabilities per row (or an
independent probability per label for multilabel models), plus how far a probability output was
from summing to 1 before it was renormalised.

Why a tolerance at all: an int8 QDQ model whose softmax output is itself quantized returns rows
summing to 0.988..1.008 (1/255 steps), not 1. That is evidence about the candidate (recorded as
``deviation``), not a reason to stop a revalidation. A logits model configured as probabilities
is off by far more and is still refused.
"""
from __future__ import annotations

import numpy as np

OUTPUT_MODES = ("probabilities", "logits", "multilabel", "multilabel_logits")

#: How far a row of a ``probabilities`` output may sum from 1 and still be accepted (then
#: renormalised): a few 8-bit quantization steps (1/255 each) of a quantized softmax.
QUANTIZED_SUM_TOLERANCE = 0.03
# per-label probabilities may miss [0, 1] by float rounding only
_LABEL_TOLERANCE = 1e-4


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64; subtracting the row max keeps ``exp`` from overflowing."""
    z = logits.astype(np.float64, copy=True)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic in float64, without overflow for large negative logits."""
    z = logits.astype(np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def convert_scores(raw: np.ndarray, *, output: str, n_outputs: int, n_rows: int, where: str) -> tuple[np.ndarray, float]:
    """Validate a model's raw output and turn it into float64 scores of ``output``'s kind; also
    return the deviation (max |row sum - 1| before renormalising; 0 for other kinds).

    ``where`` names the model in error messages (usually ``"<role> <path>"``).
    """
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape != (n_rows, n_outputs):
        raise ValueError(f"{where}: expected output of shape ({n_rows}, {n_outputs}), got {raw.shape}")
    if output == "logits":
        return softmax(raw), 0.0
    if output == "multilabel_logits":
        return sigmoid(raw), 0.0
    if output == "multilabel":
        return _labels(raw, where), 0.0
    return _probabilities(raw, where)


def _probabilities(raw: np.ndarray, where: str) -> tuple[np.ndarray, float]:
    # kept to a few array operations: this runs on every timed call of the latency comparison
    proba = raw.astype(np.float64)
    if not len(proba):
        return proba, 0.0
    sums = proba.sum(axis=1)
    deviation = float(np.abs(sums - 1.0).max())   # NaN when a row is: refused below
    low = float(proba.min())
    # A logits model configured as "probabilities" would otherwise silently feed garbage into
    # every downstream check, so refuse loudly.
    if not (deviation <= QUANTIZED_SUM_TOLERANCE and low >= -QUANTIZED_SUM_TOLERANCE):
        raise ValueError(
            f"{where}: output does not look like probabilities (row sums {sums.min():.4g}..{sums.max():.4g},"
            f" min {low:.4g}; accepted: within {QUANTIZED_SUM_TOLERANCE:g} of 1);"
            f" configure output='logits' if the model returns logits"
        )
    if low < 0:
        np.clip(proba, 0.0, None, out=proba)
        sums = proba.sum(axis=1)
    proba /= sums[:, None]
    return proba, deviation


def _labels(raw: np.ndarray, where: str) -> np.ndarray:
    proba = raw.astype(np.float64)
    if len(proba) and not (np.all(np.isfinite(proba)) and proba.min() >= -_LABEL_TOLERANCE
                           and proba.max() <= 1 + _LABEL_TOLERANCE):
        raise ValueError(f"{where}: output does not look like per-label probabilities (values "
                         f"{proba.min():.4g}..{proba.max():.4g}, expected 0..1); configure "
                         f"output='multilabel_logits' if the model returns logits")
    return np.clip(proba, 0.0, 1.0)


def to_probabilities(raw: np.ndarray, *, output: str, n_outputs: int, n_rows: int, where: str) -> np.ndarray:
    """:func:`convert_scores` without the deviation (for callers that only need the scores)."""
    return convert_scores(raw, output=output, n_outputs=n_outputs, n_rows=n_rows, where=where)[0]

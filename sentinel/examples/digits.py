"""Synthetic image traffic for the ``digits`` example pair; pure numpy, seeded by the caller.

* :func:`ordinary_traffic` - images of scikit-learn's 8x8 digits (scaled to [0, 1], NCHW
  ``(n, 1, 8, 8)``) with a little sensor noise: what the CNN was built for.
* :func:`drifted_traffic` - the same images from a dimmer, noisier camera (contrast halved,
  more noise): an image-drift scenario, where the int8 candidate's fixed activation ranges fit
  the inputs worse.

The images live in ``digits/reference.npz`` (written by ``scripts/make_digits_example.py``), so
scikit-learn is not needed at runtime. Flip rates of the committed candidates on both kinds of
traffic are in ``digits/meta.json``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

CLASSES = [str(d) for d in range(10)]
INPUT = "image"
NOISE = 0.03
DRIFT_CONTRAST = 0.5
DRIFT_NOISE = 0.08
REGIONS = ["eu", "us", "apac"]


class Reference(NamedTuple):
    x: np.ndarray       # (1797, 1, 8, 8) float32 in [0, 1]
    y: np.ndarray       # (1797,) int64 digit
    test: np.ndarray    # row indices of the held-out split


def example_dir() -> Path:
    """Directory of the committed digits pair (``sentinel/examples/digits``)."""
    return Path(__file__).resolve().parent / "digits"


@lru_cache(maxsize=4)
def _load(directory: str) -> Reference:
    with np.load(Path(directory) / "reference.npz", allow_pickle=False) as z:
        return Reference(x=z["x"].astype(np.float32), y=z["y"].astype(np.int64), test=z["test"].astype(np.int64))


def load_reference(directory: str | Path | None = None) -> Reference:
    return _load(str(Path(directory) if directory is not None else example_dir()))


def _noisy(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(x + sigma * rng.standard_normal(x.shape), 0.0, 1.0).astype(np.float32)


def ordinary_traffic(rng: np.random.Generator, n: int, *, reference: Reference | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images drawn with replacement, plus N(0, 0.03) noise, clipped to [0, 1]."""
    ref = reference or load_reference()
    rows = rng.integers(0, len(ref.y), size=n)
    return _noisy(ref.x[rows], NOISE, rng), ref.y[rows].copy()


def drifted_traffic(rng: np.random.Generator, n: int, *, reference: Reference | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images with contrast halved and N(0, 0.08) noise: a dimmer, noisier camera."""
    ref = reference or load_reference()
    rows = rng.integers(0, len(ref.y), size=n)
    return _noisy(ref.x[rows] * DRIFT_CONTRAST, DRIFT_NOISE, rng), ref.y[rows].copy()


def traffic_messages(rng: np.random.Generator, n: int, *, start: int = 0, drifted: bool = False,
                     prefix: str = "img") -> list[dict]:
    """Traffic as Sentinel messages: ``{"id", "model", "inputs": {"image": [[[...]]]}, "attributes",
    "label"}`` (the label is the digit's name; send it on the labels topic)."""
    x, y = (drifted_traffic if drifted else ordinary_traffic)(rng, n)
    return [{"id": f"{prefix}-{i}", "model": "digits",
             "inputs": {INPUT: np.round(img.astype(np.float64), 4).tolist()},
             "attributes": {"region": REGIONS[i % 3]}, "label": CLASSES[int(label)]}
            for i, (img, label) in enumerate(zip(x, y), start=start)]

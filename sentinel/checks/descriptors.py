"""Per-row descriptors of inputs that are not a table: what ``data_drift`` tests on text, images
and other tensors. A KS test per token position or per pixel would test thousands of columns
that mean nothing alone (position 17 holds a different word in every row) and drown a real
change in the family correction; a handful of descriptors of each row (its length in tokens,
its share of unknown tokens, an image's per-channel mean and brightness) is what changes when
traffic changes, and what a person can read in the report.

Every function returns ``{column name: (n,) float64}`` in a fixed order; NaN marks a row where a
descriptor is unknown (a row that came as tensors has no characters to count), and the drift
test leaves those rows out of that column.
"""
from __future__ import annotations

import string
from typing import Any, Mapping, Sequence

import numpy as np

from ..tensors import Signature
from .data import mask_input, token_ids_input

LUMA = np.array([0.299, 0.587, 0.114])     # ITU-R BT.601 weights: brightness of an RGB image
PUNCTUATION = frozenset(string.punctuation)
CHUNK = 256                                # images per step of image_descriptors


def text_descriptors(rows: Sequence[Mapping[str, np.ndarray]] | None, texts: Sequence[str | None] | None,
                     text_stats: Mapping[str, np.ndarray] | None, signature: Signature | None) -> dict[str, np.ndarray]:
    """Token descriptors (from the tokenizer's ``text_stats``, else counted from the id rows:
    ``n_tokens`` from the attention mask or the ids that are not padding, ``distinct_share``)
    and character descriptors of the raw texts (``n_chars``, ``n_words``, the shares of
    non-ASCII, digit, upper-case and punctuation characters)."""
    n = _count(rows, texts, text_stats)
    out: dict[str, np.ndarray] = {}
    for key, values in (text_stats or {}).items():
        arr = np.asarray(values, dtype=float).reshape(-1)
        if arr.size != n:
            raise ValueError(f"text_stats[{key!r}] has {arr.size} values for {n} rows")
        out[key] = arr
    if rows is not None and "n_tokens" not in out:
        out.update(_token_counts(rows, signature))
    if texts is not None:
        for key, values in _char_descriptors(texts).items():
            out.setdefault(key, values)
    return out


def _count(*sources: Any) -> int:
    for s in sources:
        if isinstance(s, Mapping):
            return len(next(iter(s.values()))) if s else 0
        if s is not None:
            return len(s)
    return 0


def _token_counts(rows: Sequence[Mapping[str, np.ndarray]], signature: Signature | None) -> dict[str, np.ndarray]:
    ids_name = token_ids_input(signature) or ("input_ids" if rows and "input_ids" in rows[0] else None)
    if ids_name is None:
        return {}
    mask_name = mask_input(signature) or ("attention_mask" if rows and "attention_mask" in rows[0] else None)
    pad = signature.spec(ids_name).pad if signature is not None and ids_name in signature.names else 0
    n_tokens, distinct = np.empty(len(rows)), np.empty(len(rows))
    for i, r in enumerate(rows):
        ids = np.asarray(r[ids_name]).reshape(-1)
        if mask_name and mask_name in r:
            mask = np.asarray(r[mask_name]).reshape(-1)[:ids.size] != 0
            keep = np.zeros(ids.size, dtype=bool)
            keep[:mask.size] = mask
        else:
            keep = ids != pad
        real = ids[keep]
        n_tokens[i] = real.size
        distinct[i] = np.unique(real).size / real.size if real.size else np.nan
    return {"n_tokens": n_tokens, "distinct_share": distinct}


def _char_descriptors(texts: Sequence[str | None]) -> dict[str, np.ndarray]:
    keys = ("n_chars", "n_words", "non_ascii_share", "digit_share", "upper_share", "punctuation_share")
    out = {k: np.full(len(texts), np.nan) for k in keys}
    for i, t in enumerate(texts):
        if t is None:
            continue
        size = len(t)
        out["n_chars"][i], out["n_words"][i] = size, len(t.split())
        if size:
            out["non_ascii_share"][i] = sum(ord(ch) > 127 for ch in t) / size
            out["digit_share"][i] = sum(ch.isdigit() for ch in t) / size
            out["upper_share"][i] = sum(ch.isupper() for ch in t) / size
            out["punctuation_share"][i] = sum(ch in PUNCTUATION for ch in t) / size
    return out


def channel_axis(layout: str) -> int:
    """The channel axis of one image row (no batch dimension) in ``layout``."""
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"image_layout must be NCHW or NHWC, not {layout!r}")
    return 0 if layout == "NCHW" else 2


def image_input(signature: Signature | None) -> str | None:
    """The input holding the image: the first float input with three per-row dimensions."""
    for spec in signature.inputs if signature is not None else ():
        if not spec.is_integer and len(spec.shape) == 3:
            return spec.name
    return None


def image_batch(inputs: np.ndarray | None, rows: Sequence[Mapping[str, np.ndarray]] | None,
                signature: Signature | None) -> np.ndarray | list[np.ndarray]:
    """The images of a window: the stacked ``(n, ...)`` array when there is one, else each row's
    image array (a list when sizes differ)."""
    if inputs is not None:
        return np.asarray(inputs)
    name = image_input(signature) or (next(iter(rows[0])) if rows else None)
    images = [np.asarray(r[name], dtype=float) for r in rows or ()]
    if images and all(a.shape == images[0].shape for a in images):
        return np.stack(images)
    return images


def image_descriptors(images: np.ndarray | list[np.ndarray], layout: str = "NCHW") -> dict[str, np.ndarray]:
    """Per row: each channel's mean and standard deviation (when there are several channels),
    brightness (BT.601 luma of RGB, the channel mean otherwise) and contrast (standard deviation
    of that brightness image)."""
    if isinstance(images, list):
        parts = [image_descriptors(a[None], layout) for a in images]
        keys = list(dict.fromkeys(k for p in parts for k in p))
        return {k: np.asarray([p[k][0] if k in p else np.nan for p in parts]) for k in keys}
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"images must have 3 dimensions per row (C,H,W or H,W,C), got {list(x.shape[1:])}")
    chunks = [_image_chunk(x[i:i + CHUNK], layout) for i in range(0, len(x), CHUNK)] or [_image_chunk(x, layout)]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _image_chunk(x: np.ndarray, layout: str) -> dict[str, np.ndarray]:
    """:func:`image_descriptors` of a few rows (float32 pixels, float64 sums: a 10,000-image
    window never becomes one float64 copy)."""
    c_ax = 1 + channel_axis(layout)
    x = np.moveaxis(x.astype(np.float32, copy=False), c_ax, 1).reshape(x.shape[0], x.shape[c_ax], -1)
    out: dict[str, np.ndarray] = {}
    for c in range(x.shape[1] if x.shape[1] > 1 else 0):     # one channel: its mean/std are brightness/contrast
        out[f"ch{c}_mean"] = x[:, c].mean(axis=1, dtype=np.float64)
        out[f"ch{c}_std"] = x[:, c].std(axis=1, dtype=np.float64)
    gray = np.tensordot(LUMA.astype(np.float32), x, axes=([0], [1])) if x.shape[1] == 3 else x.mean(axis=1)
    out["brightness"], out["contrast"] = gray.mean(axis=1, dtype=np.float64), gray.std(axis=1, dtype=np.float64)
    return out


def tensor_descriptors(rows: Sequence[Mapping[str, np.ndarray]], signature: Signature | None) -> dict[str, np.ndarray]:
    """Per input: the row's mean and standard deviation, and its length along the first dynamic
    dimension when the input has one."""
    names = list(signature.names) if signature is not None else list(rows[0]) if rows else []
    out: dict[str, np.ndarray] = {}
    for name in names:
        arrays = [np.asarray(r[name], dtype=float) for r in rows]
        out[f"{name}.mean"] = np.asarray([a.mean() if a.size else np.nan for a in arrays])
        out[f"{name}.std"] = np.asarray([a.std() if a.size else np.nan for a in arrays])
        spec = signature.spec(name) if signature is not None else None
        dyn = [i for i, d in enumerate(spec.shape) if d is None] if spec is not None else []
        if dyn:
            out[f"{name}.length"] = np.asarray([a.shape[dyn[0]] if a.ndim > dyn[0] else np.nan for a in arrays],
                                               dtype=float)
    return out


def window_descriptors(window: Any, modality: str, signature: Signature | None, layout: str) -> dict[str, np.ndarray]:
    """The descriptors of ``window`` (a RunData or a ReferenceData: ``inputs``, ``rows``,
    ``texts``, ``text_stats``) for ``modality`` (text, image or tensor)."""
    rows = window.rows
    if modality == "text":
        return text_descriptors(rows, window.texts, window.text_stats, signature)
    if modality == "image":
        return image_descriptors(image_batch(window.inputs, rows, signature), layout)
    if rows is None and window.inputs is not None:
        name = signature.names[0] if signature is not None and signature.inputs else "input"
        rows = [{name: r} for r in np.asarray(window.inputs)]
    return tensor_descriptors(rows or [], signature)

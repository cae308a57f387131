"""Seeded perturbations that fit the input, for ``robustness``: Gaussian noise and feature
dropout on float tables, token dropout and neighbour swaps on token ids (special tokens and
padding kept), character typos on raw text (re-encoded with the pair's tokenizer), Gaussian
noise, a brightness change and a small shift on images, noise on the float inputs of other
tensors. Integer inputs never get Gaussian noise: an id of 1041.3 is not a nearby token.

Each :class:`Perturbation` names its slice (``token_dropout=0.1``), the rows of the window it
perturbs (typos need a raw text) and makes, when called, what ``RunData.predict`` takes. The
random draws happen in that call, in the order the perturbations are listed, so a replay with
the same seeds perturbs identically.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..tensors import Signature, cast
from .data import RunData, mask_input, model_feed, token_ids_input
from .descriptors import channel_axis, image_input

Row = dict[str, np.ndarray]


@dataclass
class Perturbation:
    label: str                      # the slice: "noise=0.1"
    rows: np.ndarray                # positions in the perturbed subset this perturbation covers
    make: Callable[[], Any]         # -> what predict takes for those rows


def perturbations(data: RunData, idx: np.ndarray, params: Mapping[str, Any], rng: np.random.Generator) -> list[Perturbation]:
    """The perturbations that fit ``data``'s inputs, on the window rows ``idx``."""
    if data.modality == "text":
        return _text(data, idx, params, rng)
    if data.modality == "image":
        return _image(data, idx, params, rng)
    if data.modality == "tabular" and (data.inputs is not None or data.rows is not None):
        return _tabular(data, idx, params, rng)
    return _tensor(data, idx, params, rng)


# -- tables -------------------------------------------------------------------------------------

def _tabular(data: RunData, idx: np.ndarray, params: Mapping[str, Any], rng: np.random.Generator) -> list[Perturbation]:
    spec = data.signature.inputs[0] if data.signature is not None and data.signature.inputs else None
    if data.inputs is not None:
        x, shape = data.flat_inputs()[idx].astype(np.float64), data.inputs.shape[1:]
    else:
        arrays = [np.asarray(data.rows[i][spec.name if spec else next(iter(data.rows[i]))]) for i in idx]
        shape = arrays[0].shape if arrays else (0,)
        x = np.stack([a.reshape(-1) for a in arrays]).astype(np.float64) if arrays else np.zeros((0, 0))
    integer = spec is not None and spec.is_integer
    dtype = np.dtype(spec.dtype) if spec is not None else np.float32
    std, mean = x.std(axis=0), x.mean(axis=0)
    fill = np.round(mean) if integer else mean
    every = np.arange(len(idx))

    def feed(xp: np.ndarray) -> Any:
        out = xp.astype(dtype).reshape((len(idx), *shape))
        return out if data.inputs is not None or spec is None else model_feed(
            [{spec.name: r} for r in out], data.signature)
    found = [] if integer else [
        Perturbation(f"noise={s:g}", every, lambda s=s: feed(x + rng.standard_normal(x.shape) * std * float(s)))
        for s in params["noise_scales"]]
    found += [Perturbation(f"dropout={p:g}", every, lambda p=p: feed(np.where(rng.random(x.shape) < float(p), fill, x)))
              for p in params["dropout"]]
    return found


# -- text ---------------------------------------------------------------------------------------

def _text(data: RunData, idx: np.ndarray, params: Mapping[str, Any], rng: np.random.Generator) -> list[Perturbation]:
    found: list[Perturbation] = []
    rows = [data.rows[i] for i in idx] if data.rows is not None else None
    ids_name = params.get("ids_input") or token_ids_input(data.signature) or (
        "input_ids" if rows and "input_ids" in rows[0] else None)
    if rows and ids_name is not None:
        tokens = TokenEdit(ids_name, mask_input(data.signature), _pad(data.signature, ids_name), params)
        every = np.arange(len(idx))
        found += [Perturbation(f"token_dropout={p:g}", every, lambda p=p: model_feed(
            [tokens.dropout(r, float(p), rng) for r in rows], data.signature)) for p in params["token_dropout"]]
        found += [Perturbation(f"token_swap={p:g}", every, lambda p=p: model_feed(
            [tokens.swap(r, float(p), rng) for r in rows], data.signature)) for p in params["token_swaps"]]
    if data.texts is not None and data.encode_texts is not None:
        with_text = np.asarray([j for j, i in enumerate(idx) if data.texts[i] is not None], dtype=int)
        texts = [data.texts[idx[j]] for j in with_text]
        if texts:
            found += [Perturbation(f"typo={q:g}", with_text, lambda q=q: model_feed(
                data.encode_texts([typos(t, float(q), rng) for t in texts]), data.signature))
                for q in params["typos"]]
    return found


def _pad(signature: Signature | None, name: str) -> float:
    return signature.spec(name).pad if signature is not None and name in signature.names else 0


class TokenEdit:
    """Token-level edits of one row: the ids input and every input aligned with it (same length
    along the first dimension: attention mask, token type ids) change together. Protected
    positions never change: padding (mask 0 or the pad id), the first and last real token
    (``keep_ends``: CLS and SEP of BERT-style tokenizers) and ids in ``keep_ids``."""

    def __init__(self, ids_name: str, mask_name: str | None, pad: float, params: Mapping[str, Any]):
        self.ids_name, self.mask_name, self.pad = ids_name, mask_name, pad
        self.unk_id, self.keep_ids = params.get("unk_id"), list(params.get("keep_ids") or [])
        self.keep_ends = bool(params.get("keep_ends", True))

    def editable(self, row: Mapping[str, np.ndarray]) -> np.ndarray:
        ids = np.asarray(row[self.ids_name]).reshape(-1)
        real = ids != self.pad
        if self.mask_name and self.mask_name in row:
            mask = np.asarray(row[self.mask_name]).reshape(-1)
            m = min(mask.size, ids.size)
            real = np.zeros(ids.size, dtype=bool)
            real[:m] = mask[:m] != 0
        ok = real & ~np.isin(ids, self.keep_ids)
        where = np.flatnonzero(real)
        if self.keep_ends and where.size:
            ok[[where[0], where[-1]]] = False
        return ok

    def aligned(self, row: Mapping[str, np.ndarray]) -> list[str]:
        n = np.asarray(row[self.ids_name]).shape[0]
        return [k for k, v in row.items() if np.asarray(v).ndim >= 1 and np.asarray(v).shape[0] == n]

    def dropout(self, row: Mapping[str, np.ndarray], p: float, rng: np.random.Generator) -> Row:
        """Each editable token with probability ``p`` becomes ``unk_id`` (when given) or is removed."""
        hit = self.editable(row) & (rng.random(np.asarray(row[self.ids_name]).shape[0]) < p)
        out = {k: np.asarray(v).copy() for k, v in row.items()}
        if self.unk_id is not None:
            out[self.ids_name][hit] = self.unk_id
            return out
        for k in self.aligned(row):
            out[k] = out[k][~hit]
        return out

    def swap(self, row: Mapping[str, np.ndarray], p: float, rng: np.random.Generator) -> Row:
        """Each editable token with probability ``p`` trades places with the next editable one."""
        ok = self.editable(row)
        draws = rng.random(ok.size) < p
        order = np.arange(ok.size)
        i = 0
        while i < ok.size - 1:
            if draws[i] and ok[i] and ok[i + 1]:
                order[i], order[i + 1] = i + 1, i
                i += 2
                continue
            i += 1
        out = {k: np.asarray(v).copy() for k, v in row.items()}
        for k in self.aligned(row):
            out[k] = out[k][order]
        return out


def typos(text: str, q: float, rng: np.random.Generator) -> str:
    """Each letter with probability ``q`` swapped with the next letter, dropped or doubled (one of
    the three, equally likely): the typing mistakes real messages carry."""
    chars, out, i = list(text), [], 0
    draws, kinds = rng.random(len(chars)), rng.integers(0, 3, len(chars))
    while i < len(chars):
        ch = chars[i]
        if not (ch.isalpha() and draws[i] < q):
            out.append(ch)
        elif kinds[i] == 0 and i + 1 < len(chars) and chars[i + 1].isalpha():
            out += [chars[i + 1], ch]
            i += 1
        elif kinds[i] == 1 and len(chars) > 1:
            pass
        else:
            out += [ch, ch]
        i += 1
    return "".join(out)


# -- images -------------------------------------------------------------------------------------

def _image(data: RunData, idx: np.ndarray, params: Mapping[str, Any], rng: np.random.Generator) -> list[Perturbation]:
    """Noise, brightness and shift on each image (rows of different sizes each on their own);
    the scales come from the whole window: each channel's sd, the 1-99% pixel range."""
    name = image_input(data.signature) or (next(iter(data.rows[0])) if data.rows else "input")
    images = ([np.asarray(a, dtype=np.float64) for a in np.asarray(data.inputs)[idx]] if data.inputs is not None
              else [np.asarray(data.rows[i][name], dtype=np.float64) for i in idx])
    if not images or any(a.ndim != 3 for a in images):
        return []
    c_ax = channel_axis(data.image_layout)
    by_channel = np.concatenate([np.moveaxis(a, c_ax, 0).reshape(a.shape[c_ax], -1) for a in images], axis=1)
    std = by_channel.std(axis=1)
    std_shape = [1, 1, 1]
    std_shape[c_ax] = -1
    std = std.reshape(std_shape)
    lo, hi = float(by_channel.min()), float(by_channel.max())
    span = float(np.percentile(by_channel, 99) - np.percentile(by_channel, 1))
    hw = (0, 1) if data.image_layout == "NHWC" else (1, 2)
    every = np.arange(len(idx))

    def feed(new: list[np.ndarray]) -> Any:
        if data.inputs is not None:
            return np.stack(new).astype(np.asarray(data.inputs).dtype)
        spec = data.signature.spec(name) if data.signature is not None and name in data.signature.names else None
        return model_feed([{**data.rows[i], name: cast(new[j], spec) if spec else new[j]} for j, i in enumerate(idx)],
                          data.signature)
    found = [Perturbation(f"noise={s:g}", every, lambda s=s: feed(
        [a + rng.standard_normal(a.shape) * std * float(s) for a in images])) for s in params["noise_scales"]]
    found += [Perturbation(f"brightness={b:g}", every, lambda b=b: feed(
        [np.clip(a + float(b) * span, lo, hi) for a in images])) for b in params["brightness"]]
    found += [Perturbation(f"shift={k:d}", every, lambda k=k: feed(
        [shift_image(a, int(k), hw, int(d)) for a, d in zip(images, rng.integers(0, 4, len(images)))]))
        for k in params["shifts"]]
    return found


def shift_image(img: np.ndarray, k: int, axes: tuple[int, int], direction: int) -> np.ndarray:
    """One image moved ``k`` pixels along its height (direction 0/1: down/up) or width (2/3:
    right/left) axis in ``axes``, the edge pixels repeated into the space left behind."""
    axis, sign = axes[direction // 2], 1 if direction % 2 == 0 else -1
    size = img.shape[axis]
    src = np.clip(np.arange(size) - sign * min(k, size - 1), 0, size - 1)
    return np.take(img, src, axis=axis)


# -- other tensors ------------------------------------------------------------------------------

def _tensor(data: RunData, idx: np.ndarray, params: Mapping[str, Any], rng: np.random.Generator) -> list[Perturbation]:
    if data.rows is None or data.signature is None:
        return []
    rows = [data.rows[i] for i in idx]
    floats = [s for s in data.signature.inputs if not s.is_integer]
    if not floats or not rows:
        return []
    std = {s.name: float(np.concatenate([np.asarray(r[s.name], dtype=float).reshape(-1) for r in rows]).std())
           for s in floats}

    def noisy(scale: float) -> Any:
        out = []
        for r in rows:
            new = dict(r)
            for s in floats:
                a = np.asarray(r[s.name], dtype=float)
                new[s.name] = cast(a + rng.standard_normal(a.shape) * std[s.name] * scale, s)
            out.append(new)
        return model_feed(out, data.signature)
    return [Perturbation(f"noise={s:g}", np.arange(len(idx)), lambda s=s: noisy(float(s))) for s in params["noise_scales"]]


def describe_inputs(data: RunData) -> str:
    """The inputs in words, for a result saying nothing fits them."""
    if data.signature is not None:
        return f"{data.modality} inputs {data.signature.describe()}"
    return f"{data.modality} inputs"


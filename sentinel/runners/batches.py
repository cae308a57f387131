"""Model input batches checked against a :class:`~sentinel.tensors.Signature`: names, ranks and
fixed dimensions, each input cast to the dtype the model declares; and the probe batch a runner
runs at load, valid for any signature."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..tensors import Batch, Signature, TensorSpec, cast

#: length given to dynamic dimensions (e.g. sequence length) of the probe batch run at load
PROBE_LENGTH = 8


def _shape_text(spec: TensorSpec) -> str:
    return "(n, " + ", ".join("?" if d is None else str(d) for d in spec.shape) + ")"


def _check_array(arr: np.ndarray, spec: TensorSpec, where: str) -> None:
    if arr.ndim != len(spec.shape) + 1:
        raise ValueError(f"{where}: input {spec.name!r} has {arr.ndim} dimension(s), the model expects "
                         f"{len(spec.shape) + 1} (expected input of shape {_shape_text(spec)}, got {arr.shape})")
    for i, (got, want) in enumerate(zip(arr.shape[1:], spec.shape), start=1):
        if want is not None and got != want:
            raise ValueError(f"{where}: input {spec.name!r} dimension {i} is {got}, the model expects {want} "
                             f"(expected input of shape {_shape_text(spec)}, got {arr.shape})")
        if want is None and got < 1 and arr.shape[0]:
            raise ValueError(f"{where}: input {spec.name!r} dimension {i} is empty")


def check_batch(x: np.ndarray | Mapping[str, Any], signature: Signature, where: str) -> Batch:
    """``x`` (a stacked array for a single-input model, or input name -> array with the batch
    dimension first) as a batch the model takes: every input present, of the right rank and fixed
    dimensions, cast to its declared dtype (whole numbers for integer inputs), C-contiguous.
    Raises ValueError naming the input and dimension."""
    if isinstance(x, np.ndarray) and len(signature.inputs) == 1:
        spec = signature.inputs[0]
        if x.dtype == spec.dtype and x.flags.c_contiguous and spec.misfit(x.shape[1:]) is None:
            return {spec.name: x}   # the common case, kept cheap: it runs on every timed call
    if not isinstance(x, Mapping):
        if len(signature.inputs) != 1:
            raise ValueError(f"{where}: the model takes {len(signature.inputs)} inputs ({', '.join(signature.names)}): "
                             f"pass a mapping of input name to array, not one array")
        x = {signature.inputs[0].name: x}
    unknown = [k for k in x if k not in signature.names]
    if unknown:
        raise ValueError(f"{where}: unknown input {unknown[0]!r} (the model takes {', '.join(signature.names)})")
    missing = [n for n in signature.names if n not in x]
    if missing:
        raise ValueError(f"{where}: missing input {missing[0]!r} (the model takes {', '.join(signature.names)})")
    out: Batch = {}
    for spec in signature.inputs:
        arr = np.asarray(x[spec.name])
        _check_array(arr, spec, where)
        try:
            out[spec.name] = np.ascontiguousarray(cast(arr, spec))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    sizes = {name: len(a) for name, a in out.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{where}: inputs have different batch sizes {sizes}")
    return out


def batch_size(batch: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def probe_batch(signature: Signature, n: int = 2, length: int = PROBE_LENGTH) -> Batch:
    """A batch of ``n`` rows any model of ``signature`` can run: dynamic dimensions of
    ``length``; floats and ids zero, inputs named like a mask all ones (a fully masked row
    divides by zero in a mean pool)."""
    out: Batch = {}
    for spec in signature.inputs:
        shape = (n, *(length if d is None else d for d in spec.shape))
        fill = 1 if "mask" in spec.name.lower() else 0
        out[spec.name] = np.full(shape, fill, dtype=np.dtype(spec.dtype))
    return out


def chunked(batch: Batch, size: int) -> list[tuple[Batch, int]]:
    """``batch`` in chunks of exactly ``size`` rows for a model with a fixed batch dimension, the
    last filled up by repeating its last row (always a valid row); with each chunk's real count."""
    n = batch_size(batch)
    parts = []
    for start in range(0, n, size):
        chunk = {k: v[start:start + size] for k, v in batch.items()}
        real = batch_size(chunk)
        if real < size:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], size - real, axis=0)]) for k, v in chunk.items()}
        parts.append((chunk, real))
    return parts

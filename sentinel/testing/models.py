"""Tiny real models of each kind Sentinel watches, written into a directory for tests: the same
network as a ``torch.export`` archive, a float ONNX file and an int8 ONNX file, so runner
behaviour (signatures, casting, batching, quantized outputs) is tested on real engines.

- ``mlp``: ``features`` float32 ``(n, 30)`` -> 2 classes.
- ``text``: ``input_ids`` + ``attention_mask`` int64 ``(n, seq)`` (batch and sequence length
  dynamic) -> 3 classes, through an embedding, a masked mean pool and a linear layer; a second
  output ``embedding`` is the pooled vector (index ``"1"`` in torch, or its key with
  ``named_outputs=True``).
- ``cnn``: ``pixels`` NCHW float32 ``(n, 1, 8, 8)`` -> 10 classes.

The int8 files are made the way teams make them: dynamic quantization for ``mlp`` and ``text``,
static QDQ with a small calibration set for ``cnn``, whose softmax output is itself quantized
(its rows sum to 1 only within 8-bit steps). Weights come from a fixed seed; building all three
kinds takes a few seconds.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..tensors import Row

KINDS = ("mlp", "text", "cnn")
HEADS = ("softmax", "logits", "sigmoid")
VOCAB = 50
MAX_LEN = 12
N_CLASSES = {"mlp": 2, "text": 3, "cnn": 10}
#: graph output holding the pooled embedding of the text model, per runtime
TEXT_EMBEDDING = {"torch": "1", "onnxruntime": "embedding"}


@dataclass(frozen=True)
class TinyModel:
    """Files of one built model. ``output``: the runner output kind its head needs."""
    kind: str
    pt2: Path
    onnx: Path
    int8: Path | None
    output: str
    n_classes: int

    def path(self, runtime: str) -> Path:
        return self.pt2 if runtime == "torch" else self.onnx


def build(kind: str, directory: str | Path, *, head: str = "softmax", quantize: bool = True,
          named_outputs: bool = False, seed: int = 0) -> TinyModel:
    """Write model ``kind`` (one of :data:`KINDS`) with output ``head`` (softmax probabilities,
    raw logits or per-label sigmoid) into ``directory`` as ``<kind>-<head>.pt2/.onnx/.int8.onnx``."""
    import torch

    if kind not in KINDS or head not in HEADS:
        raise ValueError(f"kind must be one of {KINDS} and head one of {HEADS}, got {kind!r}, {head!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    module = _MODULES[kind](head, named_outputs).eval()
    stem = directory / f"{kind}-{head}{'-named' if named_outputs else ''}"
    example = _example(kind)
    pt2, onnx_path = stem.with_suffix(".pt2"), stem.with_suffix(".onnx")
    _export_torch(module, example, pt2)
    _export_onnx(module, example, onnx_path)
    int8 = _quantize(kind, onnx_path, stem.with_suffix(".int8.onnx"), seed) if quantize else None
    output = {"softmax": "probabilities", "logits": "logits", "sigmoid": "multilabel"}[head]
    return TinyModel(kind, pt2, onnx_path, int8, output, N_CLASSES[kind])


def rows(kind: str, n: int, *, seed: int = 0) -> list[Row]:
    """``n`` input rows for model ``kind``; text rows have lengths 1..MAX_LEN (unpadded)."""
    rng = np.random.default_rng(seed)
    if kind == "mlp":
        return [{"features": rng.standard_normal(30).astype(np.float32)} for _ in range(n)]
    if kind == "cnn":
        return [{"pixels": rng.standard_normal((1, 8, 8)).astype(np.float32)} for _ in range(n)]
    out = []
    for _ in range(n):
        length = int(rng.integers(1, MAX_LEN + 1))
        out.append({"input_ids": rng.integers(1, VOCAB, length).astype(np.int64),
                    "attention_mask": np.ones(length, dtype=np.int64)})
    return out


# -- networks ------------------------------------------------------------------------------------

def _head(z: Any, head: str) -> Any:
    import torch

    return torch.softmax(z, -1) if head == "softmax" else torch.sigmoid(z) if head == "sigmoid" else z


def _mlp(head: str, _named: bool) -> Any:
    import torch

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return _head(self.net(features) * 2.0, head)

    return MLP()


def _text(head: str, named: bool) -> Any:
    import torch

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(VOCAB, 16)
            self.lin = torch.nn.Linear(16, 3)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            e = self.emb(input_ids)
            m = attention_mask.unsqueeze(-1).to(e.dtype)
            pooled = (e * m).sum(1) / m.sum(1).clamp(min=1.0)
            scores = _head(self.lin(pooled) * 3.0, head)
            return {"probabilities": scores, "embedding": pooled} if named else (scores, pooled)

    return Text()


def _cnn(head: str, _named: bool) -> Any:
    import torch

    class CNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.lin = torch.nn.Linear(4 * 4 * 4, 10)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            h = torch.nn.functional.max_pool2d(torch.relu(self.conv(pixels)), 2)
            return _head(self.lin(h.flatten(1)) * 3.0, head)

    return CNN()


_MODULES = {"mlp": _mlp, "text": _text, "cnn": _cnn}


def _example(kind: str) -> dict[str, Any]:
    import torch

    if kind == "text":
        ids = torch.ones((2, 5), dtype=torch.int64)
        return {"input_ids": ids, "attention_mask": ids.clone()}
    return {"features": torch.zeros((2, 30))} if kind == "mlp" else {"pixels": torch.zeros((2, 1, 8, 8))}


# -- files ---------------------------------------------------------------------------------------

def _export_torch(module: Any, example: dict[str, Any], path: Path) -> None:
    import torch
    from torch.export import Dim

    batch, seq = Dim("batch"), Dim("seq", max=4096)
    dynamic = {name: ({0: batch, 1: seq} if t.dim() == 2 and t.dtype == torch.int64 else {0: batch})
               for name, t in example.items()}
    ep = torch.export.export(module, tuple(example.values()), dynamic_shapes=dynamic)
    torch.export.save(ep, str(path))


def _export_onnx(module: Any, example: dict[str, Any], path: Path) -> None:
    import torch

    names = list(example)
    axes: dict[str, dict[int, str]] = {n: ({0: "batch", 1: "seq"} if t.dtype == torch.int64 else {0: "batch"})
                                        for n, t in example.items()}
    outputs = ["probabilities", "embedding"] if len(names) == 2 else ["probabilities"]
    axes.update({o: {0: "batch"} for o in outputs})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the TorchScript-based exporter is deprecated, still supported
        torch.onnx.export(module, tuple(example.values()), str(path), input_names=names, output_names=outputs,
                          dynamic_axes=axes, opset_version=17, dynamo=False)


def _quantize(kind: str, src: Path, dst: Path, seed: int) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_name(dst.stem + ".pre.onnx")
    quant_pre_process(str(src), str(pre))
    if kind != "cnn":
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
    else:
        class Calibration(CalibrationDataReader):
            def __init__(self) -> None:
                rng = np.random.default_rng(seed)
                self._it = iter([{"pixels": rng.standard_normal((8, 1, 8, 8)).astype(np.float32)} for _ in range(4)])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self._it, None)

        quantize_static(str(pre), str(dst), Calibration(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    pre.unlink()
    return dst

"""Export steps shared by the example builders (``support_build.py``, ``scripts/make_digits_example.py``).

Only used when building an example: imports torch and onnxruntime's quantization tools lazily.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def export_pt2(model: Any, args: tuple, dynamic_shapes: tuple, path: Path, output_names: Sequence[str]) -> None:
    """``torch.export`` ``model`` to ``path`` with its outputs named ``output_names``.

    torch names graph outputs after the op that made them (``softmax``, ``relu_2``); renaming
    them lets a config say ``embedding_output: embedding`` for the .pt2 baseline and the ONNX
    candidate alike. Stack traces are dropped: they embed this machine's absolute paths."""
    import torch

    ep = torch.export.export(model, args, dynamic_shapes=dynamic_shapes)
    nodes = {n.name: n for n in ep.graph.nodes}
    out = next(n for n in ep.graph.nodes if n.op == "output")
    for node, name in zip(out.args[0], output_names):
        other = nodes.get(name)
        if other is not None and other is not node:   # e.g. an aten.embedding op named "embedding"
            suffix = 1
            while f"{name}_{suffix}" in nodes:
                suffix += 1
            _rename(ep, other, f"{name}_{suffix}")
            nodes[other.name] = other
        _rename(ep, node, name)
        nodes[name] = node
    for node in ep.graph.nodes:
        node.meta.pop("stack_trace", None)
    ep.graph_module.recompile()
    torch.export.save(ep, str(path))


def _rename(ep: Any, node: Any, name: str) -> None:
    """Rename one graph node and every input/output spec that refers to it."""
    old, node.name = node.name, name
    for spec in (*ep.graph_signature.input_specs, *ep.graph_signature.output_specs):
        if getattr(spec.arg, "name", None) == old:
            spec.arg.name = name


def export_onnx_for_quantization(model: Any, args: tuple, work: Path, tag: str, input_names: Sequence[str],
                                 output_names: Sequence[str], dynamic_axes: dict) -> Path:
    """fp32 ONNX through the legacy exporter (opset 17: needs only ``onnx``, writes one file, a
    plain graph that quantizes cleanly), then ``quant_pre_process`` (shape inference and graph
    clean-up the quantizers expect). Returns the pre-processed model's path."""
    import torch
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, pre = work / f"{tag}.fp32.onnx", work / f"{tag}.pre.onnx"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(model, args, str(fp32), dynamo=False, opset_version=17, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dynamic_axes)
    quant_pre_process(str(fp32), str(pre))
    return pre


def prune_by_magnitude(linear_or_conv: Any, share: float) -> None:
    """Set the ``share`` of smallest-magnitude weights of one layer to zero, in place."""
    import torch

    with torch.no_grad():
        w = linear_or_conv.weight
        cut = w.abs().flatten().kthvalue(max(1, int(share * w.numel()))).values
        w[w.abs() <= cut] = 0.0


def flip_rate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) != b.argmax(1)))


def accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(p.argmax(1) == y))

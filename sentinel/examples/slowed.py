"""ONNX classifiers with a known amount of extra compute, for performance tests and benchmarks.

:func:`write_mlp` writes a softmax MLP of ``layers`` square hidden Gemm+Relu layers. With
``extra_layers=k`` it adds ``k`` more hidden layers of the same size on a side branch whose
result is multiplied by zero and added to the logits: the outputs are unchanged, but the
runtime must compute them (onnxruntime does not fold an input-dependent branch), so the model
is slower by real work, not by a sleep. Per call, ``k / layers`` is the fraction of extra
hidden-layer compute (with ``extra_width == width``); per-call overhead makes the measured
slowdown a little smaller.

Extra nodes cost a fixed dispatch overhead each, which makes small slowdowns (5%) impossible to
reach with a branch. ``widened=m`` adds compute *inside* existing nodes instead: the outputs of
``m`` hidden layers get ``extra_units`` more units whose outgoing weights are zero, so each of
those layers and the next one do ``extra_units / width`` more multiply-adds for nothing. That
slowdown is fine-grained (about ``2 * m * extra_units / (layers * width)`` of the hidden compute).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_mlp(path: str | Path, *, n_inputs: int = 30, width: int = 256, layers: int = 40, n_classes: int = 2,
              extra_layers: int = 0, extra_width: int | None = None, widened: int = 0, extra_units: int = 32,
              seed: int = 0, tag: str = "") -> Path:
    """Write the model to ``path`` (weights drawn from ``seed``; the extra branch does not change
    them). ``extra_width`` (default ``width``) sizes the extra layers, to tune the slowdown finely.
    ``tag`` goes into the file's doc string: the same model, other bytes (a re-export)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    init, nodes = [], []

    if not 0 <= widened <= layers // 2:
        raise ValueError(f"widened must be between 0 and layers // 2 = {layers // 2}, got {widened}")

    def dense(name: str, x: str, n_in: int, n_out: int, relu: bool, dead_inputs: int = 0) -> str:
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        if dead_inputs:   # padding units of the previous layer: computed, then multiplied by zero
            w = np.concatenate([w, np.zeros((dead_inputs, n_out), np.float32)])
        init.append(numpy_helper.from_array(w, f"{name}_w"))
        init.append(numpy_helper.from_array(np.zeros(n_out, np.float32), f"{name}_b"))
        nodes.append(helper.make_node("Gemm", [x, f"{name}_w", f"{name}_b"], [f"{name}_g"]))
        if not relu:
            return f"{name}_g"
        nodes.append(helper.make_node("Relu", [f"{name}_g"], [f"{name}_r"]))
        return f"{name}_r"

    h = dense("in", "x", n_inputs, width, True)
    trunk = h
    pad = 0
    for i in range(layers):
        out_pad = extra_units if (i % 2 == 0 and i // 2 < widened) else 0
        if out_pad:   # real weights for the padding units so the work is not trivially zero
            w = (rng.standard_normal((width + pad, width + out_pad)) / np.sqrt(width)).astype(np.float32)
            w[width:, :] = 0
            init.append(numpy_helper.from_array(w, f"h{i}_w"))
            init.append(numpy_helper.from_array(np.zeros(width + out_pad, np.float32), f"h{i}_b"))
            nodes.append(helper.make_node("Gemm", [h, f"h{i}_w", f"h{i}_b"], [f"h{i}_g"]))
            nodes.append(helper.make_node("Relu", [f"h{i}_g"], [f"h{i}_r"]))
            h = f"h{i}_r"
        else:
            h = dense(f"h{i}", h, width, width, True, dead_inputs=pad)
        pad = out_pad
    logits = dense("out", h, width, n_classes, False)
    if extra_layers:
        e, n_in = trunk, width
        ew = extra_width or width
        for i in range(extra_layers):
            e = dense(f"extra{i}", e, n_in, ew, True)
            n_in = ew
        init.append(numpy_helper.from_array(np.zeros((1, 1), np.float32), "zero"))
        nodes.append(helper.make_node("ReduceMean", [e], ["extra_mean"], axes=[1], keepdims=1))
        nodes.append(helper.make_node("Mul", ["extra_mean", "zero"], ["extra_zero"]))
        nodes.append(helper.make_node("Add", [logits, "extra_zero"], ["logits_plus"]))
        logits = "logits_plus"
    nodes.append(helper.make_node("Softmax", [logits], ["probs"], axis=1))
    return _save_mlp(path, nodes, init, n_inputs=n_inputs, n_classes=n_classes, tag=tag)


def _save_mlp(path: str | Path, nodes: list, init: list, *, n_inputs: int, n_classes: int, tag: str) -> Path:
    """The graph of ``nodes`` (input ``x``, output ``probs``), checked and written to ``path``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", n_inputs])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", n_classes])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.doc_string = tag
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path

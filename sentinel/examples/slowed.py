"""ONNX classifiers with a known amount of extra compute, for performance tests and benchmarks.

:func:`write_mlp` writes a softmax MLP of ``layers`` square hidden Gemm+Relu layers. With
``extra_layers=k`` it adds ``k`` more hidden layers of the same size on a side branch whose
result is multiplied by zero and added to the logits: the outputs are unchanged, but the
runtime must compute them (onnxruntime does not fold an input-dependent branch), so the model
is slower by real work, not by a sleep. Per call, ``k / layers`` is the fraction of extra
hidden-layer compute (with ``extra_width == width``); per-call overhead makes the measured
slowdown a little smaller.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_mlp(path: str | Path, *, n_inputs: int = 30, width: int = 256, layers: int = 40, n_classes: int = 2,
              extra_layers: int = 0, extra_width: int | None = None, seed: int = 0) -> Path:
    """Write the model to ``path`` (weights drawn from ``seed``; the extra branch does not change
    them). ``extra_width`` (default ``width``) sizes the extra layers, to tune the slowdown finely."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    init, nodes = [], []

    def dense(name: str, x: str, n_in: int, n_out: int, relu: bool) -> str:
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        init.append(numpy_helper.from_array(w, f"{name}_w"))
        init.append(numpy_helper.from_array(np.zeros(n_out, np.float32), f"{name}_b"))
        nodes.append(helper.make_node("Gemm", [x, f"{name}_w", f"{name}_b"], [f"{name}_g"]))
        if not relu:
            return f"{name}_g"
        nodes.append(helper.make_node("Relu", [f"{name}_g"], [f"{name}_r"]))
        return f"{name}_r"

    h = dense("in", "x", n_inputs, width, True)
    trunk = h
    for i in range(layers):
        h = dense(f"h{i}", h, width, width, True)
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
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", n_inputs])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", n_classes])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path

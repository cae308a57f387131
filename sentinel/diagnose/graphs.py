"""ONNX graphs with their intermediate tensors exposed, and the float twin's tensors matched to a
quantized graph's, by name.

The approach is onnxruntime's ``quantization/qdq_loss_debug.py``: copy the graph, make every
float tensor a graph output, run it with graph optimisations off (so no node is fused away and
every tensor keeps its name), and match the quantized graph's tensors to the float graph's by
the names the quantizer gives them:

* QDQ (``quantize_static``): a float tensor ``T`` keeps its name and is followed by
  ``T_QuantizeLinear_Output`` and ``T_DequantizeLinear_Output``; the dequantized value is what
  the next node sees, so that is the one compared (as qdq_loss_debug's ``post_qdq``). A weight
  ``W`` becomes the initializer ``W_quantized`` read by a ``DequantizeLinear`` with its scale and
  zero point.
* Dynamic (``quantize_dynamic``): a ``MatMul`` becomes ``DynamicQuantizeLinear`` (outputs
  ``X_quantized``, ``X_scale``, ``X_zero_point``) → ``MatMulInteger`` (``..._quantized``) → ``Cast``
  → ``Mul``, and the last ``Mul`` writes the original output name, so the float output is matched
  directly; the weight becomes ``W_quantized`` with initializers ``W_scale`` and ``W_zero_point``.

Nothing is written to disk: the copies are serialised in memory for ``InferenceSession``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from .figures import DiagnoseError  # noqa: F401  (raised here; defined without onnx)

QDQ_SUFFIX = "_DequantizeLinear_Output"
QUANT_SUFFIX = "_quantized"
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
              "QLinearMatMul", "QLinearConv", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
_NP_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
             "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


@dataclass(frozen=True)
class Layer:
    """One float tensor of the reference graph, in network order: the node writing it."""
    tensor: str
    node: str
    op: str
    inputs: tuple[str, ...]   # the node's activation inputs (initializers left out)


def load_graph(path: str | Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:   # protobuf DecodeError, FileNotFoundError...
        raise DiagnoseError(path, f"not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc


def quantization_kind(model: onnx.ModelProto) -> str:
    """``qdq``, ``dynamic``, ``qoperator`` (QLinear* ops) or ``float`` (no quantization op)."""
    ops = {n.op_type for n in model.graph.node}
    if ops & {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"}:
        return "dynamic"
    if ops & {"QLinearMatMul", "QLinearConv", "QGemm", "QLinearAdd"}:
        return "qoperator"
    if "DequantizeLinear" in ops:
        return "qdq"
    return "float"


def _float_tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every float tensor a node writes (from shape inference)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:   # a graph shape inference cannot follow still has its declared types
        inferred = model
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.output, *g.input]}
    produced = {o for n in g.node for o in n.output if o}
    return {name: t for name, t in types.items() if name in produced and t in _FLOAT_TYPES}


def layers(model: onnx.ModelProto) -> list[Layer]:
    """The float reference's float tensors in network order (ONNX requires ``graph.node`` to be
    topologically sorted), each with the node that writes it."""
    types = _float_tensor_types(model)
    consts = {i.name for i in model.graph.initializer}
    out = []
    for i, node in enumerate(model.graph.node):
        ins = tuple(t for t in node.input if t and t not in consts)
        for t in node.output:
            if t in types and node.op_type not in ("Constant",):
                out.append(Layer(t, node.name or f"{node.op_type}_{i}", node.op_type, ins))
    return out


def exposed(model: onnx.ModelProto, names: list[str]) -> bytes:
    """A serialised copy of ``model`` with ``names`` added to its outputs."""
    types = _float_tensor_types(model)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present and name in types:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    return copy.SerializeToString()


class Activations:
    """Runs a graph with some of its tensors exposed; ``run(feeds)`` returns them by name."""

    def __init__(self, path: str | Path, model: onnx.ModelProto, names: list[str], *, threads: int | None = 1):
        so = ort.SessionOptions()
        # as qdq_loss_debug: no fusion, so every tensor exists under its own name
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(exposed(model, names), sess_options=so,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise DiagnoseError(path, f"cannot run the graph with its tensors exposed ({exc})") from exc
        self.path = path
        self.inputs = self.session.get_inputs()
        self.names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(None, dict(feeds))
        except Exception as exc:
            raise DiagnoseError(self.path, f"fails on the diagnosis rows ({str(exc).splitlines()[0][:200]})") from exc
        return dict(zip(self.names, values))


def feeds_for(x: np.ndarray | Mapping[str, Any], inputs: list[Any], where: str | Path) -> dict[str, np.ndarray]:
    """The graph's feeds from ``x``: one array for a single-input graph, or arrays by input
    name (any number of inputs), each cast to the dtype the graph declares."""
    if not isinstance(x, Mapping):
        if len(inputs) != 1:
            raise DiagnoseError(where, f"the graph has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                                       "give the rows as arrays by input name")
        x = {inputs[0].name: x}
    missing = [i.name for i in inputs if i.name not in x]
    if missing:
        raise DiagnoseError(where, f"no rows given for input(s) {', '.join(missing)} (given: {', '.join(sorted(x))})")
    return {i.name: np.ascontiguousarray(x[i.name], dtype=_NP_TYPES.get(i.type, np.float32)) for i in inputs}


def candidate_tensor(name: str, available: set[str]) -> str | None:
    """The candidate's tensor matching the float tensor ``name``: its dequantized value when the
    quantizer inserted a QDQ pair after it, else the tensor of the same name."""
    if name + QDQ_SUFFIX in available:
        return name + QDQ_SUFFIX
    return name if name in available else None


def qdq_ranges(model: onnx.ModelProto) -> dict[str, tuple[float, float]]:
    """The float range each per-tensor ``QuantizeLinear`` of an activation can represent,
    ``[(qmin - zero_point) * scale, (qmax - zero_point) * scale]``: values outside it are
    clipped (saturated), the usual reason rows outside the calibration data break."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits or node.input[1] not in inits:
            continue
        scale = inits[node.input[1]]
        zero = inits.get(node.input[2]) if len(node.input) > 2 else None
        if scale.size != 1 or (zero is not None and zero.size != 1):
            continue
        info = np.iinfo(zero.dtype if zero is not None else np.uint8)
        z = float(zero.reshape(())) if zero is not None else 0.0
        s = float(scale.reshape(()))
        out[node.input[0]] = ((info.min - z) * s, (info.max - z) * s)
    return out


def produced_names(model: onnx.ModelProto) -> set[str]:
    return {o for n in model.graph.node for o in n.output if o}


@dataclass(frozen=True)
class QuantizedWeight:
    float: np.ndarray
    dequantized: np.ndarray
    per_channel: bool


def quantized_weights(float_model: onnx.ModelProto, model: onnx.ModelProto) -> dict[str, QuantizedWeight]:
    """Per quantized initializer ``W_quantized`` of ``model`` whose float twin has ``W``: the
    float weight and the dequantized one, ``(w_q - zero_point) * scale`` (per tensor, or per
    channel along the quantizer's axis)."""
    inits = {i.name: i for i in model.graph.initializer}
    floats = {i.name: i for i in float_model.graph.initializer}
    readers = {}
    for node in model.graph.node:
        for pos, t in enumerate(node.input):
            if t in inits:
                readers.setdefault(t, (node, pos))
    out = {}
    for qname, init in inits.items():
        base = qname[: -len(QUANT_SUFFIX)] if qname.endswith(QUANT_SUFFIX) else None
        if base is None or base not in floats:
            continue
        scale, zero, axis = _qparams(base, qname, inits, readers.get(qname))
        if scale is None:
            continue
        w = numpy_helper.to_array(floats[base]).astype(np.float64)
        q = numpy_helper.to_array(init).astype(np.float64)
        if q.shape != w.shape:
            continue
        out[base] = QuantizedWeight(w, _dequantize(q, scale, zero, axis), scale.size > 1)
    return out


def _qparams(base: str, qname: str, inits: dict[str, Any], reader: tuple[Any, int] | None
             ) -> tuple[np.ndarray | None, np.ndarray, int | None]:
    """Scale, zero point and axis of a quantized initializer: from the DequantizeLinear reading it
    (QDQ), else from the ``W_scale``/``W_zero_point`` initializers (quantize_dynamic)."""
    names: list[str | None] = [f"{base}_scale", f"{base}_zero_point"]
    axis = None
    if reader is not None and reader[0].op_type == "DequantizeLinear" and reader[1] == 0:
        node = reader[0]
        names = [node.input[1], node.input[2] if len(node.input) > 2 else None]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    elif reader is not None and reader[0].op_type in ("MatMulInteger", "ConvInteger"):
        axis = 1 if reader[0].op_type == "MatMulInteger" else 0   # per output column / per filter
    if names[0] not in inits:
        return None, np.zeros(()), None
    scale = numpy_helper.to_array(inits[names[0]]).astype(np.float64)
    zero = numpy_helper.to_array(inits[names[1]]).astype(np.float64) if names[1] in inits else np.zeros_like(scale)
    return scale, zero, axis


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int | None) -> np.ndarray:
    if scale.size == 1:
        return (q - zero.reshape(())) * scale.reshape(())
    shape = [1] * q.ndim
    shape[axis if axis is not None else 1] = -1
    return (q - zero.reshape(shape)) * scale.reshape(shape)

"""ONNX Runtime runner, typically for the compressed (int8) candidate."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from .base import ModelFileRunner, ModelLoadError, first_line

DEFAULT_PROVIDERS = ["CPUExecutionProvider"]


class OnnxRunner(ModelFileRunner):
    """Runs an ONNX model with one float input through an ``onnxruntime.InferenceSession``.

    The first graph output is used as the class scores. The per-sample input shape is read
    from the graph (``session.get_inputs()[0].shape[1:]``) and must be fixed; the batch
    dimension may be symbolic or fixed (a fixed batch is run in chunks, padding the last).

    Args:
        path: the ``.onnx`` file.
        role: ``"baseline"`` or ``"candidate"``.
        output: ``"probabilities"`` or ``"logits"``.
        threads: ``SessionOptions.intra_op_num_threads`` (``None``: ORT's default).
        providers: execution providers, default ``["CPUExecutionProvider"]``.
    """

    runtime = "onnxruntime"

    def _open(self, providers: list[str] | None) -> int | None:
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=list(providers or DEFAULT_PROVIDERS))
        except Exception as exc:  # ORT raises InvalidProtobuf/Fail/NoSuchFile/ValueError...
            raise ModelLoadError(self.path, f"not a loadable ONNX model ({first_line(exc, 160)})") from exc

        # what actually runs, recorded with every performance measurement
        self.providers = list(self._session.get_providers())
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            # Multi-input models need a feature-to-input mapping Sentinel does not have yet.
            names = ", ".join(i.name for i in inputs)
            raise ModelLoadError(self.path, f"expected exactly one input, the model has {len(inputs)}: {names}")
        inp = inputs[0]
        if inp.type != "tensor(float)":
            raise ModelLoadError(self.path, f"input {inp.name!r} has type {inp.type}, only tensor(float) is supported")
        if not inp.shape or any(not isinstance(d, int) for d in inp.shape[1:]):
            raise ModelLoadError(self.path, f"input {inp.name!r} has shape {inp.shape}; all but the batch dimension must be fixed")
        self._input_name = inp.name
        self._output_name = self._session.get_outputs()[0].name
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in inp.shape[1:])
        # A fixed batch dim (common in models exported without dynamic_axes) is honoured by
        # chunking rather than rejected.
        self._fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        return None   # read from the probe batch: ONNX output shapes are often symbolic

    def _raw(self, x: np.ndarray) -> np.ndarray:
        if self._fixed_batch is None:
            return np.asarray(self._session.run([self._output_name], {self._input_name: x})[0])
        b = self._fixed_batch
        parts = []
        for start in range(0, len(x), b):
            chunk = x[start : start + b]
            pad = b - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), dtype=chunk.dtype)])
            out = np.asarray(self._session.run([self._output_name], {self._input_name: chunk})[0])
            parts.append(out[: b - pad])
        return np.concatenate(parts)

    def close(self) -> None:
        self._session = None

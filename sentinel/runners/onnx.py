"""ONNX Runtime runner, typically for the compressed (int8) candidate."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from ..tensors import ONNX_TYPES, Batch, Signature, TensorSpec
from .base import ModelFileRunner, ModelLoadError, first_line, pick_output

DEFAULT_PROVIDERS = ["CPUExecutionProvider"]


class OnnxRunner(ModelFileRunner):
    """Runs an ONNX model through an ``onnxruntime.InferenceSession``, feeding every graph input
    by name.

    The signature is read from the graph inputs: their names, element types (see
    :data:`sentinel.tensors.ONNX_TYPES`) and shapes, the first dimension being the batch;
    symbolic or unknown dimensions (``"seq"``) are dynamic. A batch dimension fixed in the graph
    is honoured by running in chunks of that size (the last one filled up with copies of its
    last row). The scores are the first graph output unless ``output_name`` names another
    (by name, or by index as ``"1"``); ``embedding_output`` likewise.

    Args:
        path: the ``.onnx`` file.
        role: ``"baseline"`` or ``"candidate"``.
        output: an output kind (:data:`~sentinel.runners.scores.OUTPUT_MODES`).
        threads: ``SessionOptions.intra_op_num_threads`` (``None``: ORT's default).
        providers: execution providers, default ``["CPUExecutionProvider"]``.
    """

    runtime = "onnxruntime"

    def _open(self, providers: list[str] | None, **options: Any) -> int | None:
        if options:
            raise ModelLoadError(self.path, f"unknown option(s) for onnxruntime: {', '.join(sorted(options))}")
        so = ort.SessionOptions()
        if self.threads is not None:
            so.intra_op_num_threads = self.threads
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=so, providers=list(providers or DEFAULT_PROVIDERS))
        except Exception as exc:  # ORT raises InvalidProtobuf/Fail/NoSuchFile/ValueError...
            raise ModelLoadError(self.path, f"not a loadable ONNX model ({first_line(exc, 160)})") from exc

        # what actually runs, recorded with every performance measurement
        self.providers = list(self._session.get_providers())
        self.signature, self._fixed_batch = self._read_signature()
        outputs = [o.name for o in self._session.get_outputs()]
        score = pick_output(self.path, self.output_name, outputs, "output_name") or 0
        embed = pick_output(self.path, self.embedding_output, outputs, "embedding_output")
        self._fetch = [outputs[score]] + ([outputs[embed]] if embed is not None else [])
        return None   # read from the probe batch: ONNX output shapes are often symbolic

    def _read_signature(self) -> tuple[Signature, int | None]:
        specs, fixed = [], None
        for inp in self._session.get_inputs():
            if inp.type not in ONNX_TYPES:
                raise ModelLoadError(self.path, f"input {inp.name!r} has type {inp.type}, which Sentinel cannot feed "
                                                f"(supported: {', '.join(sorted(ONNX_TYPES))})")
            if not inp.shape:
                raise ModelLoadError(self.path, f"input {inp.name!r} is a scalar; every input needs a batch dimension")
            dims = tuple(d if isinstance(d, int) and d > 0 else None for d in inp.shape[1:])
            specs.append(TensorSpec(inp.name, ONNX_TYPES[inp.type], dims))
            # A fixed batch dim (common in models exported without dynamic_axes) is honoured by
            # chunking rather than rejected.
            if isinstance(inp.shape[0], int) and inp.shape[0] > 0:
                fixed = inp.shape[0]
        return Signature(tuple(specs)), fixed

    def _outputs(self, batch: Batch) -> tuple[np.ndarray, np.ndarray | None]:
        out = self._session.run(self._fetch, batch)
        return out[0], (out[1] if len(out) > 1 else None)

    def close(self) -> None:
        self._session = None

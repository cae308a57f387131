"""Model runners: load a baseline or candidate model file and get class probabilities (and,
when configured, an embedding) for batches of typed, possibly multi-input, rows.

The runtime modules (``torch``, ``onnx``) are imported only when a runner of that kind is
loaded, so importing this package stays cheap.
"""
from .base import QUANTIZED_SUM_TOLERANCE, RUNTIMES, ModelLoadError, Runner, RunnerOutput, load_runner, sha256_file
from .paired import PairedOutput, PairedRunner

__all__ = [
    "QUANTIZED_SUM_TOLERANCE",
    "RUNTIMES",
    "ModelLoadError",
    "PairedOutput",
    "PairedRunner",
    "Runner",
    "RunnerOutput",
    "load_runner",
    "sha256_file",
]

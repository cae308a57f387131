"""Model runners: load a baseline or candidate model file and get class probabilities.

The runtime modules (``torch``, ``onnx``) are imported only when a runner of that kind is
loaded, so importing this package stays cheap.
"""
from .base import RUNTIMES, ModelLoadError, Runner, load_runner, sha256_file
from .paired import PairedOutput, PairedRunner

__all__ = [
    "RUNTIMES",
    "ModelLoadError",
    "PairedOutput",
    "PairedRunner",
    "Runner",
    "load_runner",
    "sha256_file",
]

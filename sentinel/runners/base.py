"""The runner contract: one model file in, class probabilities out.

Sentinel compares a *baseline* (full precision) and a *candidate* (compressed) model on the
same rows. Everything downstream (checks, drift, incidents) only sees ``predict_proba``
outputs, so every runtime is wrapped behind the small :class:`Runner` protocol below and
loaded through :func:`load_runner`.

No runner ever unpickles arbitrary objects: torch models are loaded from ``torch.export``
archives or TorchScript files, ONNX models from protobuf.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import SentinelError
from ..registry import resolve

OUTPUT_MODES = ("probabilities", "logits")

#: Built-in runtimes. Any other name that looks like ``module:Class`` is imported as is
#: (uvicorn style), so a deployment can plug in its own runner without touching Sentinel.
RUNTIMES: dict[str, str] = {
    "torch": "sentinel.runners.torch:TorchRunner",
    "onnxruntime": "sentinel.runners.onnx:OnnxRunner",
}

# Row sums of a probability output may be off by float32 rounding (and by a little more for
# quantized softmaxes); anything further off means the model does not output probabilities.
_PROBA_SUM_TOLERANCE = 1e-3


class ModelLoadError(SentinelError):
    """A model file cannot be loaded. ``path`` is the file, ``reason`` what is wrong with it.

    The message is one line, ``"<path>: <reason>"``, e.g. ``models/x.onnx: file not found``.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())  # keep it on one line
        super().__init__(f"{path}: {self.reason}")


@runtime_checkable
class Runner(Protocol):
    """A loaded classifier that turns a batch of rows into class probabilities.

    Implementations are constructed by :func:`load_runner` as
    ``Cls(path, role=..., output=..., threads=..., providers=..., **options)`` and must raise
    :class:`ModelLoadError` from the constructor when the file cannot be used.

    Attributes:
        role: ``"baseline"`` or ``"candidate"``; given by the caller, only used in messages
            and metrics labels.
        path: the model file.
        runtime: name of the engine that executes the model (``"torch"``, ``"onnxruntime"``).
        sha256: hex SHA-256 of the model file's bytes, so an incident can name exactly which
            artifact was running.
        input_shape: shape of one sample of the (single) input, without the batch dimension,
            e.g. ``(30,)``.
        n_outputs: number of classes, i.e. the last dimension of the output.
    """

    role: str
    path: Path
    runtime: str
    sha256: str
    input_shape: tuple[int, ...]
    n_outputs: int

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Return class probabilities for a batch.

        Args:
            x: float32 array of shape ``(n, *input_shape)``; ``n`` may be any size
                (including 0).

        Returns:
            float64 array of shape ``(n, n_outputs)`` whose rows sum to 1.
        """
        ...

    def close(self) -> None:
        """Release the engine's resources. The runner must not be used afterwards."""
        ...


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks so large models do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_model_file(path: str | Path) -> tuple[Path, str]:
    """Check that ``path`` is a readable file; return it and its sha256.

    Raises :class:`ModelLoadError` so a missing or unreadable model is reported the same way
    by every runtime, before the runtime's own (often multi-line) error can surface.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(path, "file not found")
    if not path.is_file():
        raise ModelLoadError(path, "not a regular file")
    try:
        return path, sha256_file(path)
    except OSError as exc:
        raise ModelLoadError(path, f"cannot read file ({exc.strerror or exc})") from exc


def check_output_mode(path: Path, output: str) -> str:
    if output not in OUTPUT_MODES:
        raise ModelLoadError(path, f"output must be one of {', '.join(OUTPUT_MODES)}, not {output!r}")
    return output


def first_line(exc: BaseException, limit: int = 200) -> str:
    """A short, single-line rendering of a runtime's exception for a ModelLoadError reason."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64; subtracting the row max keeps ``exp`` from overflowing."""
    z = logits.astype(np.float64, copy=True)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def to_probabilities(raw: np.ndarray, *, output: str, n_outputs: int, n_rows: int, where: str) -> np.ndarray:
    """Validate a model's raw output and turn it into float64 probabilities.

    ``where`` names the model in error messages (usually ``"<role> <path>"``).
    """
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape != (n_rows, n_outputs):
        raise ValueError(f"{where}: expected output of shape ({n_rows}, {n_outputs}), got {raw.shape}")
    if output == "logits":
        return softmax(raw)
    proba = raw.astype(np.float64)
    if n_rows:
        sums = proba.sum(axis=1)
        # A logits model configured as "probabilities" would otherwise silently feed garbage
        # into every downstream check, so refuse loudly.
        if not (np.all(np.abs(sums - 1.0) <= _PROBA_SUM_TOLERANCE) and proba.min() >= -_PROBA_SUM_TOLERANCE):
            raise ValueError(
                f"{where}: output does not look like probabilities (row sums {sums.min():.4g}..{sums.max():.4g},"
                f" min {proba.min():.4g}); configure output='logits' if the model returns logits"
            )
    return proba


def check_input(x: np.ndarray, input_shape: tuple[int, ...], where: str) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 array, checking its per-sample shape."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"{where}: expected input of shape (n, {', '.join(map(str, input_shape))}), got {x.shape}")
    return x


class ModelFileRunner:
    """What the built-in runners share (a convenience, not part of the :class:`Runner` protocol):
    the constructor the protocol names, with the model file checked and hashed, the output mode
    checked and the thread count kept; the load-time probe batch; input checking and the
    conversion to probabilities. A subclass sets ``runtime`` and implements :meth:`_open` (load
    the engine) and :meth:`_raw` (the engine's scores for a checked batch)."""

    runtime: str = ""
    input_shape: tuple[int, ...]
    providers: list[str]

    def __init__(self, path: str | Path, *, role: str, output: str = "probabilities", threads: int | None = None,
                 providers: list[str] | None = None, **options: Any):
        self.path, self.sha256 = check_model_file(path)
        self.role = role
        self.output = check_output_mode(self.path, output)
        # what actually runs, recorded with every performance measurement
        self.threads: int | None = int(threads) if threads is not None else None
        declared = self._open(providers, **options)
        probed = self._probe_outputs()
        if declared is not None and declared != probed:
            raise ModelLoadError(self.path, f"graph declares {declared} outputs but returns {probed}")
        self.n_outputs: int = probed

    def _open(self, providers: list[str] | None, **options: Any) -> int | None:
        """Load the engine (with ``self.threads``), set ``input_shape`` and ``providers`` (what
        executes), and return the class count the graph declares (None: it does not say).
        Raises :class:`ModelLoadError` naming what is wrong with the file."""
        raise NotImplementedError

    def _raw(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _probe_outputs(self) -> int:
        """Run one probe batch at load: it proves the model runs, gives the class count when the
        graph does not record it, and absorbs first-call setup that would otherwise inflate the
        first measured batch latency. Returns the class count."""
        try:
            probe = np.asarray(self._raw(np.zeros((2, *self.input_shape), dtype=np.float32)))
        except Exception as exc:
            raise ModelLoadError(self.path, f"model fails on a probe batch of shape {(2, *self.input_shape)} "
                                            f"({first_line(exc, 120)})") from exc
        if probe.ndim != 2:
            raise ModelLoadError(self.path, f"model output must be 2-D (rows, classes), got shape {probe.shape}")
        return int(probe.shape[1])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        where = f"{self.role} {self.path}"
        x = check_input(x, self.input_shape, where)
        if len(x) == 0:   # some engines reject a zero batch (exported programs); nothing to compute anyway
            return np.zeros((0, self.n_outputs), dtype=np.float64)
        return to_probabilities(self._raw(x), output=self.output, n_outputs=self.n_outputs, n_rows=len(x), where=where)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(role={self.role!r}, path={str(self.path)!r}, input_shape={self.input_shape}, "
                f"n_outputs={self.n_outputs})")


def load_runner(
    path: str | Path,
    *,
    runtime: str,
    role: str,
    output: str = "probabilities",
    threads: int | None = None,
    providers: list[str] | None = None,
    **options: Any,
) -> Runner:
    """Load a model file with the named runtime.

    Args:
        path: model file.
        runtime: a key of :data:`RUNTIMES` or a ``"module:Class"`` import string.
        role: ``"baseline"`` or ``"candidate"``.
        output: ``"probabilities"`` if the model already ends in a softmax, ``"logits"`` to
            have the runner apply a numerically stable softmax.
        threads: intra-op threads for the engine (``None`` keeps the engine's default).
        providers: ONNX Runtime execution providers (ignored by torch).
        **options: runtime specific extras, e.g. ``input_shape`` for TorchScript files that
            do not record it.

    Raises:
        ModelLoadError: the file is missing, unreadable or not a model of that runtime.
        sentinel.registry.PluginError: ``runtime`` is unknown or cannot be imported.
    """
    cls = resolve("runtime", runtime, RUNTIMES)
    return cls(path, role=role, output=output, threads=threads, providers=providers, **options)

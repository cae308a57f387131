"""The runner contract: one model file in, class probabilities out.

Sentinel compares a *baseline* (full precision) and a *candidate* (compressed) model on the
same rows. Everything downstream (checks, drift, incidents) only sees ``run`` /
``predict_proba`` outputs, so every runtime is wrapped behind the small :class:`Runner`
protocol below and loaded through :func:`load_runner`.

A runner reads what its model takes from the model file itself (its :class:`Signature`: input
names, dtypes, fixed and dynamic dimensions), so a transformer's ``input_ids`` +
``attention_mask`` (int64, variable length) and an NCHW image tensor go through the same code
as a 30-feature MLP.

No runner ever unpickles arbitrary objects: torch models are loaded from ``torch.export``
archives or TorchScript files, ONNX models from protobuf.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import SentinelError
from ..registry import resolve
from ..tensors import Batch, Signature
from .batches import batch_size, check_batch, chunked, probe_batch
from .scores import OUTPUT_MODES, QUANTIZED_SUM_TOLERANCE, convert_scores, softmax, to_probabilities

__all__ = ["OUTPUT_MODES", "QUANTIZED_SUM_TOLERANCE", "RUNTIMES", "ModelFileRunner", "ModelLoadError", "Runner",
           "RunnerOutput", "check_batch", "load_runner", "output_options", "sha256_file", "softmax", "to_probabilities"]

#: Built-in runtimes. Any other name that looks like ``module:Class`` is imported as is
#: (uvicorn style), so a deployment can plug in its own runner without touching Sentinel.
RUNTIMES: dict[str, str] = {
    "torch": "sentinel.runners.torch:TorchRunner",
    "onnxruntime": "sentinel.runners.onnx:OnnxRunner",
}

#: What a runner takes: one stacked array (single-input models) or input name -> batch array.
ModelInput = np.ndarray | Mapping[str, np.ndarray]


@dataclass
class RunnerOutput:
    """One batch's outputs. ``proba``: float64 ``(n, n_outputs)`` scores (rows summing to 1, or
    per-label probabilities for multilabel kinds); ``embedding``: the configured embedding
    output as float64 ``(n, d)`` (None when none is configured); ``deviation``: the largest
    |row sum - 1| of a ``probabilities`` output before it was renormalised (0 for other kinds)."""
    proba: np.ndarray
    embedding: np.ndarray | None = None
    deviation: float = 0.0


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
        signature: the model's inputs (names, dtypes, per-row shapes with ``None`` for dynamic
            dimensions), read from the model file.
        input_shape: ``signature.input_shape``: the per-row shape of a single fixed-shape input,
            e.g. ``(30,)``; None for other signatures.
        n_outputs: number of classes (or labels), i.e. the last dimension of the output.
    """

    role: str
    path: Path
    runtime: str
    sha256: str
    signature: Signature
    input_shape: tuple[int, ...] | None
    n_outputs: int

    def run(self, x: ModelInput) -> RunnerOutput:
        """Scores (and the embedding, when configured) for a batch.

        Args:
            x: a stacked array ``(n, *shape)`` for a single-input model, or a mapping of input
                name to array with the batch dimension first; ``n`` may be 0. Names, ranks and
                fixed dimensions are checked and each input is cast to its declared dtype
                (ValueError naming the input and dimension otherwise).
        """
        ...

    def predict_proba(self, x: ModelInput) -> np.ndarray:
        """``run(x).proba``: float64 ``(n, n_outputs)``."""
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


def pick_output(path: Path, given: str | None, names: Sequence[str], what: str) -> int | None:
    """The position of the output ``given`` names among the model's ``names`` (or by its index,
    ``"1"``); None when nothing is given. Raises ModelLoadError listing what exists."""
    if given is None:
        return None
    if given in names:
        return list(names).index(given)
    if given.isdigit() and (not names or int(given) < len(names)):
        return int(given)   # TorchScript does not list its outputs: the probe checks the index
    listed = ", ".join(repr(n) for n in names) or "none listed"
    raise ModelLoadError(path, f"{what} {given!r} is not an output of the model (outputs: {listed}; "
                               f"or an index 0..{max(len(names) - 1, 0)})")


class ModelFileRunner:
    """What the built-in runners share (a convenience, not part of the :class:`Runner` protocol):
    the constructor the protocol names, with the model file checked and hashed, the output mode
    checked and the thread count kept; the load-time probe batch; input checking, the fixed
    batch dimension (run in chunks) and the conversion to probabilities.

    A subclass sets ``runtime`` and implements :meth:`_open` (load the engine, set ``signature``,
    ``providers``, ``_fixed_batch`` and resolve ``output_name`` / ``embedding_output``) and
    :meth:`_outputs` (the engine's scores and embedding for a checked batch).

    Options common to both built-in runtimes: ``output_name``, the graph output holding the
    scores (default: the first output), and ``embedding_output``, a graph output holding a
    per-row embedding returned by :meth:`run` as float64 ``(n, d)``; ``embedding_dim`` is its
    width ``d`` (None when none is configured), read from the probe batch at load.
    """

    runtime: str = ""
    signature: Signature
    providers: list[str]
    _fixed_batch: int | None = None   # a batch dimension fixed in the graph: run in chunks of it

    def __init__(self, path: str | Path, *, role: str, output: str = "probabilities", threads: int | None = None,
                 providers: list[str] | None = None, output_name: str | None = None,
                 embedding_output: str | None = None, **options: Any):
        self.path, self.sha256 = check_model_file(path)
        self.role = role
        self.output = check_output_mode(self.path, output)
        # what actually runs, recorded with every performance measurement
        self.threads: int | None = int(threads) if threads is not None else None
        self.output_name, self.embedding_output = output_name, embedding_output
        declared = self._open(providers, **options)
        probed, self.embedding_dim = self._probe_outputs()
        if declared is not None and declared != probed:
            raise ModelLoadError(self.path, f"graph declares {declared} outputs but returns {probed}")
        self.n_outputs: int = probed

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self.signature.input_shape

    def _open(self, providers: list[str] | None, **options: Any) -> int | None:
        """Load the engine (with ``self.threads``), set ``signature`` and ``providers`` (what
        executes), and return the class count the graph declares (None: it does not say).
        Raises :class:`ModelLoadError` naming what is wrong with the file."""
        raise NotImplementedError

    def _outputs(self, batch: Batch) -> tuple[np.ndarray, np.ndarray | None]:
        """The engine's raw scores and embedding (None when not configured) for a checked batch."""
        raise NotImplementedError

    def _engine(self, batch: Batch) -> tuple[np.ndarray, np.ndarray | None]:
        if self._fixed_batch is None:
            scores, emb = self._outputs(batch)
            return np.asarray(scores), None if emb is None else np.asarray(emb)
        parts = [(self._outputs(chunk), real) for chunk, real in chunked(batch, self._fixed_batch)]
        scores = np.concatenate([np.asarray(s)[:real] for (s, _), real in parts])
        emb = None if parts[0][0][1] is None else np.concatenate([np.asarray(e)[:real] for (_, e), real in parts])
        return scores, emb

    def _probe_outputs(self) -> tuple[int, int | None]:
        """Run one probe batch at load: it proves the model runs on the inputs it declares, gives
        the class count (and embedding width) when the graph does not record them, and absorbs
        first-call setup that would otherwise inflate the first measured batch latency."""
        probe = probe_batch(self.signature)
        try:
            scores, emb = self._engine(probe)
        except Exception as exc:
            shapes = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in probe.items())
            raise ModelLoadError(self.path, f"model fails on a probe batch ({shapes}) ({first_line(exc, 120)})") from exc
        if scores.ndim != 2:
            raise ModelLoadError(self.path, f"model output must be 2-D (rows, classes), got shape {scores.shape}")
        if emb is not None and (emb.ndim != 2 or len(emb) != len(scores)):
            raise ModelLoadError(self.path, f"embedding output {self.embedding_output!r} must be 2-D (rows, dims), "
                                            f"got shape {emb.shape}")
        return int(scores.shape[1]), None if emb is None else int(emb.shape[1])

    def run(self, x: ModelInput) -> RunnerOutput:
        where = f"{self.role} {self.path}"
        batch = check_batch(x, self.signature, where)
        n = batch_size(batch)
        if n == 0:   # some engines reject a zero batch (exported programs); nothing to compute anyway
            emb = None if self.embedding_dim is None else np.zeros((0, self.embedding_dim))
            return RunnerOutput(np.zeros((0, self.n_outputs), dtype=np.float64), emb, 0.0)
        try:
            raw, emb = self._engine(batch)
        except Exception as exc:   # engines raise their own zoo (and multi-line messages)
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in batch.items())
            raise ValueError(f"{where}: the model failed on a batch of {shapes}: {first_line(exc, 160)}") from exc
        proba, deviation = convert_scores(raw, output=self.output, n_outputs=self.n_outputs, n_rows=n, where=where)
        if emb is not None:
            emb = emb.astype(np.float64).reshape(n, -1)
        return RunnerOutput(proba, emb, deviation)

    def predict_proba(self, x: ModelInput) -> np.ndarray:
        return self.run(x).proba

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(role={self.role!r}, path={str(self.path)!r}, "
                f"inputs={self.signature.describe()!r}, n_outputs={self.n_outputs})")


def output_options(spec: Any) -> dict[str, str]:
    """The load options naming a model's outputs, from a :class:`sentinel.config.ModelSpec`
    (``output_name``, ``embedding_output``; those left unset are left out)."""
    names = {k: getattr(spec, k, None) for k in ("output_name", "embedding_output")}
    return {k: v for k, v in names.items() if v is not None}


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
        output: ``"probabilities"`` if the model already ends in a softmax (rows within
            :data:`QUANTIZED_SUM_TOLERANCE` of 1 are renormalised), ``"logits"`` to have the
            runner apply a numerically stable softmax, ``"multilabel"`` for per-label
            probabilities in [0, 1], ``"multilabel_logits"`` to have it apply a sigmoid.
        threads: intra-op threads for the engine (``None`` keeps the engine's default).
        providers: ONNX Runtime execution providers (ignored by torch).
        **options: ``output_name`` (the graph output holding the scores; default the first),
            ``embedding_output`` (a graph output with per-row embeddings), and runtime specific
            extras, e.g. ``input_shape`` for TorchScript files that do not record it.

    Raises:
        ModelLoadError: the file is missing, unreadable or not a model of that runtime.
        sentinel.registry.PluginError: ``runtime`` is unknown or cannot be imported.
    """
    cls = resolve("runtime", runtime, RUNTIMES)
    return cls(path, role=role, output=output, threads=threads, providers=providers, **options)

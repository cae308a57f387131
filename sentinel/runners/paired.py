"""Run the baseline and the candidate on exactly the same rows, batch by batch."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..tensors import Batch, Row, Signature, cast, collate, row_length
from .base import Runner, RunnerOutput, check_batch

BATCHING = ("bucket", "pad")
ROLES = ("baseline", "candidate")


@dataclass
class PairedOutput:
    """Outputs of one paired run, rows in the order they were given.

    Attributes:
        baseline: ``(n, k)`` float64 probabilities from the baseline.
        candidate: ``(n, k)`` float64 probabilities from the candidate, same row order.
        latency: per-batch wall time in seconds of each model call, keyed ``"baseline"`` and
            ``"candidate"``; both arrays have one entry per batch.
        batch_sizes: number of rows of each batch (the last one may be short).
        embeddings: per role, the embedding output as float64 ``(n, d)`` (None when the role
            has none configured).
        deviation: per role, the largest |row sum - 1| of its probabilities before they were
            renormalised (0 for logits and multilabel kinds).
    """

    baseline: np.ndarray
    candidate: np.ndarray
    latency: dict[str, np.ndarray]
    batch_sizes: np.ndarray
    embeddings: dict[str, np.ndarray | None] = field(default_factory=lambda: {r: None for r in ROLES})
    deviation: dict[str, float] = field(default_factory=lambda: {r: 0.0 for r in ROLES})

    @property
    def n_rows(self) -> int:
        return int(self.baseline.shape[0])


def signature_of(r: Any) -> Signature:
    """A runner's signature; a plug-in runner that only states ``input_shape`` is taken as one
    float32 input of that shape."""
    sig = getattr(r, "signature", None)
    return sig if isinstance(sig, Signature) else Signature.single(tuple(r.input_shape))


def pair_differences(baseline: Signature, candidate: Signature) -> list[str]:
    """Why a baseline and a candidate cannot take the same rows, in words (empty: they can).
    Two single-input models need not name their input alike (a torch export's ``x`` and the
    ONNX file's ``features``): each gets the same array under its own name."""
    if len(baseline.inputs) == 1 and len(candidate.inputs) == 1:
        candidate = Signature((replace(candidate.inputs[0], name=baseline.inputs[0].name),))
    return baseline.differences(candidate)


def model_batch(rows: Sequence[Row], signature: Signature) -> np.ndarray | Batch:
    """Rows collated into what a runner takes: one array for a single-input model (each runner
    feeds it under its own input name), else input name -> padded batch array."""
    batch = collate(rows, signature)
    return next(iter(batch.values())) if len(batch) == 1 else batch


def _describe(r: Runner) -> str:
    return f"{r.role} {r.path} ({r.runtime}, inputs {signature_of(r).describe()}, n_outputs={r.n_outputs})"


def _call(r: Any, batch: np.ndarray | Batch) -> RunnerOutput:
    if isinstance(batch, dict) and len(batch) == 1:
        batch = next(iter(batch.values()))   # a single input goes in under each model's own name
    run = getattr(r, "run", None)   # a plug-in runner may only have predict_proba
    return run(batch) if callable(run) else RunnerOutput(np.asarray(r.predict_proba(batch), dtype=np.float64))


class PairedRunner:
    """Feeds the same batches to a baseline and a candidate runner.

    Per batch, both models run back to back and the order alternates (baseline first on even
    batches, candidate first on odd ones): warm caches, CPU frequency changes and noisy
    neighbours then hit both models equally, so their latency comparison stays fair.

    Rows of different lengths (token sequences) are padded per batch to that batch's longest
    row, with each input's ``pad`` from ``signature``. With ``batching="bucket"`` rows are first
    sorted by length (:func:`~sentinel.tensors.row_length`), so a batch holds rows of similar
    length and little compute goes to padding; outputs come back in the original order either
    way.

    Args:
        baseline, candidate: loaded runners; their signatures (input names, dtypes, fixed
            dimensions) and ``n_outputs`` must match.
        signature: the inputs with the pads to use (default: the baseline's, pads 0).
        batching: ``"bucket"`` (sort by length first) or ``"pad"`` (keep the given order).
        clock: monotonic clock returning seconds (injectable for tests).

    Raises:
        ValueError: the two runners disagree on inputs or number of classes.
    """

    def __init__(self, baseline: Runner, candidate: Runner, *, signature: Signature | None = None,
                 batching: str = "bucket", clock: Callable[[], float] = time.perf_counter):
        differences = pair_differences(signature_of(baseline), signature_of(candidate))
        if differences or baseline.n_outputs != candidate.n_outputs:
            why = "; ".join(differences) or f"{baseline.n_outputs} vs {candidate.n_outputs} outputs"
            raise ValueError(f"baseline and candidate do not fit together ({why}): "
                             f"{_describe(baseline)} vs {_describe(candidate)}")
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {', '.join(BATCHING)}, not {batching!r}")
        self.baseline = baseline
        self.candidate = candidate
        self.signature = signature if signature is not None else signature_of(baseline)
        self.batching = batching
        self.clock = clock

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self.signature.input_shape

    @property
    def n_outputs(self) -> int:
        return self.baseline.n_outputs

    def run(self, x: np.ndarray | Mapping[str, np.ndarray] | Sequence[Row], batch_size: int) -> PairedOutput:
        """Run both models on ``x`` in batches of ``batch_size`` rows. ``x``: a stacked array
        ``(n, *shape)`` (single-input models), a batch mapping (input name -> array), or a
        sequence of rows (input name -> array without the batch dimension)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(x, (np.ndarray, Mapping)):
            if isinstance(x, Mapping) and len(x) == 1 and len(self.signature.inputs) == 1:
                x = next(iter(x.values()))
            stacked = check_batch(x, self.signature, "paired run")
            n = len(next(iter(stacked.values())))
            batches = [(np.arange(lo, min(n, lo + batch_size)), {k: v[lo:lo + batch_size] for k, v in stacked.items()})
                       for lo in range(0, n, batch_size)]
        else:
            rows = self._checked_rows(x)
            n = len(rows)
            order = self._order(rows)
            batches = [(idx, model_batch([rows[i] for i in idx], self.signature))
                       for idx in (order[lo:lo + batch_size] for lo in range(0, n, batch_size))]
        return self._run_batches(batches, n)

    def _order(self, rows: Sequence[Row]) -> np.ndarray:
        dynamic = any(not s.static for s in self.signature.inputs)
        if self.batching == "pad" or not dynamic:
            return np.arange(len(rows))
        lengths = np.array([row_length(r, self.signature) for r in rows], dtype=np.int64)
        return np.argsort(lengths, kind="stable")

    def _checked_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[Row]:
        """Each row with every input present, of the right rank and fixed dimensions, and of its
        declared dtype (collate would otherwise truncate a fractional id without a word)."""
        out: list[Row] = []
        names = self.signature.names
        single = len(names) == 1
        for i, row in enumerate(rows):
            if single and len(row) == 1 and names[0] not in row:
                row = {names[0]: next(iter(row.values()))}   # a single input under another name
            missing = [n for n in names if n not in row]
            if missing:
                raise ValueError(f"paired run: row {i} lacks input {missing[0]!r} (the models take {', '.join(names)})")
            checked: Row = {}
            for spec in self.signature.inputs:
                arr = np.asarray(row[spec.name])
                why = spec.misfit(arr.shape)
                if why:
                    raise ValueError(f"paired run: row {i}: {why}")
                try:
                    checked[spec.name] = arr if arr.dtype == spec.dtype else cast(arr, spec)
                except ValueError as exc:
                    raise ValueError(f"paired run: row {i}: {exc}") from None
            out.append(checked)
        return out

    def _run_batches(self, batches: list[tuple[np.ndarray, np.ndarray | Batch]], n: int) -> PairedOutput:
        k = self.n_outputs
        runners = {"baseline": self.baseline, "candidate": self.candidate}
        out = {role: np.empty((n, k), dtype=np.float64) for role in ROLES}
        emb: dict[str, np.ndarray | None] = {role: _empty_embedding(runners[role], n) for role in ROLES}
        deviation = {role: 0.0 for role in ROLES}
        latency = {role: np.empty(len(batches)) for role in ROLES}
        sizes = np.empty(len(batches), dtype=np.int64)
        for i, (idx, batch) in enumerate(batches):
            for role in (ROLES if i % 2 == 0 else ROLES[::-1]):
                t0 = self.clock()
                result = _call(runners[role], batch)
                latency[role][i] = self.clock() - t0
                out[role][idx] = result.proba
                deviation[role] = max(deviation[role], float(result.deviation))
                if result.embedding is not None:
                    emb[role] = _store(emb[role], result.embedding, idx, n)
            sizes[i] = len(idx)
        return PairedOutput(baseline=out["baseline"], candidate=out["candidate"], latency=latency,
                            batch_sizes=sizes, embeddings=emb, deviation=deviation)

    def close(self) -> None:
        self.baseline.close()
        self.candidate.close()

    def __enter__(self) -> "PairedRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _empty_embedding(r: Any, n: int) -> np.ndarray | None:
    d = getattr(r, "embedding_dim", None)
    return None if d is None else np.empty((n, int(d)), dtype=np.float64)


def _store(target: np.ndarray | None, values: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    if target is None:
        target = np.empty((n, values.shape[1]), dtype=np.float64)
    target[idx] = values
    return target

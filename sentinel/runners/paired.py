"""Run the baseline and the candidate on exactly the same rows, batch by batch."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .base import Runner, check_input


@dataclass
class PairedOutput:
    """Outputs of one paired run.

    Attributes:
        baseline: ``(n, k)`` float64 probabilities from the baseline.
        candidate: ``(n, k)`` float64 probabilities from the candidate, same row order.
        latency: per-batch wall time in seconds of each ``predict_proba`` call, keyed
            ``"baseline"`` and ``"candidate"``; both arrays have one entry per batch.
        batch_sizes: number of rows of each batch (the last one may be short).
    """

    baseline: np.ndarray
    candidate: np.ndarray
    latency: dict[str, np.ndarray]
    batch_sizes: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.baseline.shape[0])


def _describe(r: Runner) -> str:
    return f"{r.role} {r.path} ({r.runtime}, input_shape={tuple(r.input_shape)}, n_outputs={r.n_outputs})"


class PairedRunner:
    """Feeds the same batches to a baseline and a candidate runner.

    Per batch, both models run back to back and the order alternates (baseline first on even
    batches, candidate first on odd ones): warm caches, CPU frequency changes and noisy
    neighbours then hit both models equally, so their latency comparison stays fair.

    Args:
        baseline, candidate: loaded runners; their ``input_shape`` and ``n_outputs`` must match.
        clock: monotonic clock returning seconds (injectable for tests).

    Raises:
        ValueError: the two runners disagree on input shape or number of classes.
    """

    def __init__(self, baseline: Runner, candidate: Runner, *, clock: Callable[[], float] = time.perf_counter):
        if tuple(baseline.input_shape) != tuple(candidate.input_shape) or baseline.n_outputs != candidate.n_outputs:
            raise ValueError(
                f"baseline and candidate do not fit together: {_describe(baseline)} vs {_describe(candidate)}"
            )
        self.baseline = baseline
        self.candidate = candidate
        self.clock = clock

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.baseline.input_shape)

    @property
    def n_outputs(self) -> int:
        return self.baseline.n_outputs

    def run(self, x: np.ndarray, batch_size: int) -> PairedOutput:
        """Run both models on ``x`` (``(n, *input_shape)``) in batches of ``batch_size`` rows."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        x = check_input(x, self.input_shape, "paired run")
        n, k = len(x), self.n_outputs
        out = {"baseline": np.empty((n, k), dtype=np.float64), "candidate": np.empty((n, k), dtype=np.float64)}
        n_batches = -(-n // batch_size)
        latency = {"baseline": np.empty(n_batches), "candidate": np.empty(n_batches)}
        sizes = np.empty(n_batches, dtype=np.int64)
        runners = {"baseline": self.baseline, "candidate": self.candidate}

        for i in range(n_batches):
            lo, hi = i * batch_size, min(n, (i + 1) * batch_size)
            batch = x[lo:hi]
            order = ("baseline", "candidate") if i % 2 == 0 else ("candidate", "baseline")
            for role in order:
                t0 = self.clock()
                proba = runners[role].predict_proba(batch)
                latency[role][i] = self.clock() - t0
                out[role][lo:hi] = proba
            sizes[i] = hi - lo
        return PairedOutput(baseline=out["baseline"], candidate=out["candidate"], latency=latency, batch_sizes=sizes)

    def close(self) -> None:
        self.baseline.close()
        self.candidate.close()

    def __enter__(self) -> "PairedRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

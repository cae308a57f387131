"""Interleaved latency measurement of two runners on the same inputs.

Why this shape: on a shared machine the noise that matters is slow drift (another tenant, CPU
frequency, cache pressure) which hits whatever runs *at that moment*. Timing baseline and
candidate alternately, call by call (A B, B A, A B, ...), on the same rows puts both models
under the same drift, so their ratio stays honest even when absolute latencies wander. A
warm-up that is not counted absorbs allocator and cache setup, and the garbage collector is
paused while timing so its pauses do not land on one model by chance.
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..runners.paired import model_batch, signature_of
from ..tensors import Batch, Row, Signature

ROLES = ("baseline", "candidate")
#: Latency distributions are stored as this many evenly spaced quantiles (a sketch): enough for
#: the rank test and tail quantiles, small enough for the run record.
SKETCH_POINTS = 512


@dataclass
class Timing:
    """Per-call wall times (seconds) of each role at one batch size, taken interleaved."""
    batch_size: int
    seconds: dict[str, np.ndarray]
    warmup_calls: int
    elapsed: float                      # wall time spent, warm-up included
    order: str = "alternating ABBA"

    @property
    def calls(self) -> int:
        return int(min((v.size for v in self.seconds.values()), default=0))

    def summary(self) -> dict[str, Any]:
        """JSON-able: per role p50/p95/p99/mean (seconds), rows per second, and a quantile sketch."""
        return {"batch_size": self.batch_size, "calls": self.calls, "warmup_calls": self.warmup_calls,
                "elapsed_seconds": round(self.elapsed, 3), "order": self.order,
                "roles": {role: summarize(v, self.batch_size) for role, v in self.seconds.items()}}


def summarize(seconds: np.ndarray, batch_size: int = 1) -> dict[str, Any]:
    """p50/p95/p99/mean of per-call seconds, throughput in rows/s, and the quantile sketch."""
    v = np.asarray(seconds, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0}
    mean = float(v.mean())
    return {"n": int(v.size), "p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
            "p99": float(np.percentile(v, 99)), "mean": mean,
            "throughput_rows_per_second": batch_size / mean if mean > 0 else None,
            "sketch": sketch(v)}


def sketch(v: np.ndarray, points: int = SKETCH_POINTS) -> list[float]:
    """``points`` evenly spaced quantiles of ``v`` (all of ``v``, sorted, when it is smaller)."""
    v = np.sort(np.asarray(v, dtype=float))
    if v.size <= points:
        return [float(x) for x in v]
    return [float(x) for x in np.quantile(v, (np.arange(points) + 0.5) / points)]


def batches(x: np.ndarray | Sequence[Row], batch_size: int, count: int,
            signature: Signature | None = None) -> list[np.ndarray | Batch]:
    """``count`` batches of ``batch_size`` rows cycling through ``x`` (tiled when it is short).
    ``x`` is a stacked array, or rows collated per batch with ``signature`` (padded to each
    batch's longest row, as a paired run does)."""
    if len(x) == 0:
        raise ValueError("no rows to time")
    if len(x) < batch_size:
        reps = -(-batch_size // len(x))
        x = np.concatenate([x] * reps) if isinstance(x, np.ndarray) else list(x) * reps
    starts = [(i * batch_size) % (len(x) - batch_size + 1) for i in range(count)]
    if isinstance(x, np.ndarray):
        return [np.ascontiguousarray(x[s:s + batch_size]) for s in starts]
    if signature is None:
        raise ValueError("timing rows needs the models' signature to batch them")
    return [model_batch(x[s:s + batch_size], signature) for s in starts]


def time_interleaved(runners: dict[str, Any], x: np.ndarray | Sequence[Row], batch_size: int, *, budget_seconds: float,
                     warmup_seconds: float = 0.3, max_calls: int = 20000, min_calls: int = 20,
                     clock: Callable[[], float] = time.perf_counter, signature: Signature | None = None) -> Timing:
    """Time ``predict_proba`` of each runner on the same batches, alternating which goes first.

    ``x``: a stacked array or a sequence of rows, batched with ``signature`` (default: the
    first runner's) and padded per batch like a paired run; the batches are built before
    timing, so collating is not timed.

    Runs rounds (one call per role) until ``budget_seconds`` of timed rounds have passed or
    ``max_calls`` rounds are done (at least ``min_calls``), after ``warmup_seconds`` of
    uncounted rounds. Round ``i`` uses the same batch for every role. With two roles the order is
    A B on even rounds and B A on odd ones, so each role runs first, second, after the other and
    after itself equally often. With more roles a fixed rotation cannot do that (in A B C / C B A,
    B never follows itself and runs on a cache someone else warmed: measured here, that alone
    made one of two identical ONNX models look 10-15% slower), so each round's order is a
    permutation drawn from a seeded generator: every role is equally likely in every position.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    roles = list(runners)
    if signature is None and not isinstance(x, np.ndarray) and roles:
        signature = signature_of(runners[roles[0]])
    pool = batches(x, batch_size, 64, signature)
    start = clock()
    warm = 0
    while clock() - start < warmup_seconds or warm < 2:
        for role in roles:
            runners[role].predict_proba(pool[warm % len(pool)])
        warm += 1
    out = {role: np.empty(max_calls) for role in roles}
    shuffle = np.random.default_rng(0) if len(roles) > 2 else None
    n = 0
    enabled = gc.isenabled()
    gc.disable()
    try:
        t_begin = clock()
        while n < max_calls and (n < min_calls or clock() - t_begin < budget_seconds):
            batch = pool[n % len(pool)]
            order = ([roles[i] for i in shuffle.permutation(len(roles))] if shuffle is not None
                     else roles if n % 2 == 0 else roles[::-1])
            for role in order:
                t0 = clock()
                runners[role].predict_proba(batch)
                out[role][n] = clock() - t0
            n += 1
    finally:
        if enabled:
            gc.enable()
    return Timing(batch_size, {role: out[role][:n].copy() for role in roles}, warm, clock() - start,
                  order="alternating ABBA" if shuffle is None else "seeded random permutation per round")


@dataclass
class PerfMeasurement:
    """Everything one revalidation measured; ``to_record()`` is what the run record stores."""
    fingerprint: dict[str, Any]
    timings: list[Timing]
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_bytes: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    control: str = ""                   # sha256 of the baseline: the reference clock of the run
    elapsed: float = 0.0
    #: what perf_history judges this candidate against (sentinel.perf.accepted.choose_reference);
    #: with kind ``accepted_model`` the timings also carry the role ``accepted``
    reference: dict[str, Any] = field(default_factory=dict)
    #: joules per 1,000 inferences per role, or status unavailable and why (sentinel/perf/energy.py)
    energy: dict[str, Any] = field(default_factory=dict)

    def timing(self, batch_size: int) -> Timing | None:
        return next((t for t in self.timings if t.batch_size == batch_size), None)

    def to_record(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "control": self.control, "settings": self.settings,
                "timings": [t.summary() for t in self.timings], "memory": self.memory,
                "model_bytes": self.model_bytes, "reference": self.reference,
                "elapsed_seconds": round(self.elapsed, 3), **({"energy": self.energy} if self.energy else {})}

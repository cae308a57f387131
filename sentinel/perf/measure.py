"""One revalidation's performance measurement of a model pair (see docs/performance.md)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .fingerprint import fingerprint
from .memory import collect, session_peak_memory
from .timing import PerfMeasurement, Timing, time_interleaved


def measure_pair(baseline: Any, candidate: Any, x: np.ndarray, *, serving_batch_size: int, settings: Any,
                 specs: dict[str, Any] | None = None, accepted: Any = None, reference: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> PerfMeasurement:
    """Time both runners interleaved on the rows ``x`` at batch 1 and at the serving batch size
    (the budget split evenly between them), then measure each session's peak memory in a fresh
    subprocess (after the timing, so the probes cannot disturb it).

    ``accepted``: a runner of the accepted candidate file (sentinel.perf.accepted), timed in the
    same rounds as a third role so perf_history compares the two under the same machine drift;
    or a dict ``{"candidate": [...], "accepted": [...]}`` of fresh sessions
    (:func:`sentinel.perf.accepted.ab_sessions`), each timed as its own role and pooled per model
    (then ``candidate`` itself is not timed);
    ``reference`` (what choose_reference said) is recorded with the measurement. The fingerprint
    covers baseline and candidate only: the accepted file runs with the candidate's settings.

    ``settings`` is a :class:`sentinel.config.PerfConfig`; ``specs`` maps role to its
    :class:`sentinel.config.ModelSpec` (output mode and providers for the memory probe).
    """
    t0 = clock()
    runners = {"baseline": baseline, "candidate": candidate}
    pools: dict[str, list[str]] = {}
    if isinstance(accepted, dict):   # {"candidate": [sessions], "accepted": [sessions]} (ab_sessions)
        timed = {"baseline": baseline}
        for role, sessions in accepted.items():
            for i, r in enumerate(sessions):
                timed[f"{role}#{i + 1}"] = r
                pools.setdefault(role, []).append(f"{role}#{i + 1}")
    else:
        timed = {**runners, "accepted": accepted} if accepted is not None else runners
    sizes = sorted({1, int(serving_batch_size)})
    share = settings.budget_seconds / len(sizes)
    timings = [_pooled(time_interleaved(timed, x, b, budget_seconds=share, warmup_seconds=settings.warmup_seconds,
                                        max_calls=settings.max_calls, clock=clock), pools) for b in sizes]
    memory: dict[str, dict[str, Any]] = {}
    if settings.memory:
        pending = {role: session_peak_memory(
            path=str(r.path), runtime=r.runtime, role=role, sha256=r.sha256,
            output=getattr((specs or {}).get(role), "output", getattr(r, "output", "probabilities")),
            threads=getattr(r, "threads", None), providers=getattr(r, "providers", None),
            batch_size=int(serving_batch_size)) for role, r in runners.items()}
        memory = {role: collect(p) for role, p in pending.items()}
    return PerfMeasurement(
        fingerprint=fingerprint(runners), timings=timings, memory=memory,
        model_bytes={role: os.path.getsize(r.path) for role, r in runners.items()},
        settings={"budget_seconds": settings.budget_seconds, "warmup_seconds": settings.warmup_seconds,
                  "max_calls": settings.max_calls, "batch_sizes": sizes,
                  "threads": {role: getattr(r, "threads", None) for role, r in runners.items()},
                  "providers": {role: getattr(r, "providers", None) for role, r in runners.items()}},
        control=baseline.sha256, elapsed=clock() - t0, reference=dict(reference or {}))


def _pooled(t: Timing, pools: dict[str, list[str]]) -> Timing:
    """Merge the per-session roles of ``t`` into one role per model."""
    if not pools:
        return t
    seconds = {k: v for k, v in t.seconds.items() if not any(k in keys for keys in pools.values())}
    for role, keys in pools.items():
        seconds[role] = np.concatenate([t.seconds[k] for k in keys])
    return Timing(t.batch_size, seconds, t.warmup_calls, t.elapsed,
                  order=f"{t.order}; {', '.join(f'{len(k)} sessions of {r}' for r, k in pools.items())}")

"""One revalidation's performance measurement of a model pair (see docs/performance.md): the
interleaved timing and memory probes when ``perf.enabled``, else a short batch-1 timing that only
feeds the latency check; and the perf record a run stores."""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import check_cancel
from ..runners.base import output_options
from ..runners.paired import signature_of
from ..tensors import Row, Signature, row_length
from .accepted import accepted_reference
from .energy import POWERCAP, role_energy
from .fingerprint import fingerprint
from .memory import collect, session_peak_memory
from .timing import PerfMeasurement, Timing, sketch, time_interleaved

#: what is timed: a stacked array (single-input models) or a sequence of rows
Rows = np.ndarray | Sequence[Row]

LATENCY_CALLS = 50     # batch-1 timed calls per role when perf measurement is disabled
LATENCY_WARMUP = 3


def measure_run(cfg: Any, loaded: Any, paired: Any, x: Rows, history: list[dict[str, Any]], *,
                cancel: threading.Event | None = None) -> tuple[PerfMeasurement | None, dict[str, np.ndarray]]:
    """The run's performance measurement (None when ``perf.enabled`` is false) and the per-call
    batch-1 seconds of each role the latency check reads. ``loaded`` is the pair (``name``,
    ``baseline``, ``candidate``, ``batch_size``), ``paired`` its PairedRunner,
    ``x`` the rows (a stacked array or a sequence of rows, batched with ``paired.signature``),
    ``history`` its accepted perf history (the candidate is timed against the accepted file
    when :func:`~sentinel.perf.accepted.accepted_reference` finds one)."""
    if not cfg.perf.enabled:
        return None, time_calls(paired, x)
    pc = cfg.pairs[loaded.name]
    spec = pc.candidate_spec(getattr(loaded, "candidate_name", None))   # the view's, with several candidates
    reference, sessions = accepted_reference(cfg, loaded.name, loaded.baseline, loaded.candidate, history, spec=spec)
    try:
        perf = measure_pair(loaded.baseline, loaded.candidate, x, serving_batch_size=loaded.batch_size,
                            settings=cfg.perf, specs={"baseline": pc.baseline, "candidate": spec},
                            accepted=sessions, reference=reference, cancel=cancel,
                            signature=getattr(paired, "signature", None))
    finally:
        for r in [r for group in (sessions or {}).values() for r in group]:
            r.close()
    return perf, dict(perf.timing(1).seconds)


def time_calls(paired: Any, x: Rows) -> dict[str, np.ndarray]:
    """Batch-1 latency of each role on the same rows (a stacked array or a sequence of rows),
    interleaved by the paired runner, after a warm-up that is not counted (the latency check's
    input when perf measurement is off)."""
    rows = x[: LATENCY_CALLS + LATENCY_WARMUP]
    if len(rows) <= LATENCY_WARMUP:
        reps = LATENCY_WARMUP + 2
        rows = (np.concatenate([rows] * reps) if isinstance(rows, np.ndarray) else list(rows) * reps)[:reps]
    paired.run(rows[:LATENCY_WARMUP], 1)
    out = paired.run(rows[LATENCY_WARMUP:], 1)
    return {k: np.asarray(v, dtype=float) for k, v in out.latency.items()}


def perf_record(perf: PerfMeasurement | None, served: np.ndarray | None, served_field: str) -> dict[str, Any] | None:
    """What the run record keeps under ``perf``: the measurement, and a sketch of the served
    latency the messages reported (``served``, seconds); None when there is neither."""
    record = perf.to_record() if perf is not None else None
    if served is not None and served.size:
        record = record or {}
        record["served"] = {"field": served_field, "n": int(served.size), "sketch": sketch(served)}
    return record


def measure_pair(baseline: Any, candidate: Any, x: Rows, *, serving_batch_size: int, settings: Any,
                 specs: dict[str, Any] | None = None, accepted: dict[str, list[Any]] | None = None, reference: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.perf_counter, cancel: threading.Event | None = None,
                 signature: Signature | None = None, powercap: str = str(POWERCAP)) -> PerfMeasurement:
    """Time both runners interleaved on the rows ``x`` at batch 1 and at the serving batch size
    (the budget split evenly between them), then measure each session's peak memory in a fresh
    subprocess (after the timing, so the probes cannot disturb it).

    ``accepted``: fresh sessions ``{"candidate": [...], "accepted": [...]}`` of the new and the
    accepted candidate file (:func:`sentinel.perf.accepted.ab_sessions`), timed in the same
    rounds (see :func:`time_pooled`) so perf_history compares the two under the same machine
    drift; the long-lived ``candidate`` runner itself is then not timed. ``reference`` (what
    choose_reference said) is recorded with the measurement. The fingerprint covers baseline and
    candidate only: the accepted file runs with the candidate's settings.

    ``x``: a stacked array or a sequence of rows, batched with ``signature`` (default: the
    baseline's; the paired runner's carries the configured pads) and padded per batch.
    ``settings`` is a :class:`sentinel.config.PerfConfig`; ``specs`` maps role to its
    :class:`sentinel.config.ModelSpec` (output kind and outputs for the memory probe, which
    runs one serving batch of rows as long as the longest of ``x``).
    ``cancel``: when set (the daemon is stopping), RunCancelled is raised before the next timing
    phase or memory probe, and no probe process is started. ``powercap``: the RAPL sysfs root the
    energy measurement reads (sentinel/perf/energy.py).
    """
    t0 = clock()
    runners = {"baseline": baseline, "candidate": candidate}
    singles = {"baseline": baseline} if accepted else runners
    if signature is None and not isinstance(x, np.ndarray):
        signature = signature_of(baseline)
    sizes = sorted({1, int(serving_batch_size)})
    share = settings.budget_seconds / len(sizes)
    timings = []
    for b in sizes:
        check_cancel(cancel, f"perf timing at batch size {b}")
        timings.append(time_pooled(singles, accepted or {}, x, b, budget_seconds=share, clock=clock,
                                   warmup_seconds=settings.warmup_seconds, max_calls=settings.max_calls,
                                   signature=signature))
    check_cancel(cancel, "energy measurement")
    energy = role_energy(runners, x, int(serving_batch_size), settings, powercap=powercap,   # energy.py
                         signature=signature)
    memory: dict[str, dict[str, Any]] = {}
    if settings.memory:
        check_cancel(cancel, "memory probes")
        length = _longest(x, signature)
        pending = {role: session_peak_memory(
            path=str(r.path), runtime=r.runtime, role=role, sha256=r.sha256,
            output=getattr((specs or {}).get(role), "output", getattr(r, "output", "probabilities")),
            threads=getattr(r, "threads", None), providers=getattr(r, "providers", None),
            batch_size=int(serving_batch_size), cancel=cancel, length=length,
            options=output_options((specs or {}).get(role))) for role, r in runners.items()}
        memory = {role: collect(p) for role, p in pending.items()}
        check_cancel(cancel, "the checks (memory probes were stopped)")
    return PerfMeasurement(
        fingerprint=fingerprint(runners), timings=timings, memory=memory,
        model_bytes={role: os.path.getsize(r.path) for role, r in runners.items()},
        settings={"budget_seconds": settings.budget_seconds, "warmup_seconds": settings.warmup_seconds,
                  "max_calls": settings.max_calls, "batch_sizes": sizes,
                  "threads": {role: getattr(r, "threads", None) for role, r in runners.items()},
                  "providers": {role: getattr(r, "providers", None) for role, r in runners.items()}},
        control=baseline.sha256, elapsed=clock() - t0, reference=dict(reference or {}), energy=energy)


def _longest(x: Rows, signature: Signature | None) -> int | None:
    """The longest row of ``x`` along its dynamic dimension (None: fixed-shape rows)."""
    if isinstance(x, np.ndarray) or signature is None or all(s.static for s in signature.inputs) or not len(x):
        return None
    return max(row_length(r, signature) for r in x)


def time_pooled(runners: dict[str, Any], sessions: dict[str, list[Any]], x: Rows, batch_size: int,
                **kw: Any) -> Timing:
    """:func:`time_interleaved` over ``runners`` plus every session in ``sessions`` (model name ->
    several sessions of it) as a role of its own, then each model's sessions pooled into one
    role. ``kw`` goes to time_interleaved."""
    timed = dict(runners)
    keys = {model: [f"{model}#{i + 1}" for i in range(len(group))] for model, group in sessions.items()}
    for model, group in sessions.items():
        timed.update(zip(keys[model], group))
    t = time_interleaved(timed, x, batch_size, **kw)
    if not sessions:
        return t
    seconds = {role: t.seconds[role] for role in runners}
    seconds.update({model: np.concatenate([t.seconds[k] for k in ks]) for model, ks in keys.items()})
    return Timing(t.batch_size, seconds, t.warmup_calls, t.elapsed,
                  order=f"{t.order}; {', '.join(f'{len(ks)} sessions of {m}' for m, ks in keys.items())}")

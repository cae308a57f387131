"""A pair with several candidates (``candidates: {int8: ..., pruned50: ...}``), judged in one run:
the baseline runs once per distinct batch (the window, the reference window, the rows a check
makes up) and every candidate is compared with those same baseline outputs; each candidate's
checks, perf measurement (against the baseline) and results are its own, its results carry its
name, and the run record gets the trade-off table (sentinel.checks.tradeoff).

Each candidate is evaluated through a *view* of the pair: the LoadedPair with that one candidate
and the shared baseline, so the single-candidate code path does the work unchanged."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any, Iterator, Sequence

import numpy as np

from ..checks.base import CheckResult
from ..checks.tradeoff import tradeoff_table
from ..perf.history import joins_history
from ..runners.paired import _call

__all__ = ["SharedBaseline", "evaluate_candidates", "views"]


class SharedBaseline:
    """The baseline runner, run once per distinct batch: a batch seen before (same arrays, same
    dtype and shape) gets the outputs of its first run. Everything else is the runner's. Only
    the paired runs that produce outputs go through it: timing uses the runner itself, so every
    timed call is a real one (Revalidator._paired(shared=False))."""

    def __init__(self, runner: Any):
        self.runner = runner
        self._memo: dict[bytes, Any] = {}
        self.hits = 0
        self.misses = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)

    def run(self, batch: Any) -> Any:
        key = _digest(batch)
        out = self._memo.get(key)
        if out is None:
            out = self._memo[key] = _call(self.runner, batch)
            self.misses += 1
        else:
            self.hits += 1
        return out

    def clear(self) -> None:
        self._memo.clear()


def _digest(batch: Any) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    items = sorted(batch.items()) if isinstance(batch, dict) else [("", batch)]
    for name, arr in items:
        a = np.ascontiguousarray(arr)
        h.update(f"{name}\x1f{a.dtype.str}\x1f{a.shape}\x1e".encode())
        h.update(a.tobytes())
    return h.digest()


def views(loaded: Any, shared: SharedBaseline) -> Iterator[tuple[str, Any]]:
    """(name, the pair seen with that candidate alone and the shared baseline), in config order."""
    for name, runner in loaded.candidates.items():
        yield name, replace(loaded, candidate=runner, candidates={}, candidate_name=name, shared_baseline=shared)


def evaluate_candidates(revalidator: Any, loaded: Any, samples: Sequence[Any], *, before_run: int | None = None,
                        reference_runs: list[int] | None = None) -> tuple[list[CheckResult], Any, None]:
    """Every candidate's checks on ``samples``: all results (each with its ``candidate``), the
    first candidate's RunData (its ``notes`` carry every candidate's: ``candidates`` with each
    one's outputs note and perf record, ``tradeoff`` the table; ``candidate_outputs`` each one's
    outputs) and None for the perf record (a
    run of several candidates keeps each one's under ``candidates.<name>.perf``)."""
    shared = SharedBaseline(loaded.baseline)
    results: list[CheckResult] = []
    per: dict[str, dict[str, Any]] = {}
    first = None
    try:
        for name, view in views(loaded, shared):
            got, data, perf = revalidator.evaluate_data(view, samples, before_run=before_run,
                                                        reference_runs=reference_runs)
            for r in got:
                r.candidate = name
            results += got
            per[name] = {"runner": view.candidate, "data": data, "perf": perf, "results": got}
            first = first or data
    finally:
        shared.clear()
    notes = {k: v for k, v in first.notes.items() if k != "outputs"}
    # each candidate's perf record joins that candidate's own accepted history (perf.history)
    notes["candidates"] = {name: {"outputs": p["data"].notes.get("outputs"),
                                  **({"perf": {**p["perf"], "accepted": joins_history(p["results"])}}
                                     if p["perf"] is not None else {})} for name, p in per.items()}
    notes["baseline_runs"] = {"batches": shared.misses, "reused": shared.hits}
    notes["tradeoff"] = tradeoff_table(loaded.baseline, per)
    first.notes = notes
    first.candidate_outputs = {name: p["data"].candidate for name, p in per.items()}   # each one's diagnosis
    return results, first, None

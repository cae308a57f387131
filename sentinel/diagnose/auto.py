"""Diagnoses kept with their run: the automatic one after a run whose ``decision_flips``,
``calibration`` or ``robustness`` result failed, and the on-demand one (console button,
``sentinel diagnose``), both stored in the run's record under ``diagnosis`` so the report, the
console and the API show it without running a graph again.

The stored entry (a single-candidate pair's)::

    {"by": "auto" | "<user>" | "cli", "at": "<ISO 8601 UTC>", "seconds": 0.41,
     "trigger": [{"check": "decision_flips", "slice": "overall", "type": "decision_flips"}, ...],
     "result": Diagnosis.to_dict()}        # or "error": "<why it could not be diagnosed>"

A pair with several candidates (``candidates:``) keeps one such entry per candidate diagnosed,
each on that candidate's own flipped rows against the baseline, its ``result`` naming it
(``"candidate": "int8"``)::

    {"candidates": {"int8": {"by": ..., "result": ...}, "pruned50": {"by": ..., "error": ...}}}

Like the rest of this package it imports nothing from the store, the runners or the
revalidation: the caller hands in the config, the store, the loaded pair and the run's data."""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..verdict import result_type
from .figures import DiagnoseError, Diagnosis

log = logging.getLogger("sentinel.diagnose")

#: the check types whose failure starts an automatic diagnosis (issue 14: where the candidate's
#: decisions or probabilities part from the baseline's; drift and latency say nothing about layers)
TRIGGERS = ("decision_flips", "calibration", "robustness")
RECORD_KEY = "diagnosis"
MAX_TRIGGERS = 20   # results listed in the entry (a run failing on hundreds of slices names the first)


def triggering(results: Sequence[Any], candidate: str | None = None) -> list[dict[str, str]]:
    """The failing results (CheckResult objects or stored result rows) of a type in
    :data:`TRIGGERS` judging ``candidate`` (None: a single-candidate pair's results, which name
    none): what an automatic diagnosis is for."""
    out = []
    for r in results:
        row = r if isinstance(r, dict) else {"check": r.check, "slice": r.slice, "status": r.status,
                                             "evidence": {"check_type": r.type}, "candidate": r.candidate}
        typ = result_type(row)
        if row["status"] == "fail" and typ in TRIGGERS and row.get("candidate") == candidate:
            out.append({"check": row["check"], "slice": row["slice"], "type": typ})
    return out[:MAX_TRIGGERS]


def stored(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """The diagnosis entry kept in ``run``'s record, None when the run has none. For a pair with
    several candidates it is ``{"candidates": {name: entry}}`` (:func:`entries`)."""
    entry = ((run or {}).get("record") or {}).get(RECORD_KEY)
    return entry if isinstance(entry, dict) else None


def entries(entry: dict[str, Any] | None) -> dict[str | None, dict[str, Any]]:
    """The per-candidate entries of a stored diagnosis entry, by candidate name: ``{None: entry}``
    for a single-candidate pair's (the shape kept since before candidates had names)."""
    if not entry:
        return {}
    if isinstance(entry.get("candidates"), dict):
        return {name: e for name, e in entry["candidates"].items() if isinstance(e, dict)}
    return {None: entry}


def stored_diagnosis(run: dict[str, Any] | None, candidate: str | None = None) -> Diagnosis | None:
    """The stored Diagnosis of ``run``'s ``candidate`` (None: the single candidate's); None when
    none was stored, or the stored one is an error."""
    entry = entries(stored(run)).get(candidate)
    return Diagnosis.from_dict(entry["result"]) if entry and isinstance(entry.get("result"), dict) else None


def entry_for(result: Diagnosis | None, *, by: str, trigger: list[dict[str, str]], seconds: float,
              error: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"by": by, "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                             "seconds": round(seconds, 3), "trigger": trigger}
    if result is not None:
        entry["result"] = result.to_dict()
    else:
        entry["error"] = error
    return entry


def auto_diagnose(cfg: Any, store: Any, loaded: Any, outcome: Any, samples: Sequence[Any], data: Any, *,
                  cancel: Any = None, clock: Callable[[], float] = time.monotonic) -> dict[str, Any] | None:
    """Diagnose the run ``outcome`` (a ``revalidation.RunOutcome``, already stored) when one of its
    :data:`TRIGGERS` results failed and ``pairs.<name>.diagnose.auto`` is on; store the entry in the
    run's record (and in ``outcome.record``) and return it. None when nothing was diagnosed. In a
    pair with several candidates each candidate with a failing trigger is diagnosed on its own
    flipped rows (its outputs against the baseline's), the entry ``{"candidates": {name: entry}}``.

    Never raises: the run is already stored and stays as it is. A diagnosis that cannot be made
    (no float twin file, rows that do not fit the graphs, a graph that does not run) is stored as
    an entry with ``error`` and logged; a store that refuses the entry is logged. The cost is
    bounded by ``diagnose.max_rows``: both models' outputs on the window come from ``data``, and
    only the picked rows go through the graphs."""
    try:
        pc = cfg.pairs[outcome.pair]
        if not pc.diagnose.auto or not samples:
            return None
        per: dict[str | None, dict[str, Any]] = {}
        for name in (list(pc.candidates) if pc.multi else [None]):
            trigger = triggering(outcome.results, name)
            if trigger:
                per[name] = _diagnose(cfg, pc, loaded, outcome, samples, data, trigger, cancel, clock, name)
        if not per:
            return None
        entry = {"candidates": per} if pc.multi else per[None]
        store.set_record_entry(outcome.run_id, RECORD_KEY, entry)
        outcome.record[RECORD_KEY] = entry
        return entry
    except Exception:   # a broken diagnosis never breaks the run it explains
        log.exception("diagnosis not stored", extra={"pair": outcome.pair, "run_id": outcome.run_id})
        return None


def _outputs(data: Any, candidate: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The baseline's and ``candidate``'s outputs on the run's window (RunData: each candidate's
    of a pair with several under ``candidate_outputs``)."""
    cand = data.candidate if candidate is None else (data.candidate_outputs or {}).get(candidate)
    if cand is None:
        raise DiagnoseError("", f"the run kept no outputs of candidate {candidate!r}")
    return np.asarray(data.baseline), np.asarray(cand)


def _diagnose(cfg: Any, pc: Any, loaded: Any, outcome: Any, samples: Sequence[Any], data: Any,
              trigger: list[dict[str, str]], cancel: Any, clock: Callable[[], float],
              candidate: str | None) -> dict[str, Any]:
    from .run import diagnose_samples

    t0 = clock()
    extra = {"pair": outcome.pair, "run_id": outcome.run_id, **({"candidate": candidate} if candidate else {})}
    try:
        if cancel is not None and cancel.is_set():
            raise DiagnoseError("", "skipped: the daemon is shutting down (run `sentinel diagnose` later)")
        base, cand = _outputs(data, candidate)
        if len(base) != len(samples) or len(cand) != len(samples):
            raise DiagnoseError("", f"the run has outputs for {len(base)} of its {len(samples)} rows")
        d = diagnose_samples(cfg, pc, samples, base, cand, name=outcome.pair,
                             input_shape=getattr(loaded.shape, "input_shape", None), candidate=candidate)
        d.run_id = outcome.run_id
    except (DiagnoseError, ConfigError) as exc:
        log.warning("diagnosis failed", extra={**extra, "reason": str(exc)})
        return entry_for(None, by="auto", trigger=trigger, seconds=clock() - t0, error=str(exc))
    except Exception as exc:  # onnxruntime and numpy raise their own types
        log.exception("diagnosis failed", extra=extra)
        return entry_for(None, by="auto", trigger=trigger, seconds=clock() - t0, error=f"{type(exc).__name__}: {exc}")
    log.info("diagnosis stored", extra={**extra, "mode": d.mode, "named": d.named, "origin": d.origin,
                                        "seconds": round(clock() - t0, 3)})
    return entry_for(d, by="auto", trigger=trigger, seconds=clock() - t0)


def diagnose_and_store(app: Any, run_id: int, *, by: str,
                       read_samples: Callable[[Any, dict[str, Any], Any], Sequence[Any]] | None = None,
                       clock: Callable[[], float] = time.monotonic, candidate: str | None = None
                       ) -> tuple[Diagnosis, dict[str, Any]]:
    """Diagnose stored run ``run_id`` now (one candidate: ``candidate`` of a pair with several) and
    keep the result in its record, replacing an earlier one; the Diagnosis and the run's entry.
    Raises as :func:`diagnose_and_store_candidates`, and UnknownCandidate when a pair with several
    candidates is given none."""
    from .figures import UnknownCandidate

    run = app.store.get_run(run_id) or {}
    pc = app.cfg.pairs.get(run.get("pair"))
    if pc is not None and pc.multi and candidate is None:
        raise UnknownCandidate(run["pair"], "", list(pc.candidates))
    got, entry = diagnose_and_store_candidates(app, run_id, by=by, read_samples=read_samples, clock=clock,
                                               candidate=candidate)
    return got[candidate], entry


def diagnose_and_store_candidates(app: Any, run_id: int, *, by: str,
                                  read_samples: Callable[[Any, dict[str, Any], Any], Sequence[Any]] | None = None,
                                  clock: Callable[[], float] = time.monotonic, candidate: str | None = None
                                  ) -> tuple[dict[str | None, Diagnosis], dict[str, Any]]:
    """Diagnose stored run ``run_id`` now (the console's Diagnose button, ``sentinel diagnose``) and
    keep the result in its record, replacing an earlier one: the diagnoses by candidate (None for
    a single-candidate pair) and the run's entry. In a pair with several candidates ``candidate``
    picks one (None: every one); the others' stored entries are kept. ``read_samples(store, run,
    shape)`` reads a run's samples, its input file included (``revalidation.run_samples``). Raises
    NotFoundError, ConfigError, DiagnoseError (UnknownCandidate) as
    :func:`~sentinel.diagnose.run.diagnose_run`; nothing is stored then."""
    from ..errors import NotFoundError
    from .run import candidate_names, diagnose_run

    run = app.store.get_run(run_id)
    if run is None:
        raise NotFoundError("run", run_id)
    pc = app.cfg.pairs.get(run["pair"])
    names = candidate_names(pc, candidate, pair=run["pair"]) if pc is not None else [candidate]
    samples = None
    if read_samples is not None and pc is not None:
        samples = read_samples(app.store, run, app.pair(run["pair"]).shape)
    got: dict[str | None, Diagnosis] = {}
    per: dict[str | None, dict[str, Any]] = {}
    for name in names:
        t0 = clock()
        got[name] = diagnose_run(app, app.cfg, run_id, samples=samples, candidate=name)
        per[name] = entry_for(got[name], by=by, trigger=triggering(run.get("results") or [], name),
                              seconds=clock() - t0)
    if names == [None]:
        entry = per[None]
    else:   # the other candidates' earlier diagnoses stay, in config order
        kept = {n: e for n, e in entries(stored(run)).items() if n is not None}
        entry = {"candidates": {n: per.get(n) or kept[n] for n in pc.candidates if n in per or n in kept}}
    app.store.set_record_entry(run_id, RECORD_KEY, entry)
    return got, entry

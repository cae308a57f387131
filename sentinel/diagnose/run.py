"""Diagnose a stored run: its samples, its pair's models, the rows that flipped.

Kept free of imports from the store, the runners and the revalidation (this package sits with
the base helpers): the caller hands in an ``App`` (``.store``, ``.pair(name)``) or a store plus
the loaded pair, and, for a run made on an input file, its samples
(``revalidation.run_samples``)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, NotFoundError
from .figures import Diagnosis
from .figures import DiagnoseError, UnknownCandidate
from .localise import Rows, diagnose_graphs, diagnose_outputs, take


def candidate_names(pc: Any, candidate: str | None, *, pair: str) -> list[str | None]:
    """The candidates a diagnosis covers: ``[None]`` for a single-candidate pair; for a pair with
    several, ``[candidate]``, or every one in config order when ``candidate`` is None. Raises
    UnknownCandidate naming the choices."""
    if not pc.multi:
        if candidate is not None:
            raise UnknownCandidate(pair, candidate, [])
        return [None]
    names = list(pc.candidates)
    if candidate is None:
        return names
    if candidate not in names:
        raise UnknownCandidate(pair, candidate, names)
    return [candidate]


def diagnose_run(app_or_store: Any, cfg: Any, run_id: int, *, loaded: Any = None,
                 samples: Sequence[Any] | None = None, candidate: str | None = None) -> Diagnosis:
    """Where the candidate of run ``run_id`` diverges, on that run's flipped rows and as many
    agreeing ones (at most ``pairs.<name>.diagnose.max_rows`` each). A pair with several
    candidates needs ``candidate`` (:func:`diagnose_run_candidates` does every one).

    ``app_or_store``: an App, or a store (then ``loaded``, the pair's ``revalidation.LoadedPair``,
    is required). ``samples``: the run's samples when already read (needed for a run made on an
    input file); else the store's. The API route (``GET /api/v1/runs/{id}/diagnosis``) calls this
    with the daemon's App and returns ``Diagnosis.to_dict()``.
    Raises NotFoundError (no such run), ConfigError (its pair is not configured), DiagnoseError
    (UnknownCandidate: no candidate, or one the pair does not list)."""
    run = getattr(app_or_store, "store", app_or_store).get_run(run_id) or {}
    pc = cfg.pairs.get(run.get("pair"))
    if pc is not None and pc.multi and candidate is None:    # refused before any model runs
        raise UnknownCandidate(run["pair"], "", list(pc.candidates))
    return diagnose_run_candidates(app_or_store, cfg, run_id, loaded=loaded, samples=samples, candidate=candidate)[candidate]


def diagnose_run_candidates(app_or_store: Any, cfg: Any, run_id: int, *, loaded: Any = None,
                            samples: Sequence[Any] | None = None, candidate: str | None = None
                            ) -> dict[str | None, Diagnosis]:
    """:func:`diagnose_run` for each candidate :func:`candidate_names` picks, by name (None for a
    single-candidate pair): each candidate's flipped rows against the baseline, the baseline run
    once on the run's rows."""
    store = getattr(app_or_store, "store", app_or_store)
    run = store.get_run(run_id)
    if run is None:
        raise NotFoundError("run", run_id)
    name = run["pair"]
    if name not in cfg.pairs:
        raise ConfigError(cfg.source, "pairs", f"run {run_id} is for pair {name!r}, not in this config")
    pc = cfg.pairs[name]
    names = candidate_names(pc, candidate, pair=name)
    loaded = loaded if loaded is not None else app_or_store.pair(name)
    if samples is None:
        if ((run.get("record") or {}).get("samples") or {}).get("kind") == "file":
            raise DiagnoseError("", f"run {run_id} was made on an input file; pass its samples (revalidation.run_samples)")
        samples = store.run_samples(run_id, name)
    if not samples:
        raise DiagnoseError("", f"run {run_id} has no stored samples to diagnose")
    shape = getattr(loaded.shape, "input_shape", None)
    rows = sample_rows(samples, shape)
    base = loaded.baseline.predict_proba(rows)
    out: dict[str | None, Diagnosis] = {}
    for c in names:
        runner = loaded.candidate if c is None else loaded.candidates[c]
        d = diagnose_samples(cfg, pc, samples, base, runner.predict_proba(rows), name=name, input_shape=shape,
                             rows=rows, candidate=c)
        d.run_id = run_id
        out[c] = d
    return out


def diagnose_samples(cfg: Any, pc: Any, samples: Sequence[Any], base: np.ndarray, cand: np.ndarray, *, name: str,
                     input_shape: Sequence[int] | None = None, rows: Rows | None = None,
                     candidate: str | None = None) -> Diagnosis:
    """The diagnosis of ``samples`` given both models' outputs on them (a run just evaluated has
    them: the automatic diagnosis runs no model on the whole window again). Only the rows picked
    (:func:`pick_rows`, at most ``max_rows`` flipped and as many agreeing) are stacked and run
    through the graphs; a candidate without a float twin needs no rows at all. ``rows``: every
    sample's stacked inputs when the caller already has them. ``candidate``: which one of a pair
    with several ``cand`` is (its own float twin and runtime are used)."""
    spec = _spec(pc, candidate, name)
    flipped = np.asarray(base).argmax(axis=1) != np.asarray(cand).argmax(axis=1)
    idx = pick_rows(flipped, pc.diagnose.max_rows, min_agreeing=pc.diagnose.min_agreeing, seed=cfg.revalidation.seed)
    picked: Rows | None = None
    if spec.float_reference is not None:
        picked = take(rows, idx) if rows is not None else sample_rows([samples[i] for i in idx], input_shape)
    d = diagnose_pair(cfg, pc, picked, flipped[idx], np.asarray(base)[idx], np.asarray(cand)[idx], name=name,
                      candidate=candidate)
    d.pair, d.candidate = name, candidate
    return d


def _spec(pc: Any, candidate: str | None, name: str) -> Any:
    """The spec of the candidate diagnosed: ``candidate`` of a pair with several (which must name
    one), else the pair's only one."""
    if candidate_names(pc, candidate, pair=name) != [candidate]:    # several, none named
        raise UnknownCandidate(name, "", list(pc.candidates))
    return pc.candidate_spec(candidate)


def diagnose_pair(cfg: Any, pc: Any, rows: Rows | None, flipped: np.ndarray, base: np.ndarray, cand: np.ndarray, *,
                  name: str = "", candidate: str | None = None) -> Diagnosis:
    """Tensor by tensor when the candidate is an ONNX graph with a float twin, else (or when no
    tensor matches by name) the output-level comparison, saying why. ``name``: the pair, for
    error messages; ``candidate``: which of a pair's several candidates (None: its only one)."""
    spec = _spec(pc, candidate, name or "<pair>")
    key = f"pairs.{name or '<pair>'}." + ("candidate" if candidate is None else f"candidates.{candidate}")
    ref = spec.float_reference
    if ref is None:
        return diagnose_outputs(base, cand, flipped, "the candidate has no float_reference (a pruned or distilled "
                                                     "candidate has no float twin to match layers with)")
    if spec.runtime != "onnxruntime":
        return diagnose_outputs(base, cand, flipped, f"the candidate runs on {spec.runtime}; "
                                                     "layers are matched in ONNX graphs only")
    if not cfg.resolve_path(ref).is_file():
        raise ConfigError(cfg.source, f"{key}.float_reference", f"file not found: {cfg.resolve_path(ref)}")
    if rows is None:
        raise DiagnoseError("", "no rows given to run through the graphs")
    try:
        return diagnose_graphs(cfg.resolve_path(ref), cfg.resolve_path(spec.path), rows, flipped,
                               baseline_out=base, candidate_out=cand, floor=pc.diagnose.sqnr_floor_db,
                               weight_floor=pc.diagnose.weight_sqnr_floor_db, top=pc.diagnose.top)
    except DiagnoseError as exc:
        if "no tensor matches" not in exc.reason:
            raise
        return diagnose_outputs(base, cand, flipped, exc.reason + " (a different network: pruned or distilled)")


def sample_rows(samples: Sequence[Any], input_shape: Sequence[int] | None) -> Rows:
    """The samples' inputs: one float32 array for flat inputs, else arrays by input name (every
    row of an input must have the same shape here: the diagnosis runs the rows as one batch)."""
    first = samples[0].inputs
    if isinstance(first, Mapping) and len(first) == 1 and input_shape:
        # one fixed-shape input: a plain array, which each model takes under its own input name
        (name,) = first
        try:
            x = np.stack([np.asarray(s.inputs[name], dtype=np.float32) for s in samples])
            return x.reshape((len(samples), *input_shape))
        except (KeyError, ValueError) as exc:
            raise DiagnoseError("", f"the run's rows do not fit the models' input shape {list(input_shape)} ({exc})") from exc
    if isinstance(first, Mapping):
        try:
            return {k: np.stack([np.asarray(s.inputs[k]) for s in samples]) for k in first}
        except (KeyError, ValueError) as exc:
            raise DiagnoseError("", f"the run's rows do not stack into one batch per input ({exc})") from exc
    x = np.asarray([s.inputs for s in samples], dtype=np.float32)
    return x.reshape((len(samples), *input_shape)) if input_shape else x


def pick_rows(flipped: np.ndarray, max_rows: int, *, min_agreeing: int = 100, seed: int = 0) -> np.ndarray:
    """Indexes of up to ``max_rows`` flipped rows and as many agreeing rows, but at least
    ``min_agreeing`` of those (the floors are judged on them: five rows say little), drawn with
    ``seed`` so a diagnosis can be repeated."""
    rng = np.random.default_rng(seed)
    fi, ai = np.flatnonzero(flipped), np.flatnonzero(~flipped)
    fi = np.sort(rng.choice(fi, size=min(len(fi), max_rows), replace=False)) if len(fi) else fi
    want = min(len(ai), max(len(fi), min_agreeing))
    ai = np.sort(rng.choice(ai, size=want, replace=False)) if want else ai[:0]
    return np.concatenate([fi, ai])

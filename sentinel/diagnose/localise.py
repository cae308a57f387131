"""Divergence localisation: a quantized candidate against the float graph it was quantized from,
tensor by tensor, on a run's flipped rows and on as many agreeing rows."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import graphs
from .figures import (DEFAULT_FLOORS, FLOOR_SOURCES, MAX_DB, Diagnosis, Sums, TensorFigures, WeightFigures,
                      output_figures, sqnr_db)
from .figures import DiagnoseError

Rows = np.ndarray | Mapping[str, np.ndarray]


def _n_rows(rows: Rows) -> int:
    return len(next(iter(rows.values()))) if isinstance(rows, Mapping) else len(rows)


def floors_for(kind: str, per_channel: bool, floor: float | None, weight_floor: float | None) -> dict[str, Any]:
    """The floors a diagnosis judges against: the pair's own, else the default for how the
    candidate is quantized (:data:`~sentinel.diagnose.figures.DEFAULT_FLOORS`)."""
    scheme = "dynamic" if kind == "dynamic" else ("per_channel" if per_channel else "per_tensor")
    default = DEFAULT_FLOORS[scheme]
    own = "pair config (diagnose)"
    return {"sqnr_db": default if floor is None else float(floor),
            "weight_sqnr_db": default if weight_floor is None else float(weight_floor),
            "scheme": scheme, "source": own if floor is not None else FLOOR_SOURCES[scheme],
            "weight_source": own if weight_floor is not None else FLOOR_SOURCES[scheme]}


def diagnose_graphs(reference: str | Path, candidate: str | Path, rows: Rows, flipped: np.ndarray, *,
                    baseline_out: np.ndarray | None = None, candidate_out: np.ndarray | None = None,
                    floor: float | None = None, weight_floor: float | None = None, top: int = 3,
                    chunk: int = 64) -> Diagnosis:
    """Run the float ``reference`` and the quantized ``candidate`` with their tensors exposed on
    ``rows`` (one array, or arrays by input name for a multi-input graph) and compare them.

    ``flipped``: boolean per row, True where baseline and candidate decisions differ; the caller
    picks the rows (the flipped ones and as many agreeing ones). ``baseline_out``/``candidate_out``:
    the pair's outputs on the same rows, for the output-level figures (optional). ``chunk``: rows
    per batch (one batch of activations is held at a time).
    Raises :class:`DiagnoseError` when a graph cannot be loaded or run, or no tensor matches."""
    flipped = np.asarray(flipped, dtype=bool)
    if len(flipped) != _n_rows(rows):
        raise DiagnoseError("", f"flipped has {len(flipped)} entries for {_n_rows(rows)} rows")
    ref_model, cand_model = graphs.load_graph(reference), graphs.load_graph(candidate)
    matched = _match(ref_model, cand_model)
    if not matched:
        raise DiagnoseError(candidate, f"no tensor matches the float reference {Path(reference).name} by name")
    fi, ai = np.flatnonzero(flipped), np.flatnonzero(~flipped)
    sums = _collect(reference, ref_model, candidate, cand_model, matched, rows, (fi, ai), chunk)
    weights = graphs.quantized_weights(ref_model, cand_model)
    kind = graphs.quantization_kind(cand_model)
    per_channel = any(w.per_channel for w in weights.values())
    fl = floors_for(kind, per_channel, floor, weight_floor)
    outputs = {o.name for o in ref_model.graph.output}
    clip_checked = graphs.qdq_ranges(cand_model)
    tensors = [_figures(lay, *sums[lay.tensor], lay.tensor in outputs, lay.tensor in clip_checked) for lay, _ in matched]
    _attribute(tensors, {lay.tensor: lay for lay, _ in matched}, fl["sqnr_db"])
    wfig = [WeightFigures(name, round(sqnr_db(w.float, w.dequantized), 3),
                          sqnr_db(w.float, w.dequantized) < fl["weight_sqnr_db"]) for name, w in weights.items()]
    out_fig = (output_figures(baseline_out, candidate_out, fi, ai) if baseline_out is not None
               and candidate_out is not None else {})
    d = Diagnosis("layers", None, kind, fl, {"flipped": len(fi), "agreeing": len(ai)}, out_fig, tensors, wfig)
    _name(d, top)
    return d


def _match(ref: Any, cand: Any) -> list[tuple[graphs.Layer, str]]:
    available = graphs.produced_names(cand)
    out = []
    for lay in graphs.layers(ref):
        c = graphs.candidate_tensor(lay.tensor, available)
        if c is not None:
            out.append((lay, c))
    return out


def _collect(reference: str | Path, ref_model: Any, candidate: str | Path, cand_model: Any,
             matched: list[tuple[graphs.Layer, str]], rows: Rows, sets: tuple[np.ndarray, np.ndarray],
             chunk: int) -> dict[str, tuple[Sums, Sums]]:
    """Run both graphs, ``chunk`` rows at a time, on the flipped and then the agreeing rows (never
    mixed in one batch: dynamic quantization sets its ranges per batch), summing per tensor."""
    ref_act = graphs.Activations(reference, ref_model, [lay.tensor for lay, _ in matched])
    cand_act = graphs.Activations(candidate, cand_model, [c for _, c in matched])
    ranges = graphs.qdq_ranges(cand_model)
    sums = {lay.tensor: (Sums(), Sums()) for lay, _ in matched}
    for k, idx in enumerate(sets):
        for lo in range(0, len(idx), chunk):
            part = take(rows, idx[lo:lo + chunk])
            fa = ref_act.run(graphs.feeds_for(part, ref_act.inputs, reference))
            fb = cand_act.run(graphs.feeds_for(part, cand_act.inputs, candidate))
            for lay, c in matched:
                if fa[lay.tensor].shape != fb[c].shape:
                    raise DiagnoseError(candidate, f"tensor {lay.tensor}: float shape {fa[lay.tensor].shape} "
                                                   f"differs from the candidate's {fb[c].shape}")
                sums[lay.tensor][k].add(fa[lay.tensor], fb[c], ranges.get(lay.tensor))
    return sums


def _figures(lay: graphs.Layer, flipped: Sums, agreeing: Sums, is_output: bool, clip_checked: bool) -> TensorFigures:
    def on(s: Sums, value: float) -> float | None:
        return round(value, 5) if s.n else None
    t = TensorFigures(lay.tensor, lay.node, lay.op, on(flipped, flipped.sqnr()), on(agreeing, agreeing.sqnr()),
                      on(flipped, flipped.cosine()), on(agreeing, agreeing.cosine()), is_output=is_output)
    if clip_checked:
        t.clipped_flipped, t.clipped_agreeing = on(flipped, flipped.clipped_share()), on(agreeing, agreeing.clipped_share())
    return t


def take(rows: Rows, idx: np.ndarray) -> Rows:
    if isinstance(rows, Mapping):
        return {k: np.asarray(v)[idx] for k, v in rows.items()}
    return np.asarray(rows)[idx]


def _attribute(tensors: list[TensorFigures], layer_of: dict[str, graphs.Layer], floor: float) -> None:
    """Per tensor: the flipped-vs-agreeing drop that appears at its node, the SQNR its node costs
    on agreeing rows, and whether it is below the floor there. A graph input is exact (no drop)."""
    by_name = {t.tensor: t for t in tensors}
    for t in tensors:
        ins = [by_name[i] for i in layer_of[t.tensor].inputs if i in by_name]
        in_drop = max((i.drop or 0.0 for i in ins), default=0.0)
        in_sqnr = min((i.sqnr_agreeing for i in ins if i.sqnr_agreeing is not None), default=MAX_DB)
        t.introduced = None if t.drop is None else round(t.drop - in_drop, 3)
        t.fall = None if t.sqnr_agreeing is None else round(in_sqnr - t.sqnr_agreeing, 3)
        # graph outputs are reported, not judged: the pair's checks judge the outputs, and a
        # softmax's SQNR is set by the few rows nearest the decision boundary
        t.below_floor = not t.is_output and t.sqnr_agreeing is not None and t.sqnr_agreeing < floor


def _name(d: Diagnosis, top: int) -> None:
    """Fill ``named``, ``origin``, ``below_floor`` and the summary sentences. The graph outputs are
    left out of ``named``: flipped rows differ there by definition."""
    ranked = sorted((t for t in d.tensors if t.introduced is not None and not t.is_output),
                    key=lambda t: -(t.introduced or 0.0))
    d.named = [t.tensor for t in ranked[:top] if (t.introduced or 0.0) > 0]
    low = [t for t in d.tensors if t.below_floor]
    d.below_floor = [t.tensor for t in low]
    d.origin = max(low, key=lambda t: t.fall or 0.0).tensor if low else None
    d.summary = summary_lines(d)


def summary_lines(d: Diagnosis) -> list[str]:
    """The sentences of a diagnosis, rendered from its figures (so they cannot disagree)."""
    f = d.floors["sqnr_db"]
    lines = []
    if d.origin is not None:
        t = d.tensor(d.origin)
        lines.append(f"below the {f:g} dB floor on agreeing rows too, from {t.node} ({t.op}): SQNR {t.sqnr_agreeing:.1f} dB, "
                     f"{t.fall:.1f} dB lost at that node; {len(d.below_floor)} tensor(s) below the floor")
    elif judged := [t for t in d.tensors if t.sqnr_agreeing is not None and not t.is_output]:
        lowest = min(judged, key=lambda t: t.sqnr_agreeing)
        lines.append(f"no tensor below the {f:g} dB floor on agreeing rows (lowest {lowest.sqnr_agreeing:.1f} dB "
                     f"at {lowest.node}; graph outputs are not judged)")
    for name in d.named:
        t = d.tensor(name)
        clip = ""
        if t.clipped_flipped is not None and t.clipped_agreeing is not None and t.clipped_flipped > t.clipped_agreeing:
            clip = (f"; {t.clipped_flipped:.2%} of its values outside the quantizer's range on flipped rows vs "
                    f"{t.clipped_agreeing:.2%} on agreeing rows")
        lines.append(f"flipped rows diverge at {t.node} ({t.op}): SQNR {t.sqnr_flipped:.1f} dB on flipped vs "
                     f"{t.sqnr_agreeing:.1f} dB on agreeing rows ({t.drop:.1f} dB lower, {t.introduced:.1f} dB of it here){clip}")
    bad = [w for w in d.weights if w.below_floor]
    if bad:
        lines.append("weights below the {:g} dB floor: {}".format(
            d.floors["weight_sqnr_db"], ", ".join(f"{w.name} {w.sqnr_db:.1f} dB" for w in bad)))
    return lines


def diagnose_outputs(baseline_out: np.ndarray, candidate_out: np.ndarray, flipped: np.ndarray, reason: str
                     ) -> Diagnosis:
    """The output-level comparison only (a candidate without a float twin: pruned, distilled, a
    torch file); ``reason`` says why, and the summary says so."""
    flipped = np.asarray(flipped, dtype=bool)
    fi, ai = np.flatnonzero(flipped), np.flatnonzero(~flipped)
    d = Diagnosis("outputs", reason, "unknown", {}, {"flipped": len(fi), "agreeing": len(ai)},
                  output_figures(np.asarray(baseline_out), np.asarray(candidate_out), fi, ai))
    o = d.outputs
    d.summary = [f"output-level comparison only: {reason}",
                 f"candidate vs baseline outputs: SQNR {_fmt(o['sqnr_flipped'])} dB on flipped rows, "
                 f"{_fmt(o['sqnr_agreeing'])} dB on agreeing rows"]
    return d


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"

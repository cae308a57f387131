"""A stored diagnosis as an HTML fragment: the same one in the run's report and on its console
page (no script, inline SVG). Every sentence comes from the stored figures
(:func:`~sentinel.diagnose.localise.summary_lines`), so the two views cannot disagree."""
from __future__ import annotations

from html import escape
from typing import Any

from .figures import Diagnosis, TensorFigures
from .plot import sqnr_svg

_COLS = ("layer", "op", "SQNR flipped", "SQNR agreeing", "drop", "here", "cos flipped", "cos agreeing", "")


def diagnosis_html(entry: dict[str, Any] | None, *, level: int = 2) -> str:
    """The fragment for a stored entry (``sentinel.diagnose.auto``); ``""`` when there is none.
    ``level``: the heading level (h2 in the report and on the run page). A pair with several
    candidates gets one part per candidate diagnosed, under its name (``id='diagnosis-<name>'``;
    the ids inside end in ``-<name>``)."""
    if not entry:
        return ""
    h = f"h{level}"
    if isinstance(entry.get("candidates"), dict):
        parts = [f"<section id='diagnosis'><{h}>Where each candidate diverges (diagnosis)</{h}>"]
        for name, one in entry["candidates"].items():
            if isinstance(one, dict):
                sub = f"h{min(level + 1, 6)}"
                parts.append(f"<section id='diagnosis-{escape(name)}'><{sub}>Candidate {escape(name)}</{sub}>"
                             f"{_body(one, f'-{escape(name)}')}</section>")
        return "".join(parts) + "</section>"
    return f"<section id='diagnosis'><{h}>Where the candidate diverges (diagnosis)</{h}>{_body(entry, '')}</section>"


def _body(entry: dict[str, Any], tail: str) -> str:
    """One candidate's diagnosis (``tail`` ends every id: ``""``, or ``-<candidate>``)."""
    if not isinstance(entry.get("result"), dict):
        return (f"<p class='muted'>{escape(_provenance(entry))}</p><p class='err' id='diagnosis-error{tail}'>"
                f"No diagnosis: {escape(str(entry.get('error') or 'unknown error'))}. The run's results are "
                "unaffected.</p>")
    d = Diagnosis.from_dict(entry["result"])
    parts = [f"<p class='muted' id='diagnosis-about{tail}'>{escape(_provenance(entry))}; {escape(_rows(d))}</p>",
             f"<ul id='diagnosis-summary{tail}'>" + "".join(f"<li>{escape(line)}</li>" for line in d.summary) + "</ul>"]
    if d.tensors:
        marked = [t for t in d.tensors if t.tensor in d.named or t.tensor == d.origin]
        if marked:
            parts.append("<p>Named layers (where the flipped rows diverge most, and where the damage starts):</p>"
                         + _table(marked, d, f"diagnosis-layers{tail}"))
        parts.append(f"<div class='plots' id='diagnosis-plot{tail}'>{sqnr_svg(d)}</div>")
        parts.append(f"<details><summary>Every compared tensor ({len(d.tensors)}, network order) and weight"
                     f"</summary>{_table(d.tensors, d, f'diagnosis-tensors{tail}')}{_weights(d)}</details>")
    return "".join(parts)


def _provenance(entry: dict[str, Any]) -> str:
    trigger = entry.get("trigger") or []
    why = "; ".join(f"{t.get('check')} failed on {t.get('slice')}" for t in trigger[:4])
    more = f" and {len(trigger) - 4} more" if len(trigger) > 4 else ""
    who = ("diagnosed automatically after the run" if entry.get("by") == "auto"
           else f"diagnosed on demand by {entry.get('by')}")
    took = f", {entry['seconds']:.1f} s" if isinstance(entry.get("seconds"), (int, float)) else ""
    return f"{who} at {entry.get('at')}{took}" + (f" ({why}{more})" if why else "")


def _rows(d: Diagnosis) -> str:
    rows = f"{d.rows.get('flipped', 0)} flipped and {d.rows.get('agreeing', 0)} agreeing rows"
    if d.mode != "layers":
        return f"{rows}; output level only"
    f = d.floors
    return f"{rows}; {d.kind} candidate ({f.get('scheme')}), floor {f.get('sqnr_db'):g} dB ({f.get('source')})"


def _db(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _cos(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def _table(tensors: list[TensorFigures], d: Diagnosis, ident: str) -> str:
    head = "".join(f"<th>{c}</th>" for c in _COLS)
    rows = []
    for t in tensors:
        mark = ("origin" if t.tensor == d.origin else "named" if t.tensor in d.named
                else "below floor" if t.below_floor else "output" if t.is_output else "")
        rows.append(f"<tr><td>{escape(t.node)}</td><td>{escape(t.op)}</td><td>{_db(t.sqnr_flipped)}</td>"
                    f"<td>{_db(t.sqnr_agreeing)}</td><td>{_db(t.drop)}</td><td>{_db(t.introduced)}</td>"
                    f"<td>{_cos(t.cos_flipped)}</td><td>{_cos(t.cos_agreeing)}</td><td>{mark}</td></tr>")
    return f"<table id='{ident}'><tr>{head}</tr>{''.join(rows)}</table>"


def _weights(d: Diagnosis) -> str:
    if not d.weights:
        return ""
    floor = d.floors.get("weight_sqnr_db")
    items = ", ".join(f"{escape(w.name)} {w.sqnr_db:.1f} dB{' (below floor)' if w.below_floor else ''}"
                      for w in d.weights)
    return f"<p>Weight SQNR (floor {floor:g} dB): {items}</p>"

"""Small inline SVG plots for the console (no scripts, no external assets): a line chart of
values over runs, a flip matrix, and latency quantile curves. Every text is escaped."""
from __future__ import annotations

import math
from html import escape
from typing import Any, Sequence

COLOURS = {"pass": "#2e7d32", "warn": "#ef6c00", "fail": "#c62828", "error": "#6a1b9a",
           "insufficient_data": "#757575"}
W, H, PAD = 360, 120, 28


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _scale(lo: float, hi: float, a: float, b: float) -> Any:
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def series(points: Sequence[tuple[int, Any, str]], *, title: str, level: float | None = None,
           width: int = W, height: int = H) -> str:
    """Values over runs (x = run order, labelled by run id), a dot per run coloured by its status,
    and a dashed line at ``level`` when given."""
    pts = [(rid, float(v), st) for rid, v, st in points if _finite(v)]
    if not pts:
        return f'<svg class="plot" width="{width}" height="{height}" role="img"><title>{escape(title)}</title>' \
               f'<text x="8" y="20">{escape(title)}: no values</text></svg>'
    vals = [v for _, v, _ in pts] + ([level] if _finite(level) else [])
    lo, hi = min(vals), max(vals)
    if lo == hi:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    x = _scale(0, max(1, len(pts) - 1), PAD, width - 8)
    y = _scale(lo, hi, height - 18, 18)
    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, v, _) in enumerate(pts))
    dots = "".join(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{COLOURS.get(st, "#333")}">'
                   f'<title>run {rid}: {v:.4g} ({escape(st)})</title></circle>' for i, (rid, v, st) in enumerate(pts))
    lvl = (f'<line x1="{PAD}" x2="{width - 8}" y1="{y(level):.1f}" y2="{y(level):.1f}" stroke="#c62828" '
           f'stroke-dasharray="4 3"><title>level {level:g}</title></line>') if _finite(level) else ""
    axis = (f'<text x="2" y="{y(hi) + 4:.0f}" class="ax">{hi:.3g}</text>'
            f'<text x="2" y="{y(lo) + 4:.0f}" class="ax">{lo:.3g}</text>'
            f'<text x="{PAD}" y="{height - 2}" class="ax">run {pts[0][0]}</text>'
            f'<text x="{width - 8}" y="{height - 2}" class="ax" text-anchor="end">run {pts[-1][0]}</text>')
    return (f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<title>{escape(title)}</title><text x="{PAD}" y="12" class="t">{escape(title)}</text>{lvl}'
            f'<polyline points="{line}" fill="none" stroke="#1565c0" stroke-width="1.5"/>{dots}{axis}</svg>')


def flip_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], *, title: str) -> str:
    """Rows: the baseline's decision; columns: the candidate's. Off-diagonal cells are flips."""
    k = len(matrix)
    if not k:
        return ""
    cell, left, top = 56, 90, 38
    width, height = max(left + cell * k + 8, 7 * len(title) + 180), top + cell * k + 8
    peak = max((v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j), default=0) or 1
    cells = []
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            shade = "#e8f5e9" if i == j else f"rgba(198,40,40,{0.12 + 0.8 * v / peak:.2f})"
            cells.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell - 2}" height="{cell - 2}" '
                         f'fill="{shade}"><title>baseline {escape(str(classes[i]))} → candidate '
                         f'{escape(str(classes[j]))}: {v}</title></rect>'
                         f'<text x="{left + j * cell + cell / 2 - 1}" y="{top + i * cell + cell / 2 + 4}" '
                         f'text-anchor="middle">{v}</text>')
    labels = "".join(f'<text x="{left - 4}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end">'
                     f'{escape(str(c))[:12]}</text>' for i, c in enumerate(classes))
    labels += "".join(f'<text x="{left + j * cell + cell / 2}" y="{top - 4}" text-anchor="middle">'
                      f'{escape(str(c))[:10]}</text>' for j, c in enumerate(classes))
    return (f'<svg class="plot" width="{width}" height="{height}" role="img"><title>{escape(title)}</title>'
            f'<text x="2" y="12" class="t">{escape(title)} (rows: baseline, columns: candidate)</text>'
            f'{labels}{"".join(cells)}</svg>')


def quantiles(curves: dict[str, Sequence[float]], *, title: str, unit: str = "ms") -> str:
    """Latency distributions as quantile curves (x = latency, y = share of calls at most that)."""
    curves = {k: [float(v) for v in vs if _finite(v)] for k, vs in curves.items() if vs}
    curves = {k: sorted(v) for k, v in curves.items() if v}
    if not curves:
        return ""
    allv = [v for vs in curves.values() for v in vs]
    lo, hi = min(allv), max(allv)
    x = _scale(lo, hi if hi > lo else lo + 1, PAD, W - 8)
    y = _scale(0, 1, H - 18, 18)
    palette = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a"]
    lines, legend = [], []
    for n, (name, vs) in enumerate(curves.items()):
        pts = " ".join(f"{x(v):.1f},{y((i + 1) / len(vs)):.1f}" for i, v in enumerate(vs))
        lines.append(f'<polyline points="{pts}" fill="none" stroke="{palette[n % 4]}" stroke-width="1.5"/>')
        legend.append(f'<text x="{W - 8}" y="{30 + 12 * n}" text-anchor="end" fill="{palette[n % 4]}">'
                      f'{escape(name)}</text>')
    axis = (f'<text x="{PAD}" y="{H - 2}" class="ax">{lo:.3g} {escape(unit)}</text>'
            f'<text x="{W - 8}" y="{H - 2}" class="ax" text-anchor="end">{hi:.3g} {escape(unit)}</text>')
    return (f'<svg class="plot" width="{W}" height="{H}" role="img"><title>{escape(title)}</title>'
            f'<text x="{PAD}" y="12" class="t">{escape(title)}</text>{"".join(lines)}{"".join(legend)}{axis}</svg>')

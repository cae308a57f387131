"""Small inline SVG plots for the run report and the console: no script, no network, readable
when printed. A bottom-layer helper (plain numbers in, an ``<svg>`` string out)."""
from __future__ import annotations

import html
import math
from typing import Any, Sequence

BLUE, RED, GREY = "#0969da", "#cf222e", "#8c959f"
STATUS_COLOURS = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e", "error": "#8250df",
                  "insufficient_data": "#57606a"}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _svg(w: int, h: int, body: str, label: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' role='img' aria-label='{_e(label)}'>"
            f"{body}</svg>")


def history(points: Sequence[tuple[int, float | None, str]], *, warn: float | None = None,
            fail: float | None = None, label: str = "", w: int = 320, h: int = 90) -> str:
    """One check's value over runs: (run id, value, status) oldest first, a dot per run coloured by
    its status, dashed lines at the warn/fail levels, the newest run's value written."""
    vals = [v for _, v, _ in points if v is not None and math.isfinite(v)]
    lines = [lv for lv in (warn, fail) if lv is not None and math.isfinite(lv)]
    if not vals:
        return _svg(w, 24, f"<text x='4' y='16' font-size='11' fill='{GREY}'>{_e(label)}: no values</text>", label)
    lo, hi = min(vals + lines), max(vals + lines)
    span = (hi - lo) or abs(hi) or 1.0
    pad, top = 8, 18
    x = lambda i: pad + (w - 2 * pad) * (i / max(len(points) - 1, 1))
    y = lambda v: h - pad - (h - pad - top) * ((v - lo) / span)
    body = [f"<text x='{pad}' y='12' font-size='11'>{_e(label)}</text>"]
    for lv, name, colour in ((warn, "warn", "#9a6700"), (fail, "fail", RED)):
        if lv is not None and math.isfinite(lv):
            body.append(f"<line x1='{pad}' x2='{w - pad}' y1='{y(lv):.1f}' y2='{y(lv):.1f}' stroke='{colour}' "
                        f"stroke-dasharray='3 3'><title>{name} level {lv:g}</title></line>")
    path = [(x(i), y(v)) for i, (_, v, _) in enumerate(points) if v is not None and math.isfinite(v)]
    if len(path) > 1:
        body.append("<polyline fill='none' stroke='#57606a' stroke-width='1' points='"
                    + " ".join(f"{a:.1f},{b:.1f}" for a, b in path) + "'/>")
    for i, (run, v, status) in enumerate(points):
        if v is None or not math.isfinite(v):
            continue
        body.append(f"<circle cx='{x(i):.1f}' cy='{y(v):.1f}' r='3' fill='{STATUS_COLOURS.get(status, GREY)}'>"
                    f"<title>run {run}: {status}, {v:.4g}</title></circle>")
    last = next((v for _, v, _ in reversed(points) if v is not None and math.isfinite(v)), None)
    if last is not None:
        body.append(f"<text x='{w - pad}' y='12' font-size='11' text-anchor='end'>now {last:.4g}</text>")
    return _svg(w, h, "".join(body), label)


def matrix(counts: Sequence[Sequence[int]], classes: Sequence[str], *, label: str = "flip matrix") -> str:
    """Baseline decision (rows) against candidate decision (columns), each cell shaded by its share
    of the row; off-diagonal cells (the flips) in red, the diagonal (agreement) in grey."""
    k = len(classes)
    cell, left, top = 64, 110, 40
    w, h = left + cell * k + 10, top + cell * k + 10
    body = [f"<text x='{left}' y='14' font-size='11'>candidate decision →</text>",
            f"<text x='4' y='{top - 6}' font-size='11'>baseline ↓</text>"]
    for j, c in enumerate(classes):
        body.append(f"<text x='{left + j * cell + cell / 2}' y='{top - 6}' font-size='11' text-anchor='middle'>{_e(c)}</text>")
    for i, row in enumerate(counts):
        total = max(sum(row), 1)
        body.append(f"<text x='{left - 6}' y='{top + i * cell + cell / 2 + 4}' font-size='11' text-anchor='end'>"
                    f"{_e(classes[i])}</text>")
        for j, n in enumerate(row):
            share = n / total
            colour = GREY if i == j else RED
            body.append(f"<rect x='{left + j * cell}' y='{top + i * cell}' width='{cell - 2}' height='{cell - 2}' "
                        f"fill='{colour}' fill-opacity='{0.08 + 0.8 * share:.2f}'><title>baseline {_e(classes[i])}, "
                        f"candidate {_e(classes[j])}: {n} ({share:.1%} of the row)</title></rect>"
                        f"<text x='{left + j * cell + cell / 2}' y='{top + i * cell + cell / 2 + 4}' font-size='12' "
                        f"text-anchor='middle'>{n}</text>")
    return _svg(w, h, "".join(body), label)


def distributions(sketches: dict[str, Sequence[float]], *, unit: str = "ms", label: str = "",
                  w: int = 360, h: int = 150) -> str:
    """Empirical CDFs of each role's sorted quantile sketch (``{role: [values]}``): the further
    right a curve, the slower; the p50 and p95 of each role are in the tooltips."""
    series = {role: sorted(float(v) for v in vals if v is not None and math.isfinite(v))
              for role, vals in sketches.items() if vals}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return _svg(w, 24, f"<text x='4' y='16' font-size='11' fill='{GREY}'>{_e(label)}: nothing measured</text>", label)
    lo = min(v[0] for v in series.values())
    hi = max(v[-1] for v in series.values())
    span = (hi - lo) or 1.0
    pad, top, bottom = 10, 18, 18
    x = lambda v: pad + (w - 2 * pad) * ((v - lo) / span)
    y = lambda q: h - bottom - (h - bottom - top) * q
    body = [f"<text x='{pad}' y='12' font-size='11'>{_e(label)}</text>",
            f"<text x='{pad}' y='{h - 4}' font-size='10'>{lo:.3g} {_e(unit)}</text>",
            f"<text x='{w - pad}' y='{h - 4}' font-size='10' text-anchor='end'>{hi:.3g} {_e(unit)}</text>"]
    colours = [BLUE, RED, "#8250df", "#1a7f37"]
    for n, (role, vals) in enumerate(series.items()):
        colour = colours[n % len(colours)]
        pts = " ".join(f"{x(v):.1f},{y((i + 0.5) / len(vals)):.1f}" for i, v in enumerate(vals))
        p50, p95 = vals[int(0.5 * (len(vals) - 1))], vals[int(0.95 * (len(vals) - 1))]
        body.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{pts}'>"
                    f"<title>{_e(role)}: p50 {p50:.4g} {_e(unit)}, p95 {p95:.4g} {_e(unit)}</title></polyline>"
                    f"<text x='{w - pad}' y='{top + 12 * (n + 1)}' font-size='11' text-anchor='end' fill='{colour}'>"
                    f"{_e(role)} p50 {p50:.3g}</text>")
    return _svg(w, h, "".join(body), label)


def tradeoff(points: Sequence[tuple[str, float | None, float | None, bool]], *, label: str = "candidates",
             w: int = 380, h: int = 220) -> str:
    """Each candidate as (name, latency ratio candidate/baseline, flip rate, passed every safety
    check): x the latency ratio (left is faster; the dashed line at ×1 is the baseline's speed),
    y the flip rate (up is more decisions changed), a dot green when the candidate passed, red
    when it did not. A candidate without a measured ratio is listed, not placed."""
    placed = [(n, float(r), float(f), ok) for n, r, f, ok in points
              if r is not None and f is not None and math.isfinite(r) and math.isfinite(f)]
    left, right, top, bottom = 46, 14, 22, 34
    body = [f"<text x='4' y='14' font-size='11'>{_e(label)}: flip rate vs latency ratio</text>"]
    missing = [p[0] for p in points if p[0] not in {q[0] for q in placed}]
    if missing:
        body.append(f"<text x='4' y='{h - 4}' font-size='10' fill='{GREY}'>not placed (no latency ratio or flips): "
                    f"{_e(', '.join(missing))}</text>")
    if not placed:
        return _svg(w, h, "".join(body), label)
    x_hi = max([1.0] + [r for _, r, _, _ in placed]) * 1.1
    y_hi = max([0.01] + [f for _, _, f, _ in placed]) * 1.15
    x = lambda v: left + (w - left - right) * (v / x_hi)
    y = lambda v: h - bottom - (h - bottom - top) * (v / y_hi)
    body += [f"<line x1='{left}' x2='{w - right}' y1='{h - bottom}' y2='{h - bottom}' stroke='{GREY}'/>",
             f"<line x1='{left}' x2='{left}' y1='{top}' y2='{h - bottom}' stroke='{GREY}'/>",
             f"<line x1='{x(1.0):.1f}' x2='{x(1.0):.1f}' y1='{top}' y2='{h - bottom}' stroke='{GREY}' "
             f"stroke-dasharray='3 3'><title>×1: as fast as the baseline</title></line>",
             f"<text x='{x(1.0):.1f}' y='{h - bottom + 12}' font-size='10' text-anchor='middle'>×1</text>",
             f"<text x='{left}' y='{h - bottom + 12}' font-size='10' text-anchor='middle'>×0</text>",
             f"<text x='{w - right}' y='{h - bottom + 24}' font-size='10' text-anchor='end'>latency ratio →</text>",
             f"<text x='{left - 4}' y='{top + 4}' font-size='10' text-anchor='end'>{y_hi:.0%}</text>",
             f"<text x='{left - 4}' y='{h - bottom}' font-size='10' text-anchor='end'>0%</text>"]
    for name, r, f, ok in placed:
        colour = STATUS_COLOURS["pass" if ok else "fail"]
        body.append(f"<circle cx='{x(r):.1f}' cy='{y(f):.1f}' r='5' fill='{colour}'><title>{_e(name)}: ×{r:.2f} "
                    f"latency, {f:.1%} flips, {'passed' if ok else 'failed'} the safety checks</title></circle>"
                    f"<text x='{x(r) + 8:.1f}' y='{y(f) + 4:.1f}' font-size='11'>{_e(name)}</text>")
    return _svg(w, h, "".join(body), label)

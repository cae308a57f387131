"""SQNR per layer in network order as inline SVG text (no plotting library: the report, the
console and the JSON result embed the same few kilobytes)."""
from __future__ import annotations

from html import escape

from .figures import MAX_DB, Diagnosis

_W, _H, _LEFT, _TOP, _BOTTOM = 640, 300, 48, 28, 110
_SERIES = (("sqnr_agreeing", "agreeing rows", "#1f77b4"), ("sqnr_flipped", "flipped rows", "#d62728"))


def sqnr_svg(d: Diagnosis) -> str:
    """Two lines (flipped and agreeing rows) over the tensors in network order, the floor dashed,
    named layers marked; an empty plot with the reason for an output-level diagnosis."""
    if not d.tensors:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="40" role="img">'
                f'<text x="8" y="24" font-size="12">{escape(d.reason or "no tensors")}</text></svg>')
    floor = d.floors["sqnr_db"]
    values = [v for t in d.tensors for v in (t.sqnr_flipped, t.sqnr_agreeing) if v is not None]
    lo = min(min(values), floor) - 5
    hi = MAX_DB
    n = len(d.tensors)
    step = (_W - _LEFT - 110) / max(n - 1, 1)   # room on the right for the last slanted label

    def x(i: int) -> float:
        return _LEFT + i * step

    def y(v: float) -> float:
        return _TOP + (hi - v) / (hi - lo) * (_H - _TOP - _BOTTOM)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img" font-family="sans-serif" '
             f'font-size="10"><title>SQNR per layer{_title(d)}</title>',
             f'<line x1="{_LEFT}" y1="{y(floor):.1f}" x2="{_W - 8}" y2="{y(floor):.1f}" stroke="#888" stroke-dasharray="4 3"/>',
             f'<text x="{_W - 8}" y="{y(floor) - 3:.1f}" text-anchor="end" fill="#555">floor {floor:g} dB</text>']
    for tick in range(int(lo // 20 * 20) + 20, int(hi) + 1, 20):
        parts.append(f'<text x="{_LEFT - 4}" y="{y(tick) + 3:.1f}" text-anchor="end">{tick}</text>')
    for key, label, colour in _SERIES:
        pts = [(x(i), y(getattr(t, key))) for i, t in enumerate(d.tensors) if getattr(t, key) is not None]
        if pts:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                         + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + f'"><title>{label}</title></polyline>')
            parts.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{colour}"/>' for a, b in pts)
    for i, t in enumerate(d.tensors):
        weight = "bold" if t.tensor in d.named or t.tensor == d.origin else "normal"
        parts.append(f'<text transform="translate({x(i):.1f},{_H - _BOTTOM + 12}) rotate(45)" '
                     f'font-weight="{weight}">{escape(t.node[:28])}</text>')
    parts.append(f'<text x="{_LEFT}" y="14" font-size="11"><tspan fill="#d62728">flipped rows</tspan>  '
                 f'<tspan fill="#1f77b4">agreeing rows</tspan>  SQNR dB (capped at {MAX_DB:g})</text></svg>')
    return "".join(parts)


def _title(d: Diagnosis) -> str:
    return f" (run {d.run_id}, {escape(d.pair or '')})" if d.run_id is not None else ""

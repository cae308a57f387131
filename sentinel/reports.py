"""A run's report: one self-contained HTML file a responder can open offline (no CDN).

Sentinel's safety section comes first: what failed and why, the per-slice table, every check
result with its test, flip matrices, reliability curves, confidence histograms, latency per role
and the reproducibility record. Below it, when the run had a reference window, Evidently's own
data-drift report for the same columns (inputs and the candidate's output probabilities) with
the methods Sentinel chose, embedded in the same file (an ``iframe srcdoc``, so its scripts stay
in their own frame and nothing is fetched from the network).
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from .verdict import decision_of, result_type, sentence

STATUS_COLOURS = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e", "error": "#8250df",
                  "insufficient_data": "#57606a"}


def _e(x: Any) -> str:
    return html.escape(str(x))


def _svg_reliability(rel: dict[str, Any]) -> str:
    """Reliability curve of each model: mean confidence (x) vs accuracy (y), the diagonal is
    perfect calibration; dot area grows with the rows in the bin."""
    size, pad = 260, 30
    span = size - 2 * pad
    pts = []
    for role, colour in (("baseline", "#0969da"), ("candidate", "#cf222e")):
        r = rel.get(role) or {}
        total = max(sum(r.get("count") or [0]), 1)
        for conf, acc, cnt in zip(r.get("confidence") or [], r.get("accuracy") or [], r.get("count") or []):
            if conf is None or acc is None:
                continue
            x, y = pad + conf * span, size - pad - acc * span
            pts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{2 + 8 * (cnt / total) ** 0.5:.1f}' fill='{colour}' "
                       f"fill-opacity='0.5'><title>{role}: confidence {conf:.3f}, accuracy {acc:.3f}, {cnt} rows</title></circle>")
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{size}' height='{size}'>"
            f"<rect x='{pad}' y='{pad}' width='{span}' height='{span}' fill='none' stroke='#d0d7de'/>"
            f"<line x1='{pad}' y1='{size - pad}' x2='{size - pad}' y2='{pad}' stroke='#8c959f' stroke-dasharray='4'/>"
            f"{''.join(pts)}<text x='{pad}' y='{size - 8}' font-size='11'>confidence →</text>"
            f"<text x='4' y='{pad - 8}' font-size='11'>accuracy ↑</text>"
            f"<text x='{size - 120}' y='{pad - 8}' font-size='11' fill='#0969da'>baseline</text>"
            f"<text x='{size - 60}' y='{pad - 8}' font-size='11' fill='#cf222e'>candidate</text></svg>")


def _svg_hist(dist: dict[str, Any], edges: list[float], label: str) -> str:
    """Two overlaid histograms (baseline blue, candidate red) over [0, 1]."""
    w, h, pad = 300, 120, 20
    counts = {role: (dist.get(role) or {}).get("hist") or [] for role in ("baseline", "candidate")}
    top = max([max(c) for c in counts.values() if c] + [1])
    bw = (w - 2 * pad) / max(len(edges) - 1, 1)
    bars = []
    for role, colour, off in (("baseline", "#0969da", 0.0), ("candidate", "#cf222e", 0.5)):
        for i, c in enumerate(counts[role]):
            bh = (h - 2 * pad) * c / top
            bars.append(f"<rect x='{pad + i * bw + off * bw:.1f}' y='{h - pad - bh:.1f}' width='{bw / 2:.1f}' "
                        f"height='{bh:.1f}' fill='{colour}' fill-opacity='0.6'><title>{role} {edges[i]:.2f}-"
                        f"{edges[i + 1]:.2f}: {c}</title></rect>")
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}'>{''.join(bars)}"
            f"<text x='{pad}' y='12' font-size='11'>{_e(label)}</text></svg>")


def _slice_table(results: list[dict[str, Any]]) -> str:
    """Slices as rows, checks as columns: where in the traffic a problem sits."""
    checks = sorted({r["check"] for r in results})
    slices = sorted({r["slice"] for r in results}, key=lambda s: (s != "overall", _natural(s)))
    cell = {(r["check"], r["slice"]): r for r in results}
    head = "".join(f"<th>{_e(c)}</th>" for c in checks)
    body = []
    for sl in slices:
        tds = []
        for c in checks:
            r = cell.get((c, sl))
            if r is None:
                tds.append("<td></td>")
                continue
            v = "" if r["value"] is None else f" {r['value']:.3g}"
            tds.append(f"<td style='color:{STATUS_COLOURS.get(r['status'], '#000')}' title='{_e(r['message'])}'>"
                       f"{_e(r['status'])}{v}</td>")
        body.append(f"<tr><th>{_e(sl)}</th>{''.join(tds)}</tr>")
    return f"<table><tr><th>slice</th>{head}</tr>{''.join(body)}</table>"


def _natural(s: str) -> list:
    """Sort key that puts feature=x9 before feature=x10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", s)]


def _p_adjusted(r: dict[str, Any]) -> str:
    tests = (r.get("evidence") or {}).get("tests") or []
    if not tests:
        return ""
    return f"{min(t['p_adjusted'] for t in tests):.3g}"


_RANK = {"fail": 0, "error": 1, "warn": 2}
# check types whose batch-1 ``overall`` result has a latency-per-role table
LATENCY_TABLE_TYPES = frozenset({"latency_p95", "latency_served"})


def headline(r: dict[str, Any]) -> str:
    """What decided a stored result, in words: its decision's sentence (the test that set the
    status, with that test's own value and level), else its message."""
    d = decision_of(r)
    return sentence(d) if d is not None else str(r.get("message", ""))


def _decided(r: dict[str, Any]) -> str:
    d = decision_of(r)
    return "" if d is None else _e(sentence(d, with_measure=False))


def _attention(failing: list[dict[str, Any]]) -> str:
    """What failed and why, one entry per check (worst first): its first three slices shown, the
    rest folded, so thirty drifted features do not bury a flipped critical class."""
    if not failing:
        return "<p>All checks passed.</p>"
    by_check: dict[str, list[dict[str, Any]]] = {}
    for r in failing:
        by_check.setdefault(r["check"], []).append(r)
    items = []
    for check, rs in sorted(by_check.items(), key=lambda kv: min(_RANK.get(r["status"], 3) for r in kv[1])):
        # overall first, then safety-critical classes, then the worst
        rs = sorted(rs, key=lambda r: (r["slice"] != "overall", not (r.get("evidence") or {}).get("critical"),
                                       _RANK.get(r["status"], 3)))
        line = lambda r: (f"<li><b>{_e(r['slice'])}</b>: <span style='color:{STATUS_COLOURS.get(r['status'], '#000')}'>"
                          f"{_e(r['status'])}</span>: {_e(headline(r))}<br><small>{_e(r['message'])}</small></li>")
        shown = "".join(line(r) for r in rs[:3])
        rest = (f"<details><summary>{len(rs) - 3} more slices</summary><ul>{''.join(line(r) for r in rs[3:])}</ul>"
                "</details>") if len(rs) > 3 else ""
        worst = min((r["status"] for r in rs), key=lambda st: _RANK.get(st, 3))
        items.append(f"<li><b>{_e(check)}</b> ({_e(worst)}, {len(rs)} slice{'s' if len(rs) != 1 else ''})"
                     f"<ul>{shown}</ul>{rest}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def render_run(run: dict[str, Any], evidently: str | None = None) -> str:
    """The report as one HTML string; ``evidently`` is Evidently's own HTML report to embed."""
    results = run.get("results", [])
    failing = [r for r in results if r["status"] in ("fail", "warn", "error")]
    rows = []
    for r in results:
        colour = STATUS_COLOURS.get(r["status"], "#000")
        value = "" if r["value"] is None else f"{r['value']:.4g}"
        rows.append(f"<tr><td>{_e(r['check'])}</td><td>{_e(r['slice'])}</td>"
                    f"<td style='color:{colour};font-weight:bold'>{_e(r['status'])}</td><td>{value}</td>"
                    f"<td>{'' if r['warn'] is None else _e(r['warn'])}</td><td>{'' if r['fail'] is None else _e(r['fail'])}</td>"
                    f"<td>{r['n']}</td><td>{_p_adjusted(r)}</td><td>{_decided(r)}</td><td>{_e(r['message'])}</td></tr>")
    sections = _evidence_sections(results)
    perf = _perf_section(results)
    if perf:
        sections.append(perf)
    summary = _attention(failing)
    record = json.dumps(run.get("record", {}), indent=2, sort_keys=True, default=str)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Sentinel run {run['id']} ({_e(run['pair'])})</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #d0d7de;padding:4px 8px;text-align:left}}pre{{background:#f6f8fa;padding:1em;overflow:auto}}</style>
</head><body>
<h1>Sentinel run {run['id']}: pair {_e(run['pair'])}</h1>
<p>Status: <b style="color:{STATUS_COLOURS.get(run['status'], '#000')}">{_e(run['status'])}</b> ·
trigger {_e(run['trigger'])} · started {_e(run['started_at'])} · finished {_e(run.get('finished_at'))} ·
{run['n_samples']} samples</p>
<h2>What needs attention</h2>{summary}
<h2>Per-slice table</h2>{_slice_table(results)}
<h2>Check results</h2>
<p>Statistical checks alarm only when a change is significant at their false-alarm rate after family-wise
control (p_adj below) <i>and</i> at least their warn/fail level (the minimum effect size).</p>
<table><tr><th>check</th><th>slice</th><th>status</th><th>value</th><th>warn</th><th>fail</th><th>n</th><th>p_adj</th><th>decided by</th><th>message</th></tr>
{''.join(rows)}</table>
{''.join(sections)}
<h2>Reproducibility record</h2><pre>{_e(record)}</pre>
{_evidently_section(evidently)}
</body></html>"""


def _evidence_sections(results: list[dict[str, Any]]) -> list[str]:
    """The charts and tables each result's evidence carries (reliability, confidence, flips, latency)."""
    sections = []
    for r in results:
        ev = r.get("evidence") or {}
        if "reliability" in ev:
            sections.append(f"<h3>Reliability curves: {_e(r['check'])} / {_e(r['slice'])}</h3>"
                            f"<p>ECE baseline {ev.get('ece', {}).get('baseline', 0):.4f}, candidate "
                            f"{ev.get('ece', {}).get('candidate', 0):.4f}; Brier baseline "
                            f"{ev.get('brier', {}).get('baseline', 0):.4f}, candidate {ev.get('brier', {}).get('candidate', 0):.4f}"
                            f"</p>{_svg_reliability(ev['reliability'])}")
        if ev.get("hist_edges") and "top_probability" in ev:
            sections.append(f"<h3>Confidence: {_e(r['check'])} / {_e(r['slice'])}</h3>"
                            + _svg_hist(ev["top_probability"], ev["hist_edges"], "top probability")
                            + _svg_hist(ev["margin"], ev["hist_edges"], "margin (top - second)"))
        if "flip_matrix" in ev:
            classes = ev.get("classes") or [str(i) for i in range(len(ev["flip_matrix"]))]
            head = "".join(f"<th>cand: {_e(c)}</th>" for c in classes)
            body = "".join(f"<tr><th>base: {_e(classes[i])}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                           for i, row in enumerate(ev["flip_matrix"]))
            sections.append(f"<h3>Flip matrix: {_e(r['check'])} / {_e(r['slice'])}</h3>"
                            f"<table><tr><th></th>{head}</tr>{body}</table>")
        if result_type(r) in LATENCY_TABLE_TYPES and r["slice"] == "overall":
            lrows = "".join(f"<tr><td>{_e(role)}</td>" + "".join(
                f"<td>{'' if ev.get(role, {}).get(q) is None else f'{ev[role][q] * 1e3:.3f}'}</td>"
                for q in ("p50", "p95", "p99")) + f"<td>{ev.get(role, {}).get('n', 0)}</td></tr>"
                for role in ("baseline", "candidate"))
            sections.append("<h3>Latency per call (ms)</h3><table><tr><th>role</th><th>p50</th><th>p95</th>"
                            f"<th>p99</th><th>calls</th></tr>{lrows}</table>")
    return sections


def _evidently_section(doc: str | None) -> str:
    if doc is None:
        return ("<h2>Evidently drift report</h2><p>None for this run: there was no reference window "
                "(no accepted run before it and no pinned data set) and no latency was measured.</p>")
    return ("<h2>Evidently drift report</h2><p>Input features, output probabilities and latency distributions "
            "(columns named <code>latency ms: ...</code>: candidate vs its reference). "
            "Evidently's per-column verdicts use Bonferroni-level thresholds "
            "for p-value methods and Evidently's defaults for distances; Sentinel's decision is the table above.</p>"
            f"<iframe style='width:100%;height:1400px;border:1px solid #d0d7de' srcdoc=\"{html.escape(doc, quote=True)}\">"
            "</iframe>")


def evidently_for(data: Any, results: list[dict[str, Any]]) -> str | None:
    """Evidently's HTML for the run: inputs and candidate outputs vs the reference window, with the
    methods the drift checks chose, and the latency distributions of the perf checks (candidate as
    current, its reference as reference). None when there is neither."""
    ref: dict[str, Any] = {}
    cur: dict[str, Any] = {}
    methods: dict[str, str] = {}
    alpha = 0.01
    drift = [r for r in results if (r.get("evidence") or {}).get("method") and r["slice"].count("=") == 1]
    if drift and data is not None and data.reference is not None and data.reference.n and data.n:
        methods = {r["evidence"]["column"]: r["evidence"]["method"] for r in drift}
        names = data.features()
        x, xr = data.flat_inputs(), data.reference.inputs.reshape(data.reference.n, -1)
        cur = {c: x[:, j] for j, c in enumerate(names) if c in methods}
        ref = {c: xr[:, j] for j, c in enumerate(names) if c in methods}
        for i, cls in enumerate(data.classes):
            col = f"p({cls})"
            if col in methods:
                cur[col], ref[col] = data.candidate[:, i], data.reference.candidate[:, i]
        alpha = min((r["evidence"].get("false_alarm_rate", 0.01) for r in drift), default=0.01)
    for col, base, cand in _latency_columns(results):
        ref[col], cur[col], methods[col] = base, cand, "ks"
    if not cur:
        return None
    from .checks.drift import evidently_html

    return evidently_html(*_pad(ref, cur), methods, threshold=alpha / max(len(methods), 1))


def _latency_columns(results: list[dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    """(column, reference, current) latency sketches in ms from the perf checks' evidence: the
    same-run baseline for ``latency_p95``, the accepted candidate timed alongside for ``perf_history``."""
    out = []
    for r in results:
        dist = (r.get("evidence") or {}).get("distributions") or {}
        if dist.get("unit") != "ms":
            continue
        reference = next((dist[k] for k in ("baseline", "accepted", "history") if dist.get(k)), None)
        if reference and dist.get("candidate"):
            out.append((f"latency ms: {r['check']} {r['slice']}", reference, dist["candidate"]))
    return out


def _pad(*frames: dict[str, Any]) -> list[dict[str, Any]]:
    """Evidently takes one table per side: pad shorter columns with NaN (dropped by its tests), so
    a 128-point latency sketch can sit beside a 2,000-row feature."""
    import numpy as np

    out = []
    for frame in frames:
        n = max((len(v) for v in frame.values()), default=0)
        out.append({c: np.concatenate([np.asarray(v, dtype=float), np.full(n - len(v), np.nan)])
                    for c, v in frame.items()})
    return out


def _ratio(v: Any) -> str:
    return "" if v is None else f"{v:.3f}"


def _perf_section(results: list[dict[str, Any]]) -> str:
    """Performance comparisons (from the perf checks' evidence): ratios with their bootstrap CIs."""
    rows = []
    for r in results:
        cmp = (r.get("evidence") or {}).get("comparison")
        if not cmp:
            continue
        ci = cmp.get("p95_ci") or [None, None]
        p = "" if cmp.get("p_value") is None else f"{cmp['p_value']:.2g}"
        rows.append(f"<tr><td>{_e(r['check'])}</td><td>{_e(r['slice'])}</td><td>{_ratio(cmp.get('hl_ratio'))}</td>"
                    f"<td>{_ratio(cmp.get('p95_ratio'))}</td><td>{_ratio(ci[0])}..{_ratio(ci[1])}</td>"
                    f"<td>{_ratio(cmp.get('p99_ratio'))}</td><td>{_ratio(cmp.get('spread_ratio'))}</td>"
                    f"<td>{p}</td></tr>")
    if not rows:
        return ""
    return ("<h3>Performance comparisons (candidate / reference)</h3><table><tr><th>check</th><th>slice</th>"
            "<th>typical (Hodges-Lehmann)</th><th>p95</th><th>p95 CI</th><th>p99</th><th>spread (IQR)</th>"
            f"<th>Mann-Whitney p</th></tr>{''.join(rows)}</table>")


def write_run_report(run: dict[str, Any], reports_dir: Path, data: Any = None) -> str:
    """Write the run's report; ``data`` (the run's RunData) adds Evidently's drift report."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"run-{run['id']}-{run['pair']}.html"
    path.write_text(render_run(run, evidently_for(data, run.get("results", []))), encoding="utf-8")
    return str(path.resolve())

"""A run's report: one self-contained HTML file a responder can open offline (no scripts, no CDN).

It shows what failed and why first, then every check result, the flip matrix, latency per role and
the reproducibility record.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

STATUS_COLOURS = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e", "error": "#8250df",
                  "insufficient_data": "#57606a"}


def _e(x: Any) -> str:
    return html.escape(str(x))


def render_run(run: dict[str, Any]) -> str:
    results = run.get("results", [])
    failing = [r for r in results if r["status"] in ("fail", "warn", "error")]
    rows = []
    for r in results:
        colour = STATUS_COLOURS.get(r["status"], "#000")
        value = "" if r["value"] is None else f"{r['value']:.4g}"
        rows.append(f"<tr><td>{_e(r['check'])}</td><td>{_e(r['slice'])}</td>"
                    f"<td style='color:{colour};font-weight:bold'>{_e(r['status'])}</td><td>{value}</td>"
                    f"<td>{'' if r['warn'] is None else _e(r['warn'])}</td><td>{'' if r['fail'] is None else _e(r['fail'])}</td>"
                    f"<td>{r['n']}</td><td>{_e(r['message'])}</td></tr>")
    sections = []
    for r in results:
        ev = r.get("evidence") or {}
        if "flip_matrix" in ev:
            classes = ev.get("classes") or [str(i) for i in range(len(ev["flip_matrix"]))]
            head = "".join(f"<th>cand: {_e(c)}</th>" for c in classes)
            body = "".join(f"<tr><th>base: {_e(classes[i])}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                           for i, row in enumerate(ev["flip_matrix"]))
            sections.append(f"<h3>Flip matrix: {_e(r['check'])} / {_e(r['slice'])}</h3>"
                            f"<table><tr><th></th>{head}</tr>{body}</table>")
        if r["check"].startswith("latency") and r["slice"] == "overall":
            lrows = "".join(f"<tr><td>{_e(role)}</td>" + "".join(
                f"<td>{'' if ev.get(role, {}).get(q) is None else f'{ev[role][q] * 1e3:.3f}'}</td>"
                for q in ("p50", "p95", "p99")) + f"<td>{ev.get(role, {}).get('n', 0)}</td></tr>"
                for role in ("baseline", "candidate"))
            sections.append("<h3>Latency per call (ms)</h3><table><tr><th>role</th><th>p50</th><th>p95</th>"
                            f"<th>p99</th><th>calls</th></tr>{lrows}</table>")
    perf = _perf_section(results)
    if perf:
        sections.append(perf)
    summary = ("<p>All checks passed.</p>" if not failing else "<ul>" + "".join(
        f"<li><b>{_e(r['check'])}</b> on <b>{_e(r['slice'])}</b>: {_e(r['status'])}: {_e(r['message'])}</li>"
        for r in failing) + "</ul>")
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
<h2>Check results</h2>
<table><tr><th>check</th><th>slice</th><th>status</th><th>value</th><th>warn</th><th>fail</th><th>n</th><th>message</th></tr>
{''.join(rows)}</table>
{''.join(sections)}
<h2>Reproducibility record</h2><pre>{_e(record)}</pre>
</body></html>"""


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


def write_run_report(run: dict[str, Any], reports_dir: Path) -> str:
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"run-{run['id']}-{run['pair']}.html"
    path.write_text(render_run(run), encoding="utf-8")
    return str(path.resolve())

"""A run's report: one self-contained HTML file a responder can open offline (no CDN).

The headline comes first: the run's status and the sentence of the result that decided it (in
the words of its deciding test, :func:`sentinel.words.describe`), its severity, the incident it
counts towards, the traffic time range, since which run the check has been failing and the
recommended action; then what needs attention (worst first), each check's value over the pair's
last runs, the flip matrix, reliability curves and latency distributions (inline SVG), the
per-slice table and every result. The reproducibility record is folded at the end. Below it,
when the run had a reference window, Evidently's own view of the same columns' distributions
(inputs and output probabilities Sentinel's drift checks tested; no latency, and no verdicts of
its own, so it cannot contradict Sentinel's), embedded in the same file (an ``iframe srcdoc``, so
its scripts stay in their own frame and nothing is fetched from the network).
"""
from __future__ import annotations

import html
import json
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .diagnose.auto import RECORD_KEY, stored
from .diagnose.html import diagnosis_html
from .perf.memory import track, untrack
from .verdict import decision_of, result_type
from .words import check_label, describe

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
    """What decided a stored result, in words (:func:`sentinel.words.describe`: the test that set
    the status, with that test's own value, level and direction), else its message."""
    return describe(r)


def _decided(r: dict[str, Any]) -> str:
    d = decision_of(r)
    return "" if d is None else _e(describe(r, with_where=None))


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
                          f"{_e(r['status'])}</span>: {_e(describe(r, with_where=None))}</li>")
        shown = "".join(line(r) for r in rs[:3])
        rest = (f"<details><summary>{len(rs) - 3} more slices</summary><ul>{''.join(line(r) for r in rs[3:])}</ul>"
                "</details>") if len(rs) > 3 else ""
        worst = min((r["status"] for r in rs), key=lambda st: _RANK.get(st, 3))
        items.append(f"<li><b>{_e(check)}</b> ({_e(worst)}, {len(rs)} slice{'s' if len(rs) != 1 else ''})"
                     f"<ul>{shown}</ul>{rest}</li>")
    return "<ul>" + "".join(items) + "</ul>"


#: what to do first, by check type, when it failed or warned (the runbook link comes after)
ACTIONS = {
    "decision_flips": "Hold the candidate's rollout (or roll back to the baseline) until the flipped decisions are "
                      "explained: look at the flip matrix and the failing slices below.",
    "critical_recall": "Roll back to the baseline: the candidate misses safety-critical cases the baseline caught.",
    "calibration": "Do not use the candidate's probabilities for thresholds or triage until recalibrated.",
    "confidence": "Expect more low-confidence decisions (more rows for human review); recalibrate or hold the rollout.",
    "fairness": "Hold the rollout: the candidate changed one group's decisions more than the others'.",
    "robustness": "The candidate is more brittle near its decision boundary: re-check the compression settings.",
    "data_drift": "The inputs moved against the reference window: check the upstream data; if the shift is expected, "
                  "accept this run so it becomes the reference.",
    "prediction_drift": "The candidate's outputs moved against the reference window: check the inputs and the "
                        "candidate's decisions before trusting them.",
    "latency_p95": "The candidate is slower than the baseline: if that is acceptable, an approver accepts the run "
                   "(`sentinel accept RUN_ID`); otherwise keep the current candidate.",
    "perf_history": "The candidate got slower than its accepted history on this host: check the host and the "
                    "runtime, then accept or reject the run.",
    "latency_served": "Production latency rose against earlier windows: check the serving host and its load.",
    "scenario": "A fixed scenario set no longer passes: look at its failing rows before shipping the candidate.",
}
DEFAULT_ACTION = "Look at the failing slices below; the check's runbook says what to do."


def _when(value: Any) -> str:
    """A time for people: ``2026-12-01 16:59:52 UTC``, never microseconds."""
    if value is None:
        return "-"
    if hasattr(value, "strftime"):
        if getattr(value, "tzinfo", None) is not None:
            import datetime as dt
            value = value.astimezone(dt.timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value).replace("T", " ").split(".")[0].removesuffix("Z").split("+")[0] + " UTC"


def _worst(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The result that heads the report: the worst status, a safety-critical slice, then overall."""
    bad = [r for r in results if r["status"] in _RANK]
    return min(bad, key=lambda r: (_RANK[r["status"]], not (r.get("evidence") or {}).get("critical"),
                                   r["slice"] != "overall"), default=None)


def _headline_block(run: dict[str, Any], results: list[dict[str, Any]], ctx: dict[str, Any]) -> str:
    """Status, the deciding sentence, severity, incident, traffic range, failing since, action."""
    top = _worst(results)
    colour = STATUS_COLOURS.get(run["status"], "#000")
    lede = (f"<p class='lede'><b>{_e(top['check'])}</b> {_e(top['status'])}ed on <b>{_e(top['slice'])}</b>: "
            f"{_e(describe(top, with_where=None))}</p>"
            if top is not None else "<p class='lede'>Every check passed or had too little data to judge.</p>")
    incidents = ctx.get("incidents") or []
    facts = []
    if incidents:
        worst_inc = max(incidents, key=lambda i: {"warning": 1, "high": 2, "critical": 3}.get(i["severity"], 0))
        facts.append(("Severity", f"<b>{_e(worst_inc['severity'])}</b>"))
        facts.append(("Incident", ", ".join(
            f"<a href='{_e(ctx.get('base_url', ''))}/incidents/{i['id']}'>#{i['id']}</a> ({_e(i['state'])})"
            for i in incidents)))
    elif top is not None and top["status"] in ("fail", "warn"):
        sev = ("critical" if (top.get("evidence") or {}).get("critical") else "high") if top["status"] == "fail" \
            else "warning"
        facts.append(("Severity", f"<b>{sev}</b> (no incident: incidents open on {_e(ctx.get('open_on', 'fail'))})"))
    lo, hi = ctx.get("traffic") or (None, None)
    span = ((run.get("record") or {}).get("samples") or {}).get("time_range") or {}
    if lo is None and span.get("first"):
        import datetime as dt
        lo, hi = dt.datetime.fromisoformat(span["first"]), dt.datetime.fromisoformat(span["last"])
    if lo is not None:
        facts.append(("Traffic", f"{_e(_when(lo))} to {_e(_when(hi))}"))
    if top is not None:
        from .storage.summaries import failing_since
        since = failing_since(ctx.get("history") or [], top["check"])
        if since is not None:
            facts.append(("Failing since", f"run {since}" + (" (this run)" if since == run["id"] else "")))
        action = ACTIONS.get(result_type(top), DEFAULT_ACTION)
        runbook = next((i.get("runbook_url") for i in incidents if i.get("runbook_url")), None)
        facts.append(("Recommended action", _e(action) + (f" <a href='{_e(runbook)}'>Runbook</a>" if runbook else "")))
    facts.append(("Run", f"trigger {_e(run['trigger'])}, started {_e(_when(run['started_at']))}, "
                         f"finished {_e(_when(run.get('finished_at')))}, {run['n_samples']} samples"))
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    return (f"<h1>Run {run['id']} · {_e(run['pair'])} · <span style='color:{colour}'>{_e(run['status']).upper()}</span></h1>"
            f"{lede}<table class='facts'>{rows}</table>")


def _history_section(results: list[dict[str, Any]], ctx: dict[str, Any]) -> str:
    """Each check's headline value (its overall slice, else its worst slice) over the last runs."""
    past = ctx.get("history") or []
    if len(past) < 2:
        return ""
    from . import plots

    charts = []
    for check in sorted({r["check"] for r in results}):
        rs = [r for r in results if r["check"] == check]
        r = next((x for x in rs if x["slice"] == "overall"), None) or _worst(rs) or rs[0]
        points = [(h["id"], *reversed(h["results"].get((check, r["slice"]), ("insufficient_data", None))))
                  for h in past]
        charts.append(plots.history([(rid, v, st) for rid, v, st in points], warn=r.get("warn"), fail=r.get("fail"),
                                    label=f"{check} / {r['slice']}"))
    return (f"<h2>Checks over the last {len(past)} runs</h2><p>Dots coloured by status; dashed lines are the "
            f"check's warn and fail levels.</p><div class='plots'>{''.join(charts)}</div>")


def render_run(run: dict[str, Any], evidently: str | None = None, context: dict[str, Any] | None = None,
               evidently_sample: dict[str, Any] | None = None) -> str:
    """The report as one HTML string. ``evidently``: Evidently's HTML to embed (``evidently_sample``:
    the rows it was drawn from, see :func:`evidently_for`; an ``error`` there says why it is
    missing); ``context``: what
    the store knows around the run (``storage.summaries.report_context``: traffic range,
    incidents, history), plus ``base_url`` (the console's public URL) for links."""
    ctx = context or {}
    # several candidates: each result's check shown with its candidate (damaged:decision_flips)
    results = [{**r, "check": check_label(r["check"], r["candidate"])} if r.get("candidate") else r
               for r in run.get("results", [])]
    failing = [r for r in results if r["status"] in ("fail", "warn", "error")]
    rows = []
    for r in results:
        colour = STATUS_COLOURS.get(r["status"], "#000")
        value = "" if r["value"] is None else f"{r['value']:.4g}"
        rows.append(f"<tr><td>{_e(r['check'])}</td><td>{_e(r['slice'])}</td>"
                    f"<td style='color:{colour};font-weight:bold'>{_e(r['status'])}</td><td>{value}</td>"
                    f"<td>{'' if r['warn'] is None else _e(r['warn'])}</td><td>{'' if r['fail'] is None else _e(r['fail'])}</td>"
                    f"<td>{r['n']}</td><td>{_p_adjusted(r)}</td><td>{_decided(r) or _e(r['message'])}</td></tr>")
    sections = _evidence_sections(results)
    perf = _perf_section(results)
    if perf:
        sections.append(perf)
    record = json.dumps({k: v for k, v in (run.get("record") or {}).items() if k != RECORD_KEY},   # shown above
                        indent=2, sort_keys=True, default=str)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Sentinel run {run['id']} ({_e(run['pair'])}): {_e(run['status'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px;color:#1f2328}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}}pre{{background:#f6f8fa;padding:1em;overflow:auto}}
.lede{{font-size:1.15em}}.facts th{{background:#f6f8fa;width:11em}}.plots svg{{margin:0 1em 1em 0}}</style>
</head><body>
{_headline_block(run, results, ctx)}
<h2>What needs attention</h2>{_attention(failing)}
{diagnosis_html(stored(run))}
{_history_section(results, ctx)}
{_tradeoff(run)}
{''.join(sections)}
<h2>Per-slice table</h2>{_slice_table(results)}
<h2>Check results</h2>
<p>Statistical checks alarm only when a change is significant at their false-alarm rate after family-wise
control (p_adj below) <i>and</i> at least their warn/fail level (the minimum effect size).</p>
<table><tr><th>check</th><th>slice</th><th>status</th><th>value</th><th>warn</th><th>fail</th><th>n</th><th>p_adj</th><th>in words</th></tr>
{''.join(rows)}</table>
<details><summary>Reproducibility record (model hashes, config hash, seeds, samples, package versions)</summary>
<pre>{_e(record)}</pre></details>
{_evidently_section(evidently, evidently_sample)}
</body></html>"""


def _tradeoff(run: dict[str, Any]) -> str:
    """The candidates' trade-off table and plot (a run of several candidates; else empty)."""
    from .comparison import tradeoff_section
    return tradeoff_section(run.get("record"))


def _evidence_sections(results: list[dict[str, Any]]) -> list[str]:
    """The charts and tables each result's evidence carries (reliability, confidence, flips, latency)."""
    from . import plots

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
            chart = plots.matrix(ev["flip_matrix"], classes, label=f"flip matrix {r['check']} / {r['slice']}")
            head = f"<h3>Flip matrix: {_e(r['check'])} / {_e(r['slice'])}</h3>"
            sections.append(head + chart if r["slice"] == "overall" else
                            f"<details><summary>Flip matrix: {_e(r['check'])} / {_e(r['slice'])}</summary>{chart}</details>")
        dist = ev.get("distributions") or {}
        if dist.get("unit") == "ms" and any(isinstance(v, list) and v for v in dist.values()):
            sketches = {k: v for k, v in dist.items() if k != "unit" and isinstance(v, list)}
            sections.append(f"<h3>Latency distribution: {_e(r['check'])} / {_e(r['slice'])}</h3>"
                            + plots.distributions(sketches, unit="ms", label="share of calls at or below (ECDF)"))
        if result_type(r) in LATENCY_TABLE_TYPES and r["slice"] == "overall":
            lrows = "".join(f"<tr><td>{_e(role)}</td>" + "".join(
                f"<td>{'' if ev.get(role, {}).get(q) is None else f'{ev[role][q] * 1e3:.3f}'}</td>"
                for q in ("p50", "p95", "p99")) + f"<td>{ev.get(role, {}).get('n', 0)}</td></tr>"
                for role in ("baseline", "candidate"))
            sections.append("<h3>Latency per call (ms)</h3><table><tr><th>role</th><th>p50</th><th>p95</th>"
                            f"<th>p99</th><th>calls</th></tr>{lrows}</table>")
    return sections


def _evidently_section(doc: str | None, sample: dict[str, Any] | None = None) -> str:
    if doc is None and (sample or {}).get("error"):
        return (f"<h2>Evidently: distributions</h2><p>Not available for this run: {_e(sample['error'])}. "
                "Sentinel's checks above are complete without it.</p>")
    if doc is None:
        return ("<h2>Evidently: distributions</h2><p>None for this run: no drift check compared it with a "
                "reference window (no accepted run before it and no pinned data set).</p>")
    return ("<h2>Evidently: distributions</h2><p>Evidently's own view of the columns Sentinel's drift checks "
            f"tested (input features and the candidate's output probabilities), this window against the "
            f"reference window, {_sample_words(sample)}: summaries and histograms only. It gives no drift "
            "verdicts of its own; whether a column drifted is Sentinel's decision, in the results above (a "
            "family-wise test <i>and</i> a minimum effect size, on every row). Latency is not shown here: see "
            "the latency distributions above.</p>"
            f"<iframe style='width:100%;height:1400px;border:1px solid #d0d7de' srcdoc=\"{html.escape(doc, quote=True)}\">"
            "</iframe>")


def _sample_words(sample: dict[str, Any] | None) -> str:
    """"drawn from 5,000 of 100,000 rows of this window and 5,000 of 80,000 of the reference (a
    subsample seeded 0)"; without ``sample``, the bound."""
    if not sample:
        return f"at most {EVIDENTLY_MAX_ROWS:,} rows of each (a seeded subsample)"
    c, r = sample["current"], sample["reference"]
    sub = c["rows"] < c["of"] or r["rows"] < r["of"]
    return (f"drawn from {c['rows']:,} of {c['of']:,} rows of this window and {r['rows']:,} of {r['of']:,} of the "
            f"reference" + (f" (at most {sample['max_rows']:,} of each: a subsample seeded {sample['seed']})" if sub else ""))


_WARM_LOCK = threading.Lock()

#: rows of each window Evidently's section is drawn from (a seeded subsample above this; Sentinel's
#: own statistics always use every row)
EVIDENTLY_MAX_ROWS = 5000


def evidently_for(data: Any, results: list[dict[str, Any]]) -> tuple[str | None, dict[str, Any] | None]:
    """Evidently's HTML for the run: the columns Sentinel's drift checks tested (input columns or
    descriptors, and the candidate's output probabilities), this window vs the reference window,
    as distributions without verdicts (checks.drift.evidently_summary_html, built in a
    short-lived child process: :class:`EvidentlyProcess`), on at most :data:`EVIDENTLY_MAX_ROWS`
    rows of each (seeded). Also what the section was drawn from (rows of each window used and
    in all, the seed), which the section states. (None, None) when no drift check compared any.
    A section started for ``data`` before its checks ran (:func:`begin_evidently`) is used when
    the checks tested the columns it was started with; else it is dropped and built now."""
    columns = evidently_columns(data, results)
    early = _take_early(data)
    if columns is None:
        if early is not None:
            early[2].close()
        release_evidently()
        return None, None
    cur, ref = columns
    if early is not None and early[0] == list(cur):
        return early[2].html(), early[1]
    if early is not None:
        early[2].close()
    cur, ref, sample = _drawn(data, cur, ref)
    return _take_process().html(ref, cur), sample


def begin_evidently(data: Any, tested: list[str]) -> None:
    """Start building ``data``'s Evidently section now, on the columns the drift checks are about
    to test (``tested``, sentinel.checks.drift.tested_columns), so that Evidently's process works
    on the other core while the checks run; :func:`evidently_for` collects it."""
    columns = _columns_of(data, set(tested))
    if columns is None:
        return
    cur, ref, sample = _drawn(data, *columns)
    proc = _take_process()
    proc.send(ref, cur)
    with _WARM_LOCK:
        stale = list(_early)
        _early[:] = [(data, list(cur), sample, proc)]
    for old in stale:
        old[3].close()


def _take_early(data: Any) -> tuple[list[str], dict[str, Any], "EvidentlyProcess"] | None:
    """The section started for ``data`` (names, what it was drawn from, its process), or None;
    a section started for other data is ended."""
    with _WARM_LOCK:
        got = list(_early)
        _early.clear()
    mine = None
    for started, names, sample, proc in got:
        if started is data:
            mine = (names, sample, proc)
        else:
            proc.close()
    return mine


def _drawn(data: Any, cur: dict[str, Any], ref: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The seeded subsample of each window Evidently is given, and the record of it."""
    seed = int(getattr(data, "seed", 0) or 0)
    rng = np.random.default_rng(seed)
    n_cur, n_ref = len(next(iter(cur.values()))), len(next(iter(ref.values())))
    cur, ref = _subsample(cur, rng), _subsample(ref, rng)
    sample = {"max_rows": EVIDENTLY_MAX_ROWS, "seed": seed, "columns": len(cur),
              "current": {"rows": len(next(iter(cur.values()))), "of": n_cur},
              "reference": {"rows": len(next(iter(ref.values()))), "of": n_ref}}
    return cur, ref, sample


def evidently_columns(data: Any, results: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(current, reference) columns by name of the drift columns ``results`` tested; None when
    no drift check compared any."""
    drift = [r for r in results if (r.get("evidence") or {}).get("method") and r["slice"].count("=") == 1]
    if not drift:
        return None
    return _columns_of(data, {r["evidence"]["column"] for r in drift})


def _columns_of(data: Any, tested: set[str]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(current, reference) columns by name among ``tested``, in the drift checks' order."""
    from .checks.drift import drift_columns

    if not tested or data is None or data.reference is None or not data.reference.n or not data.n:
        return None
    names, x, xr = drift_columns(data)
    cur = {c: x[:, j] for j, c in enumerate(names) if c in tested}
    ref = {c: xr[:, j] for j, c in enumerate(names) if c in tested}
    for i, cls in enumerate(data.classes):
        col = f"p({cls})"
        if col in tested:
            cur[col], ref[col] = data.candidate[:, i], data.reference.candidate[:, i]
    return (cur, ref) if cur else None


def _subsample(columns: dict[str, Any], rng: Any) -> dict[str, Any]:
    n = len(next(iter(columns.values())))
    if n <= EVIDENTLY_MAX_ROWS:
        return columns
    keep = np.sort(rng.choice(n, EVIDENTLY_MAX_ROWS, replace=False))
    return {k: np.asarray(v)[keep] for k, v in columns.items()}


#: seconds a report waits for Evidently's process before leaving its section out
EVIDENTLY_TIMEOUT_SECONDS = 300


class EvidentlyProcess:
    """A short-lived child process that builds one Evidently section
    (sentinel.checks.drift.summary_html_child). Started early (:func:`prepare_evidently`, when a
    run starts), it imports Evidently (5-7 s, ~290 MB) beside the run and waits
    for the columns; it exits after one section. The parent (the daemon) never imports Evidently."""

    def __init__(self) -> None:
        import os
        import subprocess
        import sys

        root = str(Path(__file__).resolve().parents[1])   # the child imports this same sentinel
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen([sys.executable, "-c", "from sentinel.checks.drift import summary_html_child; "
                                      "summary_html_child()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        track(self.proc)   # the daemon's shutdown stops it with the memory probes
        self._talk: threading.Thread | None = None     # the thread handing the columns over (send)
        self._answer: Any = None                       # (stdout, stderr) or the exception it met

    def send(self, reference: dict[str, Any], current: dict[str, Any]) -> None:
        """Hand the columns over and go on: a thread talks to the child, :meth:`html` collects."""
        import io

        buf = io.BytesIO()
        names = list(current)
        np.savez(buf, names=np.array(json.dumps(names)),
                 **{f"r{i}": np.asarray(reference[c], dtype=float) for i, c in enumerate(names)},
                 **{f"c{i}": np.asarray(current[c], dtype=float) for i, c in enumerate(names)})
        payload = buf.getvalue()

        def talk() -> None:
            try:
                self._answer = self.proc.communicate(payload, timeout=EVIDENTLY_TIMEOUT_SECONDS)
            except BaseException as exc:   # noqa: BLE001 - raised again by html(), in the caller's thread
                self._answer = exc

        self._talk = threading.Thread(target=talk, name="sentinel-evidently", daemon=True)
        self._talk.start()

    def html(self, reference: dict[str, Any] | None = None, current: dict[str, Any] | None = None) -> str:
        """The section's HTML (of the columns given here, or to :meth:`send` before); RuntimeError
        (with the child's last words) when it failed."""
        if self._talk is None:
            assert reference is not None and current is not None
            self.send(reference, current)
        assert self._talk is not None
        self._talk.join()
        if isinstance(self._answer, BaseException):
            self.close()
            raise self._answer
        out, err = self._answer
        untrack(self.proc)
        if self.proc.returncode != 0 or not out:
            tail = " ".join(err.decode("utf-8", "replace").strip().splitlines()[-1:])
            raise RuntimeError(f"Evidently's report process exited {self.proc.returncode}: {tail}")
        return out.decode("utf-8")

    def close(self) -> None:
        """End the child now (it holds nothing worth keeping; waiting for an empty stdin to end it
        would wait for its Evidently import first)."""
        if self.proc.poll() is None:
            self.proc.kill()
        if self._talk is not None:
            self._talk.join()
        else:
            self.proc.communicate()
        untrack(self.proc)


class ReportWriter:
    """The revalidator's ``report_writer``: ``writer(run, loaded, data)`` writes the run's report
    through ``write(run, data)`` and returns its path; ``prepare(loaded)``, when a run starts,
    starts Evidently's process for its section if the pair has a drift check (the import then
    runs beside the run instead of after it); ``begin(loaded, data)``, before the checks, gives it
    the columns (the section is then built beside the checks instead of after them); ``end()``
    when the run ends drops what a run without a report had begun."""

    def __init__(self, write: Any):
        self.write = write

    def __call__(self, run: dict[str, Any], loaded: Any, data: Any = None) -> str | None:
        return self.write(run, data)

    def prepare(self, loaded: Any) -> None:
        """Never raises: a process that cannot start now is started (or reported) at report time."""
        if any(getattr(c, "type", "") in DRIFT_CHECK_TYPES for c in getattr(loaded, "checks", ())):
            try:
                prepare_evidently()
            except Exception:   # noqa: BLE001 - the run goes on; the report says what failed
                import logging
                logging.getLogger("sentinel.reports").warning("Evidently's process did not start", exc_info=True)

    def end(self) -> None:
        """When a run ends, reported or not: nothing begun for it is left behind."""
        drop_early()

    def begin(self, loaded: Any, data: Any) -> None:
        """Once the run's data is built, before its checks: hand Evidently's process the columns
        the drift checks will test, so the section is built beside the checks. Never raises: the
        section is then built at report time, as without this."""
        from .checks.drift import tested_columns
        try:
            tested = tested_columns(getattr(loaded, "checks", ()), data)
            if tested:
                begin_evidently(data, tested)
        except Exception:   # noqa: BLE001
            import logging
            logging.getLogger("sentinel.reports").warning("Evidently's section could not begin early", exc_info=True)


DRIFT_CHECK_TYPES = ("data_drift", "prediction_drift")
_warm: list[EvidentlyProcess] = []   # at most one started ahead of a report (prepare_evidently)
#: at most one section begun before its run's checks (begin_evidently): (data, names, sample, process)
_early: list[tuple[Any, list[str], dict[str, Any], EvidentlyProcess]] = []


def prepare_evidently() -> None:
    """Start the next report's Evidently process now, unless one is already waiting; a section
    begun for a run that ended without its report is dropped."""
    drop_early()
    with _WARM_LOCK:
        if not any(p.proc.poll() is None for p in _warm):
            _warm.clear()
            _warm.append(EvidentlyProcess())


def drop_early() -> None:
    """End a section begun for a run that ended without its report (cancelled, failed): it would
    hold that run's data until the next run."""
    with _WARM_LOCK:
        stale = list(_early)
        _early.clear()
    for old in stale:
        old[3].close()


def release_evidently() -> None:
    """End the waiting process (the report needs no Evidently section)."""
    with _WARM_LOCK:
        procs = list(_warm)
        _warm.clear()
    for p in procs:
        p.close()


def _take_process() -> EvidentlyProcess:
    with _WARM_LOCK:
        alive = [p for p in _warm if p.proc.poll() is None]
        _warm.clear()
    return alive[0] if alive else EvidentlyProcess()


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


def write_run_report(run: dict[str, Any], reports_dir: Path, data: Any = None,
                     context: dict[str, Any] | None = None) -> str:
    """Write the run's report; ``data`` (the run's RunData) adds Evidently's view of the drift
    columns; ``context`` what the store knows around the run (see :func:`render_run`)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"run-{run['id']}-{run['pair']}.html"
    try:
        doc, sample = evidently_for(data, run.get("results", []))
    except Exception as exc:   # noqa: BLE001 - the report is written without Evidently's section, saying why
        import logging
        logging.getLogger("sentinel.reports").warning("Evidently section failed", exc_info=True,
                                                      extra={"run_id": run.get("id")})
        doc, sample = None, {"error": f"{type(exc).__name__}: {exc}"}
    path.write_text(render_run(run, doc, context, evidently_sample=sample), encoding="utf-8")
    return str(path.resolve())

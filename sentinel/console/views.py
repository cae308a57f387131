"""What each console page shows, read from the store in bounded, paginated queries (1,000s of
incidents and 10,000s of runs cost one page's worth each), as plain dicts for the templates.

Words come from the objects that decided them: result sentences from ``verdict.sentence`` (the
test that set the status, with its own level), incident titles as the engine wrote them."""
from __future__ import annotations

import datetime as dt
from typing import Any

from ..diagnose.auto import RECORD_KEY
from ..diagnose.html import diagnosis_html
from ..storage.records import as_utc
from ..verdict import decision_of, sentence
from ..words import check_label
from . import svg

PAGE_SIZE = 50
SERIES_RUNS = 30        # runs in the check-value plots
SEVERITIES = ("critical", "high", "warning")
STATUS_ORDER = {"fail": 0, "error": 1, "warn": 2, "insufficient_data": 3, "pass": 4}


def ago(when: Any, now: dt.datetime | None = None) -> str:
    """``3 min ago``, ``2 h ago``, ``5 d ago`` (or ``never``)."""
    if when is None:
        return "never"
    if isinstance(when, str):
        when = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    secs = max(0.0, ((now or dt.datetime.now(dt.timezone.utc)) - as_utc(when)).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if secs >= size:
            return f"{int(secs // size)} {unit} ago"
    return f"{int(secs)} s ago"


def when(value: Any) -> str:
    """A timestamp as people read it: ``2026-11-21 10:00:03 UTC`` (no microseconds)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def result_words(row: dict[str, Any]) -> str:
    """A stored result in words: the sentence of the test that decided it, else its message."""
    d = decision_of(row)
    return sentence(d) if d is not None else str(row.get("message") or row.get("status", ""))


def overview(app: Any, control: Any) -> dict[str, Any]:
    last = app.store.last_runs()
    counts = app.incidents.counts()
    nxt = control.next_run_times() if hasattr(control, "next_run_times") else {}
    pairs = []
    for name in app.cfg.pairs:
        run = last.get(name)
        by_sev = {sev: sum(n for (p, st, s), n in counts.items() if p == name and s == sev and st == "open")
                  for sev in SEVERITIES}
        acked = sum(n for (p, st, _), n in counts.items() if p == name and st == "acknowledged")
        silenced = sum(n for (p, st, _), n in counts.items() if p == name and st == "silenced")
        pairs.append({"name": name, "run": run, "ago": ago(run and (run["finished_at"] or run["started_at"])),
                      "open": by_sev, "acknowledged": acked, "silenced": silenced, "next_run": nxt.get(name)})
    state = getattr(getattr(control, "state", None), "value", None)
    return {"pairs": pairs, "daemon_state": state, "lag": getattr(control, "last_lag", None)}


def incidents(app: Any, *, state: str | None, severity: str | None, pair: str | None, page: int) -> dict[str, Any]:
    rows, total = app.incidents.page(state=state, severity=severity, pair=pair, limit=PAGE_SIZE,
                                     offset=(page - 1) * PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    return {"incidents": rows, "total": total, "page": page, "pages": pages,
            "filters": {"state": state, "severity": severity, "pair": pair}}


def incident(app: Any, incident_id: int) -> dict[str, Any]:
    inc = app.incidents.get(incident_id)
    first = inc.get("first_run_id")
    traffic = app.store.traffic_range(first) if first else (None, None)
    deliveries: dict[int, list[dict[str, Any]]] = {}
    for d in inc.get("deliveries") or []:
        deliveries.setdefault(d.get("event_id"), []).append(d)
    timeline = [{**ev, "deliveries": deliveries.get(ev["id"], []), "note": (ev.get("detail") or {}).get("note")}
                for ev in inc.get("events") or []]
    slices = (inc.get("evidence") or {}).get("slices") or []
    ids = list(dict.fromkeys([*(inc.get("run_ids") or [])]))[-20:]
    runs = app.store.run_summaries(ids=ids) if ids else []
    primary = (inc.get("evidence") or {}).get("result") or {}
    headline = result_words({"evidence": primary.get("details"), "message": primary.get("message")})
    return {"incident": inc, "traffic": traffic, "timeline": timeline, "slices": slices, "runs": runs,
            "headline": headline,
            "evidence": [{"slice": s.get("slice"), "status": s.get("status"), "words": s.get("message") or ""}
                         for s in slices]}


def run(app: Any, run_id: int) -> dict[str, Any] | None:
    r = app.store.get_run(run_id)
    if r is None:
        return None
    results = sorted(r.get("results") or [], key=lambda x: (STATUS_ORDER.get(x["status"], 5), x["check"], x["slice"]))
    for x in results:
        x["words"] = result_words(x)
        x["label"] = check_label(x["check"], x.get("candidate"))
    failing = [x for x in results if x["status"] in ("fail", "error", "warn")]
    record = dict(r.get("record") or {})
    entry = record.pop(RECORD_KEY, None)   # shown in its own section, not in the reproducibility record
    return {"run": r, "results": results, "failing": failing, "plots": run_plots(app, r, results),
            "record": record, "perf": record.get("perf") or {}, "traffic": app.store.traffic_range(run_id),
            "diagnosis": diagnosis_html(entry if isinstance(entry, dict) else None),
            "can_diagnose": r["pair"] in app.cfg.pairs and r["status"] not in ("running", "error", "abandoned"),
            "diagnose_candidates": list(app.cfg.pairs[r["pair"]].candidates or []) if r["pair"] in app.cfg.pairs else []}


def run_plots(app: Any, r: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    """The candidates' trade-off (a run of several), flip matrices, latency distributions, then the
    failing checks' values over recent runs."""
    from ..comparison import tradeoff_section

    plots, matrices = [tradeoff_section(r.get("record"), heading="h3")], set()
    for x in sorted(results, key=lambda x: x["slice"] != "overall"):    # overall's matrix first
        ev = x.get("evidence") or {}
        if "flip_matrix" in ev and x["check"] not in matrices:
            matrices.add(x["check"])
            classes = ev.get("classes") or [str(i) for i in range(len(ev["flip_matrix"]))]
            plots.append(svg.flip_matrix(ev["flip_matrix"], classes, title=f"{x['check']}: flips ({x['slice']})"))
        dist = ev.get("distributions") or {}
        if dist.get("unit") == "ms":
            curves = {k: dist[k] for k in ("baseline", "accepted", "history", "candidate") if dist.get(k)}
            plots.append(svg.quantiles(curves, title=f"latency: {x['check']} / {x['slice']}"))
    series = app.store.check_series(r["pair"], SERIES_RUNS)["series"]
    shown = [x for x in results if x["status"] != "pass"][:6] or results[:3]
    for x in shown:
        pts = [p for p in series.get((x["check"], x["slice"]), []) if p[0] <= r["id"]]
        level = x.get("fail") if x.get("fail") is not None else x.get("warn")
        plots.append(svg.series(pts, title=f"{x['check']} / {x['slice']} over runs", level=level))
    return [p for p in plots if p]


def pair(app: Any, name: str, *, before: int | None = None) -> dict[str, Any]:
    runs = app.store.run_summaries(pair=name, limit=PAGE_SIZE, before=before)
    data = app.store.check_series(name, SERIES_RUNS)
    chosen: dict[str, str] = {}     # each check's overall value, else its first slice's
    for check, slice_ in sorted(data["series"]):
        if slice_ == "overall" or check not in chosen:
            chosen[check] = slice_
    plots = [svg.series(data["series"][(check, slice_)], title=f"{check} / {slice_}")
             for check, slice_ in sorted(chosen.items())][:24]
    last = app.store.get_run(runs[0]["id"]) if runs and before is None else None
    models = ((last or {}).get("record") or {}).get("models") or {}
    if "candidates" in models:      # several candidates: one row each, by name
        models = {"baseline": models.get("baseline"),
                  **{f"candidate {n}": m for n, m in (models.get("candidates") or {}).items()}}
    acceptable = next((r for r in (runs if before is None else []) if r["status"] not in ("running", "error")), None)
    return {"name": name, "runs": runs, "plots": plots, "models": models,
            "accepted": app.store.accepted_perf(name), "latest": last, "acceptable": acceptable,
            "next": runs[-1]["id"] if len(runs) == PAGE_SIZE else None}

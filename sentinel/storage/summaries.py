"""Read-only summaries of what the store holds, for the parts at the side of the flow: the
metrics a restarted daemon publishes before its first run (:func:`metrics_state`) and the context
a run's report shows beside its results (:func:`report_context`: the traffic time range, the
incidents the run counted towards, each check's values over the pair's recent runs)."""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, func, select

from . import tables as t
from ..words import check_label
from .records import as_utc

R, C, I, E, SAMPLES = t.runs, t.check_results, t.incidents, t.incident_events, t.samples
FINISHED = ("pass", "warn", "fail", "insufficient_data", "error")   # run statuses of ended runs


def metrics_state(store: Any) -> dict[str, Any]:
    """What ``sentinel_*`` gauges and counters said when the last daemon stopped, rebuilt from the
    store: ``incidents`` {(pair, severity, state): n} of unresolved incidents, ``checks``
    [(pair, check, slice, status, value)] of each pair's latest finished run, ``runs`` {(pair,
    status): n} of every run ever, ``last_run`` {pair: finished_at} of the latest finished run."""
    incidents = incident_counts(store)
    with store.engine.connect() as conn:
        runs = {(p, st): n for p, st, n in conn.execute(
            select(R.c.pair, R.c.status, func.count()).where(R.c.status != "running").group_by(R.c.pair, R.c.status))}
        latest = select(R.c.pair, func.max(R.c.id).label("id")).where(R.c.status.in_(FINISHED)).group_by(R.c.pair)
        latest = latest.subquery()
        last_run = {p: as_utc(at) for p, at in conn.execute(
            select(R.c.pair, R.c.finished_at).join(latest, R.c.id == latest.c.id))}
        checks = [(p, check_label(c, cand), s, st, v) for p, c, cand, s, st, v in conn.execute(
            select(R.c.pair, C.c.check, C.c.candidate, C.c.slice, C.c.status, C.c.value)
            .join(R, R.c.id == C.c.run_id).join(latest, R.c.id == latest.c.id))]
    return {"incidents": incidents, "runs": runs, "last_run": last_run, "checks": checks}


def incident_counts(store: Any) -> dict[tuple[str, str, str], int]:
    """Unresolved incidents by (pair, severity, state)."""
    with store.engine.connect() as conn:
        return {(p, sev, st): n for p, sev, st, n in conn.execute(
            select(I.c.pair, I.c.severity, I.c.state, func.count()).where(I.c.state != "resolved")
            .group_by(I.c.pair, I.c.severity, I.c.state))}


def report_context(store: Any, run: dict[str, Any], *, history: int = 20) -> dict[str, Any]:
    """What a run's report shows beside its own results: ``traffic`` (first, last) sample time,
    ``incidents`` the run counted towards (id, severity, state, title, first run), and
    ``history``: the last ``history`` finished runs of the pair up to this one, oldest first, each
    ``{id, started_at, status, results: {(check, slice): (status, value)}}``."""
    with store.engine.connect() as conn:
        lo, hi = conn.execute(select(func.min(SAMPLES.c.ts), func.max(SAMPLES.c.ts))
                              .where(SAMPLES.c.run_id == run["id"])).one()
        incidents = [dict(r._mapping) for r in conn.execute(
            select(I.c.id, I.c.severity, I.c.state, I.c.title, I.c.first_run_id, I.c.check, I.c.runbook_url)
            .where(I.c.id.in_(select(E.c.incident_id).where(E.c.run_id == run["id"]))).order_by(I.c.id))]
        past = _history(conn, run, history)
    return {"traffic": (as_utc(lo), as_utc(hi)), "incidents": incidents, "history": past}


def _history(conn: Connection, run: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    runs = list(conn.execute(select(R.c.id, R.c.started_at, R.c.status)
                             .where(R.c.pair == run["pair"], R.c.id <= run["id"], R.c.status.in_(FINISHED))
                             .order_by(R.c.id.desc()).limit(limit)))[::-1]
    out = {r.id: {"id": r.id, "started_at": as_utc(r.started_at), "status": r.status, "results": {}} for r in runs}
    if out:
        for rid, check, slice_, status, value in conn.execute(
                select(C.c.run_id, C.c.check, C.c.slice, C.c.status, C.c.value).where(C.c.run_id.in_(list(out)))):
            out[rid]["results"][(check, slice_)] = (status, value)
    return list(out.values())


def failing_since(history: list[dict[str, Any]], check: str, statuses: tuple[str, ...] = ("fail", "warn")) -> int | None:
    """The first run of the unbroken streak, ending at the newest run of ``history``, in which
    ``check`` warned or failed on some slice; None when the newest run did not."""
    since = None
    for run in reversed(history):
        if not any(c == check and st in statuses for (c, _), (st, _) in run["results"].items()):
            break
        since = run["id"]
    return since


def when(value: dt.datetime | None) -> str:
    """A stored time for people: ``2026-12-01 16:59:52 UTC`` (no microseconds), ``-`` when unknown."""
    return "-" if value is None else as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")

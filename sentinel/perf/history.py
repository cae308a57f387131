"""A pair's accepted performance history: the perf records of its earlier accepted runs, which
perf_history judges a run against (sentinel.checks.perf), and the rule by which a run joins it."""
from __future__ import annotations

from typing import Any, Sequence

PERF_HISTORY_SCAN = 50  # earlier runs scanned for accepted performance history


def perf_history(store: Any, pair: str, limit: int, candidate: str | None = None) -> list[dict[str, Any]]:
    """Perf records of the pair's earlier accepted runs, newest first, at most ``limit`` of
    them, each with its ``run_id`` and the run's ``models`` (checks gate them by fingerprint; see
    sentinel.checks.perf). ``store`` is a Store, or anything else (then there is no history).

    ``candidate``: in a pair with several candidates, that candidate's own accepted records
    (a run keeps each one's under ``candidates.<name>.perf``), each entry's ``models`` naming that
    candidate as ``candidate``: one candidate's timings are never another's history."""
    if not hasattr(store, "list_runs"):
        return []
    out = []
    for run in store.list_runs(pair, limit=PERF_HISTORY_SCAN):
        perf, models = run_perf(run.get("record") or {}, candidate)
        if run.get("status") not in ("running", "error") and perf and perf.get("accepted"):
            out.append({**perf, "run_id": run["id"], "models": models})
        if len(out) >= limit:
            break
    return out


def run_perf(record: dict[str, Any], candidate: str | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """A run record's perf record and models for ``candidate`` (None: a single-candidate pair's
    ``perf`` and ``models``; a name: ``candidates.<name>.perf``, and the models as
    ``{"baseline", "candidate"}`` with that candidate's file)."""
    models = record.get("models") or {}
    if candidate is None:
        return record.get("perf"), models
    perf = ((record.get("candidates") or {}).get(candidate) or {}).get("perf")
    return perf, {"baseline": models.get("baseline"), "candidate": (models.get("candidates") or {}).get(candidate)}


def joins_history(results: Sequence[Any]) -> bool:
    """Whether a run's measurement is accepted: accepted runs become the reference of later
    ones, so a run whose perf_history check warned or failed is kept out, and a regression never
    becomes the new normal."""
    return not any(r.evidence.get("kind") == "perf_history" and r.status in ("warn", "fail") for r in results)

"""A pair's accepted performance history: the perf records of its earlier accepted runs, which
perf_history judges a run against (sentinel.checks.perf), and the rule by which a run joins it."""
from __future__ import annotations

from typing import Any, Sequence

PERF_HISTORY_SCAN = 50  # earlier runs scanned for accepted performance history


def perf_history(store: Any, pair: str, limit: int) -> list[dict[str, Any]]:
    """Perf records of the pair's earlier accepted runs, newest first, at most ``limit`` of
    them, each with its ``run_id`` and the run's ``models`` (checks gate them by fingerprint; see
    sentinel.checks.perf). ``store`` is a Store, or anything else (then there is no history)."""
    if not hasattr(store, "list_runs"):
        return []
    out = []
    for run in store.list_runs(pair, limit=PERF_HISTORY_SCAN):
        perf = (run.get("record") or {}).get("perf")
        if run.get("status") not in ("running", "error") and perf and perf.get("accepted"):
            out.append({**perf, "run_id": run["id"], "models": (run.get("record") or {}).get("models", {})})
        if len(out) >= limit:
            break
    return out


def joins_history(results: Sequence[Any]) -> bool:
    """Whether a run's measurement is accepted: accepted runs become the reference of later
    ones, so a run whose perf_history check warned or failed is kept out, and a regression never
    becomes the new normal."""
    return not any(r.evidence.get("kind") == "perf_history" and r.status in ("warn", "fail") for r in results)

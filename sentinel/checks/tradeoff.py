"""The trade-off table of a run of several candidates (README, "Comparing candidates"): per
candidate, what it costs in decisions and what it saves in time, memory and size, and whether it
passed every safety check; and the choice ``sentinel compare`` makes from it.

Safety checks are every check that is not a performance one (:data:`PERF_TYPES`: latency and
perf history judge speed, not decisions). A candidate *passes* when none of its safety results
failed or errored and at least one of them was judged (pass or warn): a candidate on too few
rows for any check to judge has not shown it is safe. Figures are measured in the run, never
estimated: energy is the perf record's (``measured``, or ``unavailable`` with its reason)."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from .result import CheckResult

PERF_TYPES = frozenset({"latency_p95", "perf_history", "latency_served"})
PREFER = {"smallest": "model_bytes", "fastest": "latency_ratio"}


def is_safety(result: CheckResult | Mapping[str, Any]) -> bool:
    kind = result.type if isinstance(result, CheckResult) else (result.get("evidence") or {}).get("check_type", "")
    return kind not in PERF_TYPES


def safety_verdict(results: Sequence[CheckResult]) -> tuple[bool, list[str]]:
    """(passed every safety check, the safety checks that failed or errored, by name)."""
    safety = [r for r in results if is_safety(r)]
    failed = sorted({r.check for r in safety if r.status in ("fail", "error")})
    judged = any(r.status in ("pass", "warn") for r in safety)
    return (not failed and judged), failed


def _flips(data: Any) -> tuple[float | None, str | None, float | None]:
    """Flip rate, and the worst critical class with its miss rate (rows the baseline gave that
    class and the candidate did not)."""
    base, cand = np.asarray(data.baseline), np.asarray(data.candidate)
    if base.shape[0] == 0:
        return None, None, None
    if getattr(data, "output_kind", "single") == "multilabel":
        b, c = base >= 0.5, cand >= 0.5
        return float(np.mean((b != c).any(axis=1))), None, None
    b, c = base.argmax(1), cand.argmax(1)
    worst, worst_rate = None, None
    for cls in data.critical_classes:
        k = data.classes.index(cls)
        mask = b == k
        if mask.any():
            rate = float(np.mean(c[mask] != k))
            if worst_rate is None or rate > worst_rate:
                worst, worst_rate = cls, rate
    return float(np.mean(b != c)), worst, worst_rate


def _result_value(results: Sequence[CheckResult], kind: str, key: Any = None) -> float | None:
    for r in results:
        if r.type == kind and r.slice == "overall" and r.status in ("pass", "warn", "fail"):
            if key is None:
                return None if r.value is None else float(r.value)
            value = key(r.evidence)
            return None if value is None else float(value)
    return None


def _energy(perf: Mapping[str, Any] | None, role: str) -> dict[str, Any]:
    e = (perf or {}).get("energy")
    if not e:
        return {"status": "unavailable", "reason": "not measured in this run (perf measurement off)"}
    if e.get("status") != "measured":
        return {"status": "unavailable", "reason": e.get("reason", "")}
    return {"status": "measured", "joules_per_1000": (e.get("roles") or {}).get(role, {}).get("joules_per_1000")}


def _memory(perf: Mapping[str, Any] | None, role: str) -> int | None:
    m = ((perf or {}).get("memory") or {}).get(role) or {}
    return m.get("peak_rss_delta_bytes")


def candidate_row(name: str, runner: Any, data: Any, perf: Mapping[str, Any] | None,
                  results: Sequence[CheckResult]) -> dict[str, Any]:
    flip, critical, miss = _flips(data)
    passed, failed = safety_verdict(results)
    return {"candidate": name, "sha256": runner.sha256, "path": str(runner.path), "n": int(data.baseline.shape[0]),
            "flip_rate": flip, "critical_class": critical, "critical_miss_rate": miss,
            "calibration_change": _result_value(results, "calibration",
                                                lambda ev: (ev.get("ece") or {}).get("change")),
            "latency_ratio": _result_value(results, "latency_p95"),
            "peak_memory_bytes": _memory(perf, "candidate"), "model_bytes": os.path.getsize(runner.path),
            "energy": _energy(perf, "candidate"), "safety_pass": passed, "failed_checks": failed}


def tradeoff_table(baseline: Any, per: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The run record's ``tradeoff``: the baseline's own figures and one row per candidate
    (``per``: name -> {runner, data, perf, results}), in config order."""
    perfs = [p["perf"] for p in per.values() if p.get("perf")]
    base_perf = perfs[0] if perfs else None
    return {"safety_checks": f"every check except {', '.join(sorted(PERF_TYPES))}",
            "baseline": {"sha256": baseline.sha256, "path": str(baseline.path),
                         "model_bytes": os.path.getsize(baseline.path),
                         "peak_memory_bytes": _memory(base_perf, "baseline"), "energy": _energy(base_perf, "baseline")},
            "candidates": [candidate_row(name, p["runner"], p["data"], p["perf"], p["results"])
                           for name, p in per.items()]}


def choose(table: Mapping[str, Any], prefer: str = "smallest") -> dict[str, Any] | None:
    """The candidate ``sentinel compare`` names: among those that passed every safety check, the
    smallest file (``smallest``) or the lowest latency ratio (``fastest``; one without a ratio
    comes last); None when none passed. Ties go to the first in config order."""
    key = PREFER[prefer]
    ok = [row for row in table.get("candidates", []) if row.get("safety_pass")]
    if not ok:
        return None
    return min(ok, key=lambda row: (row.get(key) is None, row.get(key) or 0))

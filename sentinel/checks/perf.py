"""Performance checks: latency of the candidate against its baseline on the same inputs."""
from __future__ import annotations

import numpy as np

from .base import OVERALL, CheckResult, RunData, ThresholdCheck  # noqa: F401


class LatencyP95Check(ThresholdCheck):
    """p95 latency per role, judged as the ratio candidate p95 / baseline p95 (a compressed model
    is deployed to be faster: a ratio of 1.0 means the speed-up is gone). Optional absolute
    limits ``params.max_candidate_p95_seconds``. ``min_samples`` counts timed calls per role.
    Evidence: p50/p95/p99 per role (seconds per call), calls per second."""
    type = "latency_p95"

    def evaluate(self, data: RunData) -> list[CheckResult]:
        lat = {role: np.asarray(v, dtype=float) for role, v in data.latency.items()}
        n = min((v.size for v in lat.values()), default=0)
        evidence = {role: _summary(v) for role, v in lat.items()}
        ratio = None
        if n and evidence.get("baseline", {}).get("p95"):
            ratio = evidence["candidate"]["p95"] / evidence["baseline"]["p95"]
        results = [self.judge(OVERALL, ratio, n, "candidate/baseline p95 latency ratio", evidence=evidence)]
        limit = self.params.get("max_candidate_p95_seconds")
        if limit is not None:
            p95 = evidence.get("candidate", {}).get("p95")
            results.append(self.judge("role=candidate", p95, n, "candidate p95 latency (s)",
                                      warn=float(limit), fail=float(limit) * 1.5, evidence=evidence))
        return results


def _summary(v: np.ndarray) -> dict[str, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), "p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
            "p99": float(np.percentile(v, 99)), "mean": float(v.mean()),
            "calls_per_second": float(1.0 / v.mean()) if v.mean() > 0 else None}

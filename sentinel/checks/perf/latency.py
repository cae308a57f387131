"""``latency_p95`` (candidate vs baseline timed interleaved in the same run) and
``latency_served`` (the production latency the messages report vs earlier accepted windows)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..data import OVERALL, RunData
from ..params import CheckParams
from ..result import CheckResult
from .judged import JudgedCheck, JudgedParams, ms_sketch, timing_summary


class LatencyP95Params(JudgedParams):
    """``min_speedup`` (fail level = 1/min_speedup) and ``max_candidate_p95_seconds`` besides the
    judge's params."""
    RANGES: ClassVar[dict[str, tuple[float, float | None]]] = {**JudgedParams.RANGES, "min_speedup": (0.0, None)}
    min_speedup: float | None = None
    max_candidate_p95_seconds: float | None = None


def _timings(data: RunData) -> list[tuple[int, dict[str, np.ndarray]]]:
    """(batch size, seconds by role) of this run: the perf measurement, else the plain latencies."""
    if data.perf is not None and data.perf.timings:
        return [(t.batch_size, t.seconds) for t in data.perf.timings]
    if data.latency:
        return [(1, {role: np.asarray(v, dtype=float) for role, v in data.latency.items()})]
    return []


def _slice_for(batch_size: int, prefix: str = "") -> str:
    return f"{prefix}batch={batch_size}" if (prefix or batch_size != 1) else OVERALL


class LatencyP95Check(JudgedCheck):
    """Candidate vs baseline on the same inputs, timed interleaved in this run. ``value`` is the
    Hodges–Lehmann latency ratio candidate/baseline (< 1: the candidate is faster; its inverse is
    the speed-up). ``params``: ``min_speedup`` (fail level = 1/min_speedup), ``alpha`` (0.01),
    ``max_candidate_p95_seconds`` (an absolute limit on batch-1 p95; warn at it, fail at 1.5x).
    Evidence per slice: p50/p95/p99/mean/throughput per role, the comparison, the speed-up."""
    type = "latency_p95"
    Params: ClassVar[type[CheckParams]] = LatencyP95Params

    def evaluate(self, data: RunData) -> list[CheckResult]:
        fail = self.fail
        if self.params.get("min_speedup") is not None:
            fail = 1.0 / float(self.params["min_speedup"])
        results = []
        for batch_size, seconds in _timings(data):
            base, cand = seconds.get("baseline"), seconds.get("candidate")
            n = int(min(np.size(base), np.size(cand)))
            cmp = self.compare(base, cand, data)
            evidence = {"batch_size": batch_size, "baseline": timing_summary(base, batch_size),
                        "candidate": timing_summary(cand, batch_size),
                        "speedup": (1.0 / cmp.hl_ratio) if cmp.hl_ratio else None,
                        "min_speedup": self.params.get("min_speedup"),
                        "fingerprint": data.perf.fingerprint.get("id") if data.perf is not None else None,
                        "distributions": {"unit": "ms", "baseline": ms_sketch(base), "candidate": ms_sketch(cand)}}
            results.append(self.verdict(_slice_for(batch_size), cmp, n,
                                        f"candidate/baseline latency at batch {batch_size}", evidence, fail=fail))
        if not results:
            results.append(CheckResult(self.name, OVERALL, "insufficient_data", None, 0, "no latency was measured",
                                       self.warn, fail))
        limit = self.params.get("max_candidate_p95_seconds")
        if limit is not None and results[0].evidence.get("candidate"):
            p95 = results[0].evidence["candidate"].get("p95")
            results.append(self.judge("role=candidate", p95, results[0].n, "candidate p95 latency (s)",
                                      warn=float(limit), fail=float(limit) * 1.5, evidence=results[0].evidence))
        return results


class ServedLatencyCheck(JudgedCheck):
    """Production latency reported by the messages themselves (field ``served_latency_ms`` by
    default, config ``perf.served_latency_field``) in this window vs the earlier accepted windows
    of the pair. Not drift-corrected (there is no control in production traffic), so its default
    levels are wider. ``min_samples`` counts messages carrying the field."""
    type = "latency_served"

    def evaluate(self, data: RunData) -> list[CheckResult]:
        now = np.asarray(data.served_latency if data.served_latency is not None else [], dtype=float)
        past = [np.asarray(h["served"]["sketch"], dtype=float) for h in data.perf_history
                if h.get("served", {}).get("sketch")]
        evidence = {"history_runs": len(past), "candidate": timing_summary(now),
                    "distributions": {"unit": "ms", "history": ms_sketch(np.concatenate(past)) if past else [],
                                      "candidate": ms_sketch(now)}}
        if now.size == 0:
            return [CheckResult(self.name, OVERALL, "insufficient_data", None, 0,
                                "no message in this window carried a served latency", self.warn, self.fail, evidence)]
        if not past:
            return [CheckResult(self.name, OVERALL, "insufficient_data", None, int(now.size),
                                "no earlier window with served latencies to compare with", self.warn, self.fail, evidence)]
        cmp = self.compare(np.concatenate(past), now, data)
        return [self.verdict(OVERALL, cmp, int(now.size), f"served latency vs {len(past)} earlier window(s)", evidence)]

"""Performance checks, judged with :mod:`sentinel.checks.judge` (rank test + Hodges–Lehmann estimate
+ tolerance band + bootstrap CI of the p95/p99 ratio). Levels (``warn``/``fail``) are latency
*ratios*: 1.10 means "10% slower than the reference".

* ``latency_p95`` (:class:`LatencyP95Check`): candidate vs baseline timed interleaved in the same
  run, at batch 1 (slice ``overall``) and at the serving batch size (slice ``batch=N``). The
  compressed model was deployed to be faster; ``params.min_speedup`` (e.g. 1.2) sets the fail
  level to ``1 / min_speedup`` so "the speed-up shrank below the floor" fails.
* ``perf_history`` (:class:`PerfHistoryCheck`): candidate vs its own accepted history on the same
  hardware/software fingerprint: latency at each batch size (drift-corrected by the baseline
  timed in the same run), throughput, and session peak memory.
* ``latency_served`` (:class:`ServedLatencyCheck`): the production latency messages report
  (``served_latency_ms``) vs the earlier accepted windows.

Every result carries its distributions (milliseconds, a quantile sketch) in
``evidence["distributions"]`` for reports.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..perf.accepted import candidate_sha_of, same_context
from ..perf.timing import summarize
from .base import OVERALL, CheckResult, RunData, ThresholdCheck
from .judge import Comparison, compare

EVIDENCE_POINTS = 128   # quantiles per distribution kept in the evidence
_CHECK_LEVEL = object()  # verdict(): use the check's own warn/fail level


def _ms_sketch(seconds: Any, points: int = EVIDENCE_POINTS, scale: float = 1e3) -> list[float]:
    """A sorted quantile sketch of ``seconds`` in milliseconds (``scale=1`` keeps the unit)."""
    v = np.asarray(seconds if seconds is not None else [], dtype=float)
    v = np.sort(v[np.isfinite(v)]) * scale
    if v.size > points:
        v = np.quantile(v, (np.arange(points) + 0.5) / points)
    return [round(float(x), 6) for x in v]


def _summary(v: Any, batch_size: int = 1) -> dict[str, Any]:
    """p50/p95/p99/mean/throughput of per-call seconds, without the (large) sketch."""
    s = summarize(np.asarray(v, dtype=float), batch_size)
    s.pop("sketch", None)
    return s


class _JudgedCheck(ThresholdCheck):
    """Shared judging: a Comparison becomes pass/warn/fail/insufficient_data/error.

    Shared ``params``: ``alpha`` (0.01), ``keep`` (0.2, fastest fraction used by the rank test),
    ``confidence`` (0.99, of the bootstrap CIs), ``bootstrap`` (1000 resamples), ``tail_warn``
    (1.5) and ``tail_fail`` (unset). A bad value raises ValueError naming the parameter."""

    _RANGES = {"alpha": (0.0, 1.0), "keep": (0.0, 1.0), "confidence": (0.0, 1.0), "min_speedup": (0.0, None),
               "tail_warn": (0.0, None), "tail_fail": (0.0, None), "bootstrap": (99.0, None),
               "memory_warn": (0.0, None), "memory_fail": (0.0, None)}

    def __init__(self, spec: Any):
        super().__init__(spec)
        for key, (lo, hi) in self._RANGES.items():
            value = self.params.get(key)
            if value is None:
                continue
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > lo
            if not ok or (hi is not None and value > hi):
                bound = f"a number > {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
                raise ValueError(f"params.{key} must be {bound}, got {value!r}")

    @property
    def alpha(self) -> float:
        return float(self.params.get("alpha", 0.01))

    @property
    def tail_levels(self) -> tuple[float | None, float | None]:
        """(warn, fail) levels for tail growth (p95/p99 CI); wide because tails are where a
        shared machine's noise lives. Default warn 1.5, never fail unless ``tail_fail`` is set."""
        warn, fail = self.params.get("tail_warn", 1.5), self.params.get("tail_fail")
        return (None if warn is None else float(warn)), (None if fail is None else float(fail))

    def compare(self, reference: Any, experiment: Any, data: RunData) -> Comparison:
        return compare(reference, experiment, keep=float(self.params.get("keep", 0.2)), min_n=5,
                       n_boot=int(self.params.get("bootstrap", 1000)),
                       confidence=float(self.params.get("confidence", 0.99)), seed=data.seed)

    def verdict(self, slice_: str, cmp: Comparison, n: int, what: str, evidence: dict[str, Any], *,
                warn: Any = _CHECK_LEVEL, fail: Any = _CHECK_LEVEL, tails: bool = True) -> CheckResult:
        """``warn``/``fail`` default to the check's levels; None means "never". ``tails=False``
        ignores the p95/p99 intervals (tails compared across runs are mostly the host's noise)."""
        warn = self.warn if warn is _CHECK_LEVEL else warn
        fail = self.fail if fail is _CHECK_LEVEL else fail
        evidence = {**evidence, "comparison": cmp.to_dict(), "alpha": self.alpha}
        if n < self.min_samples:
            return CheckResult(self.name, slice_, "insufficient_data", cmp.hl_ratio, n,
                               f"{what}: {n} samples, need {self.min_samples}", warn, fail, evidence)
        if cmp.state == "no_reference":
            return CheckResult(self.name, slice_, "insufficient_data", None, n,
                               f"{what}: the reference has no finite latencies ({cmp.dropped.get('reference', 0)}"
                               " dropped as NaN/non-positive); nothing to compare with", warn, fail, evidence)
        if cmp.state == "no_experiment":
            return CheckResult(self.name, slice_, "error", None, n,
                               f"{what}: the candidate has no finite latencies ({cmp.dropped.get('experiment', 0)}"
                               " dropped as NaN/non-positive)", warn, fail, evidence)
        if cmp.state != "ok":
            return CheckResult(self.name, slice_, "insufficient_data", None, n,
                               f"{what}: too few finite values ({cmp.n_reference} reference, {cmp.n_experiment} candidate)",
                               warn, fail, evidence)
        status, why = "pass", None
        tail_warn, tail_fail = self.tail_levels if tails else (None, None)
        for level_status, level, tail in (("fail", fail, tail_fail), ("warn", warn, tail_warn)):
            why = cmp.exceeds(level, self.alpha) or cmp.tail_exceeds(tail)
            if why:
                status = level_status
                break
        detail = why or (f"typical x{cmp.hl_ratio:.3f}, p95 x{cmp.p95_ratio:.3f} "
                         f"(CI {cmp.p95_ci[0]:.3f}..{cmp.p95_ci[1]:.3f}), p99 x{cmp.p99_ratio:.3f}; within tolerance")
        return CheckResult(self.name, slice_, status, cmp.hl_ratio, n, f"{what}: {detail}", warn, fail, evidence)


def _timings(data: RunData) -> list[tuple[int, dict[str, np.ndarray]]]:
    """(batch size, seconds by role) of this run: the perf measurement, else the plain latencies."""
    if data.perf is not None and data.perf.timings:
        return [(t.batch_size, t.seconds) for t in data.perf.timings]
    if data.latency:
        return [(1, {role: np.asarray(v, dtype=float) for role, v in data.latency.items()})]
    return []


def _slice_for(batch_size: int, prefix: str = "") -> str:
    return f"{prefix}batch={batch_size}" if (prefix or batch_size != 1) else OVERALL


class LatencyP95Check(_JudgedCheck):
    """Candidate vs baseline on the same inputs, timed interleaved in this run. ``value`` is the
    Hodges–Lehmann latency ratio candidate/baseline (< 1: the candidate is faster; its inverse is
    the speed-up). ``params``: ``min_speedup`` (fail level = 1/min_speedup), ``alpha`` (0.01),
    ``max_candidate_p95_seconds`` (an absolute limit on batch-1 p95; warn at it, fail at 1.5x).
    Evidence per slice: p50/p95/p99/mean/throughput per role, the comparison, the speed-up."""
    type = "latency_p95"

    def evaluate(self, data: RunData) -> list[CheckResult]:
        fail = self.fail
        if self.params.get("min_speedup") is not None:
            fail = 1.0 / float(self.params["min_speedup"])
        results = []
        for batch_size, seconds in _timings(data):
            base, cand = seconds.get("baseline"), seconds.get("candidate")
            n = int(min(np.size(base), np.size(cand)))
            cmp = self.compare(base, cand, data)
            evidence = {"batch_size": batch_size, "baseline": _summary(base, batch_size),
                        "candidate": _summary(cand, batch_size),
                        "speedup": (1.0 / cmp.hl_ratio) if cmp.hl_ratio else None,
                        "min_speedup": self.params.get("min_speedup"),
                        "fingerprint": data.perf.fingerprint.get("id") if data.perf is not None else None,
                        "distributions": {"unit": "ms", "baseline": _ms_sketch(base), "candidate": _ms_sketch(cand)}}
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


#: Quantile of the same-run baseline that latencies are divided by (drift correction). A low
#: quantile: the baseline's undisturbed speed, stable to ~1% run to run on a shared machine.
CONTROL_QUANTILE = 0.10


def _control(seconds: Any) -> float:
    v = np.asarray(seconds if seconds is not None else [], dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.quantile(v, CONTROL_QUANTILE)) if v.size else float("nan")


def _normalized(timing: dict[str, Any]) -> np.ndarray | None:
    """A stored timing's candidate sketch divided by the same run's baseline control quantile."""
    roles = timing.get("roles", {})
    cand, base = roles.get("candidate", {}), roles.get("baseline", {})
    ref = _control(base.get("sketch"))
    if not cand.get("sketch") or not np.isfinite(ref):
        return None
    return np.asarray(cand["sketch"], dtype=float) / ref


class PerfHistoryCheck(_JudgedCheck):
    """Candidate vs its own accepted history, only on the same fingerprint (CPU, cores, execution
    providers, threads, runtime versions) and the same baseline file.

    What the latency slices (``latency batch=N``) judge depends on what the run could time
    (``perf.reference``, from :func:`sentinel.perf.accepted.choose_reference`):

    * a new candidate file, and the accepted one at hand: both were **timed interleaved in this
      run** (role ``accepted``), so machine drift cancels; judged with ``warn``/``fail``. Value:
      Hodges–Lehmann latency ratio new/accepted; evidence also p95/p99 ratios with bootstrap CIs
      and the throughput ratio.
    * the same candidate file as the accepted run: nothing about the candidate changed, so the
      only question is whether the host did. This run's candidate latency, divided by the p10 of
      the baseline timed with it, is compared with the accepted history divided the same way.
      Two runtimes' relative speed wanders ±10% on a shared machine, so this only warns past
      ``params.environment_warn`` (1.5) and fails past ``params.environment_fail`` (unset).
    * otherwise ``insufficient_data`` naming why (no history on this fingerprint yet, or the
      accepted file was neither kept nor left in place).

    Only accepted runs of the reference candidate file count as its history.
    Slice ``memory``: candidate session peak RSS vs the history median (``params.memory_warn`` /
    ``memory_fail``, default 1.10/1.25). ``min_samples`` counts timed calls in this run."""
    type = "perf_history"
    _RANGES = {**_JudgedCheck._RANGES, "environment_warn": (0.0, None), "environment_fail": (0.0, None)}

    def evaluate(self, data: RunData) -> list[CheckResult]:
        perf = data.perf
        if perf is None:
            return [CheckResult(self.name, OVERALL, "insufficient_data", None, 0,
                                "no performance measurement in this run (perf.enabled is false?)", self.warn, self.fail)]
        fp, control = perf.fingerprint.get("id"), perf.control
        reference = dict(perf.reference or {})
        history = [h for h in data.perf_history if same_context(h, fp, control)]
        skipped = len(data.perf_history) - len(history)
        # the reference candidate's own runs (records written before models were stored: all)
        history = [h for h in history if candidate_sha_of(h) in (None, reference.get("sha256"))] \
            if reference.get("sha256") else history
        context = {"kind": "perf_history", "fingerprint": fp, "history_runs": len(history),
                   "history_skipped_other_fingerprint": skipped, "reference": reference}
        results = []
        for t in perf.timings:
            base, cand = t.seconds.get("baseline"), t.seconds.get("candidate")
            slice_ = f"latency batch={t.batch_size}"
            n = int(np.size(cand))
            evidence = {**context, "batch_size": t.batch_size, "candidate": _summary(cand, t.batch_size)}
            if "accepted" in t.seconds:
                results.append(self._versus_accepted(slice_, t.batch_size, t.seconds["accepted"], cand, n,
                                                     reference, evidence, data))
                continue
            ref = _control(base)
            current = np.asarray(cand, dtype=float) / ref if np.isfinite(ref) else np.asarray([])
            past = [v for h in history for tm in h.get("timings", []) if tm.get("batch_size") == t.batch_size
                    and (v := _normalized(tm)) is not None]
            evidence["distributions"] = {"unit": "candidate latency / same-run baseline p10",
                                         "history": _ms_sketch(np.concatenate(past), scale=1) if past else [],
                                         "candidate": _ms_sketch(current, scale=1)}
            if not past:
                results.append(CheckResult(self.name, slice_, "insufficient_data", None, n,
                                           f"no accepted history on fingerprint {fp} yet"
                                           + (f" ({skipped} run(s) on other fingerprints ignored)" if skipped else ""),
                                           self.warn, self.fail, evidence))
                continue
            cmp = self.compare(np.concatenate(past), current, data)
            if cmp.hl_ratio:
                evidence["throughput_ratio"] = 1.0 / cmp.hl_ratio
            if reference.get("kind") == "identical":
                run = reference.get("run_id")
                what = (f"same candidate file as accepted run #{run} ({str(reference.get('sha256'))[:12]}); "
                        f"host drift at batch {t.batch_size} vs {len(past)} accepted run(s), baseline-normalised")
                env_fail = self.params.get("environment_fail")
                results.append(self.verdict(slice_, cmp, n, what, evidence, tails=False,
                                            warn=float(self.params.get("environment_warn", 1.5)),
                                            fail=None if env_fail is None else float(env_fail)))
                continue
            why = reference.get("reason") or "no accepted candidate to time alongside"
            results.append(CheckResult(
                self.name, slice_, "insufficient_data", cmp.hl_ratio, n,
                f"new candidate file, but the accepted one ({str(reference.get('sha256'))[:12]}, run "
                f"#{reference.get('run_id')}) cannot be timed alongside: {why}; vs stored history x{cmp.hl_ratio:.3f} "
                "(not judged: too drift-prone)", self.warn, self.fail, {**evidence, "comparison": cmp.to_dict()}))
        results.append(self._memory(perf, history, context))
        return results

    def _versus_accepted(self, slice_: str, batch_size: int, accepted: Any, cand: Any, n: int,
                         reference: dict[str, Any], evidence: dict[str, Any], data: RunData) -> CheckResult:
        cmp = self.compare(accepted, cand, data)
        evidence = {**evidence, "accepted": _summary(accepted, batch_size),
                    "distributions": {"unit": "ms", "accepted": _ms_sketch(accepted), "candidate": _ms_sketch(cand)}}
        if cmp.hl_ratio:
            evidence["throughput_ratio"] = 1.0 / cmp.hl_ratio
        what = (f"candidate latency at batch {batch_size} vs the accepted candidate "
                f"{str(reference.get('sha256'))[:12]} (run #{reference.get('run_id')}), timed interleaved")
        return self.verdict(slice_, cmp, n, what, evidence)

    def _memory(self, perf: Any, history: list[dict[str, Any]], context: dict[str, Any]) -> CheckResult:
        warn = float(self.params.get("memory_warn", 1.10))
        fail = float(self.params.get("memory_fail", 1.25))
        now = perf.memory.get("candidate", {}).get("peak_rss_delta_bytes")
        past = [m for h in history if (m := h.get("memory", {}).get("candidate", {}).get("peak_rss_delta_bytes"))]
        evidence = {**context, "candidate_peak_bytes": now, "history_peak_bytes": past,
                    "model_bytes": perf.model_bytes}
        if now is None:
            why = perf.memory.get("candidate", {}).get("error", "memory was not measured (perf.memory is false)")
            return CheckResult(self.name, "memory", "insufficient_data", None, 0, why, warn, fail, evidence)
        if not past:
            return CheckResult(self.name, "memory", "insufficient_data", None, 1,
                               f"candidate session peak {now / 2**20:.1f} MiB; no accepted history on this fingerprint yet",
                               warn, fail, evidence)
        ratio = now / float(np.median(past))
        return self.judge("memory", ratio, len(past), "candidate session peak memory vs history median",
                          warn=warn, fail=fail, evidence=evidence, min_samples=1)


class ServedLatencyCheck(_JudgedCheck):
    """Production latency reported by the messages themselves (field ``served_latency_ms`` by
    default, config ``perf.served_latency_field``) in this window vs the earlier accepted windows
    of the pair. Not drift-corrected (there is no control in production traffic), so its default
    levels are wider. ``min_samples`` counts messages carrying the field."""
    type = "latency_served"

    def evaluate(self, data: RunData) -> list[CheckResult]:
        now = np.asarray(data.served_latency if data.served_latency is not None else [], dtype=float)
        past = [np.asarray(h["served"]["sketch"], dtype=float) for h in data.perf_history
                if h.get("served", {}).get("sketch")]
        evidence = {"history_runs": len(past), "candidate": _summary(now),
                    "distributions": {"unit": "ms", "history": _ms_sketch(np.concatenate(past)) if past else [],
                                      "candidate": _ms_sketch(now)}}
        if now.size == 0:
            return [CheckResult(self.name, OVERALL, "insufficient_data", None, 0,
                                "no message in this window carried a served latency", self.warn, self.fail, evidence)]
        if not past:
            return [CheckResult(self.name, OVERALL, "insufficient_data", None, int(now.size),
                                "no earlier window with served latencies to compare with", self.warn, self.fail, evidence)]
        cmp = self.compare(np.concatenate(past), now, data)
        return [self.verdict(OVERALL, cmp, int(now.size), f"served latency vs {len(past)} earlier window(s)", evidence)]

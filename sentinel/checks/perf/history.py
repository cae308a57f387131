"""``perf_history``: the candidate vs its own accepted history, on the same fingerprint."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ...perf.accepted import candidate_sha_of, same_context
from ..data import OVERALL, RunData
from ..params import CheckParams
from ..result import CheckResult
from .judged import JudgedCheck, JudgedParams, ms_sketch, timing_summary


class PerfHistoryParams(JudgedParams):
    """``environment_warn`` (1.5) / ``environment_fail`` (unset): host drift of an unchanged
    candidate; ``memory_warn`` / ``memory_fail`` (1.10 / 1.25): session peak memory ratio."""
    RANGES: ClassVar[dict[str, tuple[float, float | None]]] = {
        **JudgedParams.RANGES, "environment_warn": (0.0, None), "environment_fail": (0.0, None),
        "memory_warn": (0.0, None), "memory_fail": (0.0, None)}
    environment_warn: float = 1.5
    environment_fail: float | None = None
    memory_warn: float = 1.10
    memory_fail: float = 1.25


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


class PerfHistoryCheck(JudgedCheck):
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
    Params: ClassVar[type[CheckParams]] = PerfHistoryParams

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
            evidence = {**context, "batch_size": t.batch_size, "candidate": timing_summary(cand, t.batch_size)}
            if "accepted" in t.seconds:
                results.append(self._versus_accepted(slice_, t.batch_size, t.seconds["accepted"], cand, n,
                                                     reference, evidence, data))
                continue
            ref = _control(base)
            current = np.asarray(cand, dtype=float) / ref if np.isfinite(ref) else np.asarray([])
            past = [v for h in history for tm in h.get("timings", []) if tm.get("batch_size") == t.batch_size
                    and (v := _normalized(tm)) is not None]
            evidence["distributions"] = {"unit": "candidate latency / same-run baseline p10",
                                         "history": ms_sketch(np.concatenate(past), scale=1) if past else [],
                                         "candidate": ms_sketch(current, scale=1)}
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
        evidence = {**evidence, "accepted": timing_summary(accepted, batch_size),
                    "distributions": {"unit": "ms", "accepted": ms_sketch(accepted), "candidate": ms_sketch(cand)}}
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



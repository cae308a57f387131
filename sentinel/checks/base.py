"""The check contract: a named, configured test that turns a run's paired outputs into results,
one per slice, each with a status ``pass | warn | fail | insufficient_data | error``.

Writing a check
---------------
A check is a class chosen by name in config through :data:`CHECKS` (a short name to an import
string; any other ``module:Class`` is imported as is, see :mod:`sentinel.registry`). It follows
:class:`Check`:

* **Constructor** ``Check(spec)``: ``spec`` is a :class:`sentinel.config.CheckSpec` (``type``,
  ``name``, ``warn``, ``fail``, ``min_samples``, ``params``). It validates everything it is
  given and raises :class:`CheckParamError` (or ``ValueError``) for bad params: checks are built
  when the config and suites load (``sentinel validate`` too), so a mistake stops the start, with
  the file and key, instead of the first run.
* **Params**: one pydantic model per check type, the class attribute ``Params`` (a subclass of
  :class:`CheckParams`, which rejects unknown keys with a did-you-mean hint). The built-in bases
  do the validation: :class:`sentinel.checks.threshold.ThresholdCheck` (``self.params`` is the
  validated dict, defaults filled in) and :class:`sentinel.checks.statistical.StatisticalCheck`
  (adds ``false_alarm_rate``, ``family`` and ``slice_by``, which a suite's ``defaults`` fill in).
* **evaluate(data)** takes a :class:`RunData` (both models' outputs on the same rows, labels,
  attributes, the reference window, latencies, a ``predict`` function for rows the check makes
  up) and returns a list of :class:`CheckResult`, one per slice (``overall``, ``region=eu``,
  ``class=malignant``...). It must not raise for bad data: fewer than ``min_samples`` rows is an
  ``insufficient_data`` result saying so, what cannot be computed an ``error`` result (an
  exception is still caught by :func:`evaluate_check` and becomes an ``error`` result). A
  ``pass``/``warn``/``fail`` result carries its ``decision``: the test that set the status, from
  which every sentence about it is rendered (:mod:`sentinel.verdict`). ``value`` is the headline
  number of the slice, ``warn``/``fail`` the check's levels; a result gets the check's ``type``
  from :func:`evaluate_check` when the check leaves it empty.

Evidence keys read elsewhere
----------------------------
``evidence`` is free-form JSON for the report, but these keys have readers:

* ``critical`` (bool, also the ``critical`` field): incident severity ``critical``;
* ``tests`` (list of ``{name, p_value, p_adjusted, effect, warn, fail, status}``): the report's
  ``p_adj`` column; ``false_alarm_rate`` the Evidently section's thresholds;
* ``decision`` and ``check_type``: written by :meth:`CheckResult.to_row` from the result;
* ``flip_matrix`` + ``classes``, ``reliability`` + ``ece`` + ``brier``, ``top_probability`` +
  ``margin`` + ``hist_edges``: the report's flip matrix, reliability curves and confidence
  histograms;
* ``column`` + ``method``: the drift columns Evidently's own report shows;
* ``baseline``/``candidate`` (``{p50, p95, p99, n}`` in seconds) with ``batch_size``: the
  latency table and the ``sentinel_inference_latency_seconds`` gauges (type ``latency_p95``,
  slice ``overall``, batch 1); ``distributions`` (``unit: ms`` sketches) and ``comparison``
  (:class:`sentinel.checks.perf.judge.Comparison` as a dict): the performance section;
* ``kind: perf_history`` with status warn/fail keeps a run's timing out of the accepted history.
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar, Protocol

from ..registry import resolve
from ..verdict import Decision
from .data import OVERALL, ReferenceData, RunData, slice_rows, slices
from .params import CheckParamError, CheckParams
from .result import SEVERITY_ORDER, STATUSES, CheckResult, worst

# The protocol's vocabulary, importable from here
__all__ = ["CHECKS", "OVERALL", "SEVERITY_ORDER", "STATUSES", "Check", "CheckParamError", "CheckParams",
           "CheckResult", "Decision", "ReferenceData", "RunData", "build_check", "evaluate_check", "slice_rows",
           "slices", "worst"]

log = logging.getLogger("sentinel.checks")

#: Built-in checks by type. Values are ``module:Class`` import strings so that choosing a check
#: does not import every check's dependencies (``drift`` imports Evidently when it runs).
CHECKS: dict[str, str] = {
    "decision_flips": "sentinel.checks.safety:DecisionFlipCheck",
    "critical_recall": "sentinel.checks.safety:CriticalRecallCheck",
    "calibration": "sentinel.checks.calibration:CalibrationCheck",
    "confidence": "sentinel.checks.calibration:ConfidenceCheck",
    "fairness": "sentinel.checks.fairness:FairnessCheck",
    "robustness": "sentinel.checks.robustness:RobustnessCheck",
    "data_drift": "sentinel.checks.drift:DataDriftCheck",
    "embedding_drift": "sentinel.checks.embedding:EmbeddingDriftCheck",
    "prediction_drift": "sentinel.checks.drift:PredictionDriftCheck",
    "scenario": "sentinel.checks.scenarios:ScenarioCheck",
    "latency_p95": "sentinel.checks.perf:LatencyP95Check",
    "perf_history": "sentinel.checks.perf:PerfHistoryCheck",
    "latency_served": "sentinel.checks.perf:ServedLatencyCheck",
}


class Check(Protocol):
    """One configured check (see the module docstring for the whole contract).

    ``type`` is the key it is registered under in :data:`CHECKS` (results carry it, so a renamed
    check keeps its gauges and report sections); ``name`` is ``spec.name`` or the type, unique
    per pair (incident fingerprints use it); ``Params`` validates ``spec.params``."""
    type: ClassVar[str]
    name: str
    Params: ClassVar[type[CheckParams]]

    def __init__(self, spec: Any) -> None:
        """Build from a ``CheckSpec``; raise CheckParamError (or ValueError) for bad params."""

    def evaluate(self, data: RunData) -> list[CheckResult]:
        """One result per slice; never raises for bad data (``insufficient_data``/``error``)."""


def build_check(spec: Any) -> Check:
    """The check ``spec.type`` names, built from ``spec``; raises PluginError for an unknown type
    and CheckParamError / ValueError for bad params."""
    cls = resolve("check", spec.type, CHECKS)
    return cls(spec)


def evaluate_check(check: Check, data: RunData) -> list[CheckResult]:
    """``check.evaluate(data)`` with its results stamped with the check's type; an exception (a
    bug, never bad data) becomes one ``error`` result instead of stopping the run."""
    try:
        results = list(check.evaluate(data))
    except Exception as exc:
        log.exception("check failed", extra={"pair": data.pair, "check": check.name})
        results = [CheckResult(check.name, OVERALL, "error", None, data.n, f"{type(exc).__name__}: {exc}")]
    kind = getattr(check, "type", "") or ""
    for r in results:
        r.type = r.type or kind
    return results

"""Performance checks and the judge they share. Levels (``warn``/``fail``) are latency *ratios*:
1.10 means "10% slower than the reference".

* ``judge.py``: the Kayenta-style comparison of two timing samples (rank test + Hodges–Lehmann
  estimate + tolerance band + bootstrap CI of the p95/p99 ratio);
* ``judged.py``: :class:`JudgedCheck`, turning a comparison into a result (and its decision);
* ``latency.py``: ``latency_p95`` (candidate vs baseline timed interleaved in the same run) and
  ``latency_served`` (the production latency messages report vs earlier accepted windows);
* ``history.py``: ``perf_history`` (candidate vs its own accepted history on the same
  hardware/software fingerprint: latency per batch size, session peak memory).

Measuring is :mod:`sentinel.perf`'s job (timing sessions, memory probes, fingerprints); this
package only judges what was measured. Every result carries its distributions (milliseconds, a
quantile sketch) in ``evidence["distributions"]`` for reports.
"""
from __future__ import annotations

from .history import PerfHistoryCheck
from .latency import LatencyP95Check, ServedLatencyCheck

#: check types whose results are timings: not reproducible by nature (``sentinel replay`` skips
#: them), and shown in the report's latency section
TIMING_TYPES = frozenset({"latency_p95", "latency_served", "perf_history"})
#: the same-run timing whose batch-1 ``overall`` result feeds the latency gauges
GAUGE_TYPE = "latency_p95"

__all__ = ["GAUGE_TYPE", "TIMING_TYPES", "LatencyP95Check", "PerfHistoryCheck", "ServedLatencyCheck"]

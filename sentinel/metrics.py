"""Prometheus metrics (names are a public contract: DESIGN.md, deploy/grafana). The registry is
passed in so tests use a fresh one instead of the process-global default."""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .words import check_label

# sentinel_check_status values, a dashboard contract (the gauge's help text is made from it);
# a status not listed is shown as error
STATUS_VALUES = {"pass": 0, "insufficient_data": 1, "warn": 2, "error": 3, "fail": 4}
LATENCY_QUANTILES = ("p50", "p95", "p99")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages_consumed = Counter("sentinel_messages_consumed_total", "Kafka records read (traffic and labels)",
                                         registry=r)
        self.messages_decoded = Counter(
            "sentinel_messages_decoded_total",
            "Records decoded and checked (traffic the sampling decision and the windows' bars kept, and labels); "
            "the rest were counted and left undecoded", registry=r)
        self.messages_quarantined = Counter("sentinel_messages_quarantined_total",
                                            "Messages quarantined, by reason", ["reason"], registry=r)
        self.samples_stored = Counter("sentinel_samples_stored_total", "Samples written to the store", registry=r)
        self.consumer_lag = Gauge("sentinel_consumer_lag", "Records behind the high watermark (sum over partitions)",
                                  registry=r)
        self.runs = Counter("sentinel_runs_total", "Revalidation runs by outcome", ["pair", "status"], registry=r)
        self.run_duration = Histogram("sentinel_run_duration_seconds", "Revalidation run duration",
                                      buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600), registry=r)
        self.check_value = Gauge("sentinel_check_value", "Latest value of a check", ["pair", "check", "slice"],
                                 registry=r)
        self.check_status = Gauge("sentinel_check_status", "Latest check status: " + ", ".join(
                                  f"{v} {k}" for k, v in STATUS_VALUES.items()), ["pair", "check", "slice"], registry=r)
        self.inference_latency = Gauge("sentinel_inference_latency_seconds",
                                       "Latency per call measured in the latest run", ["pair", "role", "quantile"],
                                       registry=r)
        self.incidents_open = Gauge("sentinel_incidents_open", "Open or acknowledged incidents",
                                    ["pair", "severity"], registry=r)
        self.incidents = Gauge("sentinel_incidents", "Unresolved incidents by state (open, acknowledged, silenced)",
                               ["pair", "severity", "state"], registry=r)
        self.last_run = Gauge("sentinel_last_run_timestamp_seconds", "When the pair's latest revalidation ended "
                              "(Unix time)", ["pair"], registry=r)
        # readiness (sentinel/health.py computes these at scrape time)
        self.ingest_stalled = Gauge("sentinel_ingest_stalled",
                                    "1 while ingest has stored nothing for health.stall_seconds with records waiting",
                                    registry=r)
        self.ready = Gauge("sentinel_ready", "1 when this part of the daemon is ready (as /readyz sees it), else 0",
                           ["part"], registry=r)
        self.notifications = Counter("sentinel_notifications_total", "Notification attempts by outcome",
                                     ["target", "outcome"], registry=r)

    def observe_run(self, pair: str, status: str, results: Sequence[Any] = (), seconds: float | None = None, *,
                    latency_type: str | None = None) -> None:
        """One revalidation of ``pair`` ended with ``status``: count it, observe its duration
        (``seconds``, None: not observed, e.g. a run that errored) and set each result's
        ``sentinel_check_value`` / ``sentinel_check_status``. The latency gauges come from the
        result of check type ``latency_type`` on the overall slice measured at batch 1 (found
        by type, not name, so a renamed check keeps its gauges; the caller names the type:
        metrics sit beside the flow and import none of it)."""
        self.runs.labels(pair, status).inc()
        self.last_run.labels(pair).set(time.time())
        if seconds is not None:
            self.run_duration.observe(seconds)
        for r in results:
            check = check_label(r.check, getattr(r, "candidate", None))   # CANDIDATE:CHECK for several
            if r.value is not None:
                self.check_value.labels(pair, check, r.slice).set(r.value)
            self.check_status.labels(pair, check, r.slice).set(STATUS_VALUES.get(r.status, STATUS_VALUES["error"]))
            if (latency_type is not None and r.type == latency_type and r.slice == "overall"
                    and r.evidence.get("batch_size") == 1):
                for role in ("baseline", "candidate"):
                    label = f"candidate:{r.candidate}" if role == "candidate" and getattr(r, "candidate", None) else role
                    for q in LATENCY_QUANTILES:
                        v = r.evidence.get(role, {}).get(q)
                        if v is not None:
                            self.inference_latency.labels(pair, label, q).set(v)

    def set_incidents(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        """Unresolved incidents by (pair, severity, state): ``sentinel_incidents`` per state and
        ``sentinel_incidents_open`` (open + acknowledged, its meaning since it was named)."""
        self.incidents.clear()
        self.incidents_open.clear()
        active: dict[tuple[str, str], int] = {}
        for (pair, severity, state), n in counts.items():
            self.incidents.labels(pair, severity, state).set(n)
            if state in ("open", "acknowledged"):
                active[(pair, severity)] = active.get((pair, severity), 0) + n
        for (pair, severity), n in active.items():
            self.incidents_open.labels(pair, severity).set(n)

    def restore(self, state: Mapping[str, Any]) -> None:
        """What the store says the metrics were (``storage.summaries.metrics_state``), set at start
        so a restarted daemon does not show a green 0 beside an open critical incident until its
        next run: incidents by state, each pair/check/slice's latest status and value, the run
        counters (every stored run, by outcome) and each pair's last run time."""
        self.set_incidents(state.get("incidents") or {})
        for (pair, status), n in (state.get("runs") or {}).items():
            self.runs.labels(pair, status).inc(n)
        for pair, at in (state.get("last_run") or {}).items():
            if at is not None:
                self.last_run.labels(pair).set(at.timestamp())
        for pair, check, slice_, status, value in state.get("checks") or []:
            if value is not None:
                self.check_value.labels(pair, check, slice_).set(value)
            self.check_status.labels(pair, check, slice_).set(STATUS_VALUES.get(status, STATUS_VALUES["error"]))

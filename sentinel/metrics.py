"""Prometheus metrics (names are a public contract: DESIGN.md, deploy/grafana). The registry is
passed in so tests use a fresh one instead of the process-global default."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages_consumed = Counter("sentinel_messages_consumed_total", "Kafka records read (traffic and labels)",
                                         registry=r)
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
        self.check_status = Gauge("sentinel_check_status",
                                  "Latest check status: 0 pass, 1 insufficient_data, 2 warn, 3 error, 4 fail",
                                  ["pair", "check", "slice"], registry=r)
        self.inference_latency = Gauge("sentinel_inference_latency_seconds",
                                       "Latency per call measured in the latest run", ["pair", "role", "quantile"],
                                       registry=r)
        self.incidents_open = Gauge("sentinel_incidents_open", "Open or acknowledged incidents",
                                    ["pair", "severity"], registry=r)
        # readiness (sentinel/health.py computes these at scrape time)
        self.ingest_stalled = Gauge("sentinel_ingest_stalled",
                                    "1 while ingest has stored nothing for health.stall_seconds with records waiting",
                                    registry=r)
        self.ready = Gauge("sentinel_ready", "1 when this part of the daemon is ready (as /readyz sees it), else 0",
                           ["part"], registry=r)
        self.notifications = Counter("sentinel_notifications_total", "Notification attempts by outcome",
                                     ["target", "outcome"], registry=r)

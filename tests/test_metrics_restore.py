"""A restarted daemon's /metrics says what the store says before its first run: open and
acknowledged incidents by pair and severity, each pair/check/slice's last status and value, the
run counters and the last run time (so "Open incidents" is not a green 0 beside an open critical
incident, and SentinelNoRecentRuns can fire)."""
import json
import time
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from sentinel.app import build
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.examples.traffic import ordinary_traffic
from sentinel.metrics import STATUS_VALUES

from pairs import example_config, traffic_lines

CHECKS = [{"type": "decision_flips", "warn": 0.02, "fail": 0.05, "min_samples": 10}]


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def started(cfg):
    d = Daemon(build(cfg, load_models=False), install_signals=False, serve_api=True)
    d.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:      # the API thread binds before start returns; wait for it to answer
        try:
            scrape(d.api_port)
            return d
        except OSError:
            time.sleep(0.1)
    return d


def test_a_restarted_daemon_publishes_incidents_statuses_counters_and_last_run_from_the_store(tmp_path):
    x, _ = ordinary_traffic(np.random.default_rng(7), 300)
    (tmp_path / "traffic.jsonl").write_text("\n".join(json.dumps(m) for m in traffic_lines(x)) + "\n")
    cfg = load_config(example_config(tmp_path, candidate="damaged.int8.onnx", checks=CHECKS, perf={"enabled": False},
                                     ingest={"source": "file", "file": "traffic.jsonl"},
                                     api={"enabled": True, "listen": "127.0.0.1:0"}))
    first = started(cfg)
    try:
        while first.store.count("samples") < 300:
            first.ingest_once()
        outcome = first.revalidate("triage")
        assert outcome.status == "fail" and outcome.incidents, outcome
        flips = next(r for r in outcome.results if r.slice == "overall")
        severity = outcome.incidents[0].severity
        iid = outcome.incidents[0].incident_id
        first.incidents.ack(iid, "alice")
        first._refresh_incident_gauge()
        before = scrape(first.api_port)
    finally:
        first.shutdown()

    second = started(cfg)     # a new process's metrics: a fresh registry, nothing observed yet
    try:
        after = scrape(second.api_port)
    finally:
        second.shutdown()
    key = lambda name, **labels: (name, tuple(sorted(labels.items())))
    assert after[key("sentinel_incidents_open", pair="triage", severity=severity)] == 1
    assert after[key("sentinel_incidents", pair="triage", severity=severity, state="acknowledged")] == 1
    assert key("sentinel_incidents", pair="triage", severity=severity, state="open") not in after
    assert after[key("sentinel_runs_total", pair="triage", status="fail")] == 1
    assert after[key("sentinel_check_status", pair="triage", check="decision_flips", slice="overall")] == \
        STATUS_VALUES["fail"]
    assert after[key("sentinel_check_value", pair="triage", check="decision_flips", slice="overall")] == \
        flips.value
    last = after[key("sentinel_last_run_timestamp_seconds", pair="triage")]
    assert 0 < time.time() - last < 600
    # what the first daemon showed for these is what the second one shows before any run
    for k in (key("sentinel_incidents_open", pair="triage", severity=severity),
              key("sentinel_runs_total", pair="triage", status="fail"),
              key("sentinel_check_status", pair="triage", check="decision_flips", slice="overall")):
        assert after[k] == before[k], k

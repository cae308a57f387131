"""The daemon's HTTP API on a live daemon (real broker, real store, real HTTP)."""
import json
import time

import httpx
import numpy as np
import pytest

from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.examples.traffic import ordinary_traffic
from sentinel.sources.kafka import make_producer

from pairs import example_config, traffic_lines

TOKEN = "t0k3n-for-tests"


@pytest.fixture
def live(tmp_path, broker, topic, monkeypatch):
    monkeypatch.setenv("SENTINEL_API_TOKEN", TOKEN)
    x, _ = ordinary_traffic(np.random.default_rng(5), 300)
    p = make_producer([broker.bootstrap])
    for m in traffic_lines(x, prefix="api-"):
        p.send(topic, value=json.dumps(m).encode())
    p.send(topic, value=b"garbage")
    p.flush()
    p.close()
    cfg = load_config(example_config(tmp_path, candidate="damaged.int8.onnx", bootstrap=broker.bootstrap, topic=topic,
                                     api={"enabled": True, "listen": "127.0.0.1:0"}))
    d = Daemon(cfg, install_signals=False)
    d.start()
    deadline = time.monotonic() + 60
    while d.store.pending_count("triage") < 300 and time.monotonic() < deadline:
        d.ingest_once()
    client = httpx.Client(base_url=f"http://127.0.0.1:{d.api_port}", timeout=30)
    for _ in range(50):   # uvicorn binds in its own thread
        try:
            client.get("/healthz")
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield d, client
    client.close()
    d.shutdown()


def test_health_metrics_runs_and_incidents_over_http(live):
    d, c = live
    assert c.get("/healthz").json()["status"] == "ok"
    ready = c.get("/readyz")
    assert ready.status_code == 200, ready.text
    metrics = c.get("/metrics").text
    for name in ("sentinel_messages_consumed_total", "sentinel_messages_quarantined_total",
                 "sentinel_samples_stored_total", "sentinel_consumer_lag"):
        assert name in metrics
    assert 'sentinel_messages_quarantined_total{reason="invalid_json"} 1.0' in metrics

    pairs = c.get("/api/v1/pairs").json()["pairs"]
    assert pairs[0]["name"] == "triage" and pairs[0]["pending_samples"] == 300

    no_token = c.post("/api/v1/runs")
    assert no_token.status_code == 401 and no_token.json()["error"]["code"] == "unauthorized"
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Sentinel-Actor": "alice"}
    made = c.post("/api/v1/runs", headers=auth)
    assert made.status_code == 201, made.text
    run_id = made.json()["runs"][0]["run_id"]
    assert made.json()["runs"][0]["status"] == "fail"

    run = c.get(f"/api/v1/runs/{run_id}").json()
    assert run["n_samples"] == 300 and run["record"]["models"]["candidate"]["sha256"]
    report = c.get(f"/api/v1/runs/{run_id}/report").text
    assert "decision_flips" in report
    # latency distributions went through Evidently and are embedded in the run's one-file report
    assert "latency ms: latency_p95 overall" in report and "<iframe" in report
    assert 'sentinel_check_status{check="decision_flips",pair="triage",slice="overall"} 4.0' in c.get("/metrics").text

    incidents = c.get("/api/v1/incidents", params={"state": "open"}).json()["incidents"]
    assert len(incidents) >= 1
    iid = incidents[0]["id"]
    assert c.post(f"/api/v1/incidents/{iid}/ack").status_code == 401
    acked = c.post(f"/api/v1/incidents/{iid}/ack", headers=auth).json()
    assert acked["state"] == "acknowledged" and acked["events"][-1]["actor"] == "alice"
    again = c.post(f"/api/v1/incidents/{iid}/ack", headers=auth)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert c.get("/api/v1/incidents/999999").status_code == 404
    assert c.get("/api/v1/runs/999999").json()["error"]["code"] == "not_found"

    # accepting a run's performance on purpose: token, a reason, and the run must exist
    assert c.post(f"/api/v1/runs/{run_id}/accept", json={"reason": "x"}).status_code == 401
    bad = c.post(f"/api/v1/runs/{run_id}/accept", headers=auth, json={"why": "x"})
    assert bad.status_code == 400 and "reason" in bad.json()["error"]["message"]
    assert c.post("/api/v1/runs/999999/accept", headers=auth, json={"reason": "x"}).status_code == 404
    ok = c.post(f"/api/v1/runs/{run_id}/accept", headers=auth, json={"reason": "signed off"})
    assert ok.status_code == 200, ok.text
    kept = ok.json()["kept"]
    assert ok.json()["pair"] == "triage" and kept.endswith(run["record"]["models"]["candidate"]["sha256"] + ".onnx")
    assert d.store.get_run(run_id)["record"]["perf"]["accepted"] is True

"""Run and incident annotations pushed with grafana-client when ``grafana.url`` is set, checked
against a real HTTP server that records what grafana-client sends (no Grafana here); a Grafana
that refuses or is unreachable never stops a run."""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from sentinel.app import build
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.examples.traffic import ordinary_traffic
from sentinel.grafana import GrafanaAnnotator

from pairs import example_config, traffic_lines

TOKEN = "glsa_annotations_test"


class Recorder(BaseHTTPRequestHandler):
    status = 200
    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        self.requests.append((self.path, dict(self.headers), body))
        data = json.dumps({"id": len(self.requests), "message": "Annotation added"} if self.status == 200
                          else {"message": "boom"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def grafana():
    Recorder.requests, Recorder.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Recorder
    server.shutdown()
    server.server_close()


def run_daemon(tmp_path, monkeypatch, url):
    tmp_path.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    x, _ = ordinary_traffic(np.random.default_rng(8), 200)
    (tmp_path / "traffic.jsonl").write_text("\n".join(json.dumps(m) for m in traffic_lines(x)) + "\n")
    cfg = load_config(example_config(
        tmp_path, candidate="damaged.int8.onnx", perf={"enabled": False},
        checks=[{"type": "decision_flips", "warn": 0.02, "fail": 0.05, "min_samples": 10}],
        ingest={"source": "file", "file": "traffic.jsonl"}, grafana={"url": url, "timeout_seconds": 2}))
    d = Daemon(build(cfg, load_models=False), install_signals=False, serve_api=False)
    d.start()
    try:
        while d.store.count("samples") < 200:
            d.ingest_once()
        return d.revalidate("triage")
    finally:
        d.shutdown()


def test_the_daemon_annotates_each_run_and_the_incident_it_opened(tmp_path, monkeypatch, grafana):
    url, rec = grafana
    outcome = run_daemon(tmp_path, monkeypatch, url)
    assert outcome.status == "fail" and outcome.incidents
    assert [path for path, _, _ in rec.requests] == ["/api/annotations"] * 2
    (_, headers, run), (_, _, incident) = rec.requests
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert run["dashboardUID"] == "sentinel-overview" and isinstance(run["time"], int)
    assert run["tags"] == ["sentinel", "run", "pair:triage", "status:fail"]
    assert run["text"].startswith(f"Run {outcome.run_id} of triage fail: decision_flips on ")
    assert "at or above the fail level" in run["text"]
    inc = outcome.incidents[0]
    assert incident["tags"] == ["sentinel", "incident", "pair:triage", f"severity:{inc.severity}", "opened"]
    assert incident["text"].startswith(f"Incident #{inc.incident_id} opened [{inc.severity}] triage decision_flips")


def test_a_refusing_or_absent_grafana_never_stops_the_run(tmp_path, monkeypatch, grafana):
    url, rec = grafana
    rec.status = 500
    assert run_daemon(tmp_path / "a", monkeypatch, url).status == "fail"      # refused: logged, the run stands
    assert rec.requests
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert run_daemon(tmp_path / "b", monkeypatch, dead).status == "fail"


def test_annotations_link_to_the_console_pages(grafana):
    url, rec = grafana
    from sentinel.checks.base import CheckResult
    from sentinel.incidents.lifecycle import IncidentChange
    from sentinel.revalidation import RunOutcome

    r = CheckResult("decision_flips", "overall", "fail", 0.2, 500, "flip rate = 0.2", 0.02, 0.05)
    change = IncidentChange(4, 9, "opened", "fp", "triage", "decision_flips", "overall", "critical", "open", 1)
    outcome = RunOutcome(12, "triage", "fail", 500, [r], None, {}, [change])
    sent = GrafanaAnnotator(url, TOKEN, console_url="https://sentinel.example/").annotate_run(outcome, at=1.5)
    assert sent == 2
    (_, _, run), (_, _, incident) = rec.requests
    assert run["time"] == 1500 and "dashboardUID" not in run
    assert '<a href="https://sentinel.example/runs/12">Run 12 of triage fail</a>' in run["text"]
    assert '<a href="https://sentinel.example/incidents/4">Incident #4 opened</a>' in incident["text"]


def test_a_person_acknowledging_and_resolving_is_annotated_with_their_name(tmp_path, monkeypatch, grafana):
    """The dashboards show when someone took an incident on and when it ended, not only when a
    run opened it; what a person wrote is escaped, not HTML."""
    url, rec = grafana
    outcome = run_daemon(tmp_path, monkeypatch, url)
    inc = outcome.incidents[0]
    cfg = load_config(tmp_path / "sentinel.yaml")
    engine = build(cfg, load_models=False).incidents
    rec.requests.clear()
    engine.ack(inc.incident_id, "alice", note="looking <now>")
    engine.resolve(inc.incident_id, "bob")
    (_, _, acked), (_, _, resolved) = rec.requests
    assert acked["tags"] == ["sentinel", "incident", "pair:triage", f"severity:{inc.severity}", "acknowledged"]
    assert acked["text"] == (f"Incident #{inc.incident_id} acknowledged by alice: triage decision_flips "
                             "(looking &lt;now&gt;)")
    assert resolved["text"].startswith(f"Incident #{inc.incident_id} resolved by bob")
    assert resolved["tags"][-1] == "resolved"


def test_a_refusing_grafana_never_undoes_an_acknowledgement(tmp_path, monkeypatch, grafana):
    url, rec = grafana
    outcome = run_daemon(tmp_path, monkeypatch, url)
    rec.status = 500
    engine = build(load_config(tmp_path / "sentinel.yaml"), load_models=False).incidents
    assert engine.ack(outcome.incidents[0].incident_id, "alice")["state"] == "acknowledged"

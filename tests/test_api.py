"""The daemon's HTTP API on a live daemon (real broker, real store, real HTTP)."""
import json
import time

import httpx
import numpy as np
import pytest

from sentinel.config import load_config
from sentinel.app import build
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
    d = Daemon(build(cfg, load_models=False), install_signals=False)
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
    # latency distributions are Sentinel's own plot in the run's one-file report, never Evidently "data drift"
    assert "Latency distribution: latency_p95 / overall" in report and "latency ms:" not in report
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


# -- limits, ids, authentication and error shapes on a served daemon (no traffic needed) ----------

import io
import logging
import socket

from sentinel.api import MAX_ID, MUTATING
from sentinel.api_gate import READ_ONLY_POSTS
from sentinel.checks.base import CheckResult
from sentinel.logs import setup_logging

from stores import store_url  # noqa: F401,E402  (fixture)
from test_incident_daemon import IdleSource  # noqa: E402

LIMIT = 100_000


@pytest.fixture
def served(tmp_path, store_url, monkeypatch):  # noqa: F811
    """A started daemon (real store on both backends, real uvicorn via the daemon's own API start,
    Sentinel's JSON logging into a buffer) with one run and one open incident."""
    monkeypatch.setenv("SENTINEL_API_TOKEN", TOKEN)
    cfg = load_config(example_config(tmp_path, store_url=store_url,
                                     api={"enabled": True, "listen": "127.0.0.1:0", "max_body_bytes": LIMIT}))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buf = io.StringIO()
    setup_logging("INFO", "json", stream=buf)
    d = Daemon(build(cfg, load_models=False), install_signals=False, source_factory=lambda c: IdleSource())
    try:
        d.start()
        run_id = d.store.create_run("triage", "t", {})
        [ch] = d.incidents.process_run("triage", run_id, [
            CheckResult("decision_flips", "overall", "fail", 0.2, 500, "flip rate = 0.2", 0.02, 0.05)])
        client = httpx.Client(base_url=f"http://127.0.0.1:{d.api_port}", timeout=30)
        for _ in range(100):
            try:
                client.get("/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield d, client, run_id, ch.incident_id, buf
        client.close()
    finally:
        d.shutdown()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def raw_request(port: int, head: list[str], pieces: int = 0, piece: bytes = b"", timeout: float = 10.0):
    """Send ``head``, then up to ``pieces`` copies of ``piece`` (a short pause between them, for the
    server to answer), stopping as soon as the server answers. Returns (status or None, pieces
    sent before the answer, whether the server then closed the connection, the answer)."""
    import select

    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    sent, answer, closed = 0, b"", False
    try:
        while sent < pieces and not select.select([s], [], [], 0.02)[0]:
            s.sendall(piece)
            sent += 1
        if select.select([s], [], [], timeout)[0]:
            answer = s.recv(65536)
        while answer:   # after a refusal the server closes instead of reading the rest
            if not s.recv(65536):
                closed = True
                break
    except OSError:    # a reset: the server closed with our unread bytes in its buffer
        closed = True
    finally:
        s.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None
    return status, sent, closed, answer


def test_unauthenticated_body_is_refused_before_it_is_read(served):
    d, c, run_id, iid, _ = served
    port = d.api_port
    head = [f"POST /api/v1/incidents/{iid}/ack HTTP/1.1", "Host: x", "Content-Type: application/json"]
    # 100 MB announced, not one byte sent: the 401 comes at once, the body is never waited for
    status, _, closed, answer = raw_request(port, head + ["Content-Length: 100000000"])
    assert status == 401 and closed and b'"unauthorized"' in answer and b"connection: close" in answer.lower()
    # chunked: one piece sent, answered without asking for more
    piece = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    status, sent, closed, _ = raw_request(port, head + ["Transfer-Encoding: chunked"], pieces=1600, piece=piece)
    assert status == 401 and sent < 1600 and closed
    wrong = head + ["Authorization: Bearer nope", "Content-Length: 100000000"]
    assert raw_request(port, wrong)[0] == 401
    assert d.incidents.get(iid)["state"] == "open"


def test_body_over_the_limit_is_413_while_streaming(served):
    d, c, run_id, iid, _ = served
    head = [f"POST /api/v1/incidents/{iid}/ack HTTP/1.1", "Host: x", "Content-Type: application/json",
            f"Authorization: Bearer {TOKEN}"]
    status, _, closed, answer = raw_request(d.api_port, head + ["Content-Length: 100000000"])
    assert status == 413 and closed and b'"payload_too_large"' in answer and b"max_body_bytes" in answer
    piece = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"     # 64 KiB chunks, 100 MB if all were sent
    status, sent, closed, answer = raw_request(d.api_port, head + ["Transfer-Encoding: chunked"], pieces=1600,
                                               piece=piece)
    assert status == 413 and closed and sent < 1600, (status, sent)
    # what fits is served
    note = "n" * (LIMIT - 100)
    ok = c.post(f"/api/v1/incidents/{iid}/ack", headers={"Authorization": f"Bearer {TOKEN}"}, json={"note": note})
    assert ok.status_code == 200 and ok.json()["events"][-1]["detail"] == {"note": note}


@pytest.mark.parametrize("bad_id", [2**31, MAX_ID + 1, 2**63, 2**64, 10**30, -1, -(2**31) - 1, -(2**63) - 1, 0])
def test_ids_outside_the_column_range_are_404(served, bad_id):
    d, c, run_id, iid, _ = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    calls = [("GET", f"/api/v1/runs/{bad_id}"), ("GET", f"/api/v1/runs/{bad_id}/report"),
             ("POST", f"/api/v1/runs/{bad_id}/accept"), ("GET", f"/api/v1/incidents/{bad_id}"),
             ("POST", f"/api/v1/incidents/{bad_id}/ack"), ("POST", f"/api/v1/incidents/{bad_id}/resolve"),
             ("DELETE", f"/api/v1/silences/{bad_id}")]
    for method, path in calls:
        r = c.request(method, path, headers=auth, json={"reason": "x"} if path.endswith("accept") else None)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "not_found", r.text
    assert c.get(f"/api/v1/incidents/{iid}").status_code == 200 and c.get(f"/api/v1/runs/{run_id}").status_code == 200


def test_every_mutating_route_needs_the_token_and_bearer_is_case_insensitive(served, monkeypatch):
    d, c, run_id, iid, _ = served
    app = d._api_server.config.app
    # the API's routes (the console's forms sign in with a session cookie: tests/test_console.py);
    # a rollout gate's POST only reads (tests/test_rollouts.py)
    mutating = [(m, r.path) for r in app.routes for m in sorted(getattr(r, "methods", ()) or ())
                if m in MUTATING and r.path.startswith("/api/") and r.path not in READ_ONLY_POSTS]
    assert len(mutating) >= 6
    for method, path in mutating:
        path = path.replace("{run_id}", str(run_id)).replace("{incident_id}", str(iid)).replace("{silence_id}", "1")
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": TOKEN}):
            r = c.request(method, path, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (method, path, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
    for scheme in ("bearer", "BEARER", "Bearer"):
        r = c.post(f"/api/v1/incidents/{iid}/ack" if scheme == "bearer" else f"/api/v1/incidents/{iid}/resolve",
                   headers={"Authorization": f"{scheme}  {TOKEN}"})
        assert r.status_code in (200, 409), (scheme, r.text)
    assert d.incidents.get(iid)["state"] == "resolved"
    monkeypatch.delenv("SENTINEL_API_TOKEN")
    r = c.post("/api/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 403 and "SENTINEL_API_TOKEN" in r.json()["error"]["message"]


def test_errors_keep_the_documented_shape(served):
    d, c, run_id, iid, _ = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cases = [(c.get("/api/v1/incidents/abc"), 400, "bad_request"), (c.get("/api/v1/runs?limit=x"), 400, "bad_request"),
             (c.get("/api/v1/runs/abc"), 400, "bad_request"), (c.get("/api/v1/incidents?state=bogus"), 400, "bad_request"),
             (c.get("/api/v1/runs?limit=0"), 400, "bad_request"), (c.post("/healthz", headers=auth), 405, "method_not_allowed"),
             (c.get("/nope"), 404, "not_found"), (c.put("/healthz", headers=auth), 405, "method_not_allowed"),
             (c.post(f"/api/v1/incidents/{iid}/ack", headers={**auth, "Content-Type": "application/json"}, content=b"{nope"),
              400, "bad_request"),
             (c.post(f"/api/v1/incidents/{iid}/ack", headers=auth, json=[1]), 400, "bad_request")]
    for r, status, code in cases:
        assert r.status_code == status, (r.request.url, r.status_code, r.text)
        assert set(r.json()) == {"error"} and r.json()["error"]["code"] == code and r.json()["error"]["message"], r.text
    # a bad state names the allowed ones
    assert "'open', 'acknowledged', 'resolved' or 'silenced'" in cases[3][0].json()["error"]["message"]


def test_an_internal_error_is_json_for_the_client_and_a_json_log_line(served, monkeypatch):
    d, c, run_id, iid, buf = served

    def broken(**_kw):
        raise RuntimeError("boom-in-the-store")
    monkeypatch.setattr(d.incidents, "page", broken)
    r = c.get("/api/v1/incidents")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
    assert "boom" not in r.text
    time.sleep(0.2)
    lines = [line for line in buf.getvalue().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]        # every line is JSON, uvicorn's too
    [tb] = [x for x in records if x["logger"].startswith("uvicorn") and "boom-in-the-store" in x.get("exc", "")]
    assert tb["level"] == "error" and "Traceback" in tb["exc"]

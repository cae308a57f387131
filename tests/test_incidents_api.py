"""The incident and silence endpoints of the HTTP API over a real store (SQLite and PostgreSQL)
and engine: reads are open, mutations need the bearer token, bad input gets a 400 with a one-line message."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from sentinel.api import create_app
from sentinel.checks.base import CheckResult
from sentinel.config import parse_config
from sentinel.incidents import IncidentEngine

TOKEN = "t0ken"


@pytest.fixture
def api(store, monkeypatch):
    monkeypatch.setenv("SENTINEL_API_TOKEN", TOKEN)
    cfg = parse_config({"pairs": {"triage": {"baseline": {"path": "b"}, "candidate": {"path": "c"}, "classes": ["a", "b"]}}},
                       environ={})
    engine = IncidentEngine(store, targets=["hook"])
    [ch] = engine.process_run("triage", store.create_run("triage", "t", {}),
                              [CheckResult("decision_flips", "overall", "fail", 0.2, 500, "flip rate = 0.2", 0.02, 0.05)])
    client = TestClient(create_app(SimpleNamespace(cfg=cfg, incidents=engine, store=store)))
    yield client, ch.incident_id, engine


AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Sentinel-Actor": "alice"}


def test_ack_needs_the_token_and_records_actor_and_note(api):
    client, iid, _ = api
    assert client.get("/api/v1/incidents?state=open").json()["incidents"][0]["id"] == iid
    r = client.post(f"/api/v1/incidents/{iid}/ack")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = client.post(f"/api/v1/incidents/{iid}/ack", headers=AUTH, json={"note": "on it"})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    ev = r.json()["events"][-1]
    assert (ev["actor"], ev["detail"]) == ("alice", {"note": "on it"})
    r = client.post(f"/api/v1/incidents/{iid}/ack", headers=AUTH)
    assert r.status_code == 409 and "already acknowledged" in r.json()["error"]["message"]
    assert client.post("/api/v1/incidents/999/resolve", headers=AUTH).status_code == 404


def test_silence_create_list_expire(api):
    client, iid, engine = api
    body = {"matchers": ["pair=triage", "check=~decision_.*"], "duration": "2h", "reason": "retraining"}
    assert client.post("/api/v1/silences", json=body).status_code == 401
    r = client.post("/api/v1/silences", headers=AUTH, json=body)
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["silenced"] == [iid] and s["author"] == "alice" and s["matchers"] == ["pair=triage", "check=~decision_.*"]
    assert engine.get(iid)["state"] == "silenced"
    assert [x["id"] for x in client.get("/api/v1/silences").json()["silences"]] == [s["id"]]
    r = client.delete(f"/api/v1/silences/{s['id']}", headers=AUTH)
    assert r.status_code == 200 and r.json()["active"] is False
    assert engine.get(iid)["state"] == "open"
    assert client.get("/api/v1/silences").json()["silences"] == []
    assert len(client.get("/api/v1/silences?all=true").json()["silences"]) == 1
    assert client.delete(f"/api/v1/silences/{s['id']}", headers=AUTH).status_code == 409


@pytest.mark.parametrize("body, expect", [
    ({"matchers": ["pair"], "duration": "1h", "reason": "x"}, "expected NAME=VALUE"),
    ({"matchers": ["pair=triage"], "duration": "soon", "reason": "x"}, "expected a duration"),
    ({"matchers": ["pair=triage"], "duration": "1h"}, "needs a reason"),
    ({"matchers": ["pair=triage"], "duration": "1h", "reason": "x", "until": "x"}, "unknown field 'until'"),
    ({"matchers": "pair=triage", "duration": "1h", "reason": "x"}, "matchers must be a list"),
    ([1, 2], "body must be a JSON object"),
])
def test_bad_silences_are_400_with_one_line(api, body, expect):
    client, _, _ = api
    r = client.post("/api/v1/silences", headers=AUTH, json=body)
    assert r.status_code == 400 and expect in r.json()["error"]["message"] and "\n" not in r.json()["error"]["message"]

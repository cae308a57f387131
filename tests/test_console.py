"""The web console and people's authority, over HTTP (Starlette's test client on the real app,
real store on SQLite and PostgreSQL, real users file): pages, sign-in, CSRF, roles, links, the
API's bearer users and the paginated reads."""
from __future__ import annotations

import html
import re

import pytest
from fastapi.testclient import TestClient

from sentinel.app import http_app as create_app
from sentinel.errors import ConfigError
from seeds import add_run, flip_result
from sentinel.console.sessions import COOKIE
from sentinel.users import Users, add_user, hash_token, parse_users

from consoles import Control, login_csrf, make_console_app
from stores import store_url  # noqa: F401  (fixture)


@pytest.fixture
def started(tmp_path, store_url):  # noqa: F811
    s = make_console_app(tmp_path, store_url)
    yield s
    s.app.store.dispose()


@pytest.fixture
def client(started):
    return TestClient(create_app(started.app, Control()), base_url="https://testserver")


def sign_in(client: TestClient, token: str) -> str:
    """Sign in through the login form; returns the session's CSRF token (read from a page)."""
    r = client.post("/login", data={"token": token, "next": "/", "csrf": login_csrf(client)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/").text).group(1)


def test_pages_render_what_a_responder_needs(started, client):
    s = started
    overview = client.get("/")
    assert overview.status_code == 200 and "triage" in overview.text
    assert "1 critical" in overview.text and "consumer lag: 7 messages" in overview.text
    assert f'href="https://sentinel.example.org/runs/{s.run_id}"' in overview.text
    page = client.get(f"/incidents/{s.incident_id}").text
    inc = s.app.incidents.get(s.incident_id)
    assert inc["title"] in html.unescape(page)
    # evidence in words from the test that decided it, with its own level
    assert "missed malignant rate, increase over reference: 0.0308 &gt;= fail level 0.02" in page
    assert "class=malignant" in page and "https://runbooks.example.org/flips" in page
    assert f"run {s.run_id}" in page and "on traffic from" in page
    run = client.get(f"/runs/{s.run_id}").text
    assert "<svg" in run and "rows: baseline, columns: candidate" in run and "latency: latency_p95" in run
    assert "<details><summary>Reproducibility record" in run and "<script" not in run
    assert client.get(f"/runs/{s.run_id}/report").text.startswith("<html><body><h1>Run")
    pair = client.get("/pairs/triage").text
    assert "c" * 64 in pair and "decision_flips / class=malignant" in pair
    for path in ("/", "/incidents", f"/incidents/{s.incident_id}", f"/runs/{s.run_id}", "/pairs/triage", "/login"):
        r = client.get(path)
        assert r.status_code == 200 and "http://" not in r.text.replace("http://www.w3.org", ""), path   # nothing fetched


def test_bad_page_requests_are_error_pages(client):
    assert client.get("/incidents/999").status_code == 404
    assert client.get("/runs/999").status_code == 404 and client.get("/runs/999/report").status_code == 404
    assert client.get("/pairs/nope").status_code == 404
    r = client.get("/incidents?state=bogus")
    assert r.status_code == 400 and "states are open, acknowledged, resolved, silenced" in r.text
    assert client.get("/incidents?page=0").status_code == 400


def test_responder_acks_with_a_note_and_the_timeline_names_them(started, client):
    csrf = sign_in(client, started.tokens["alice"])
    iid = started.incident_id
    # without the session's CSRF token the form is refused, and nothing changes
    r = client.post(f"/incidents/{iid}/ack", data={"note": "x", "csrf": "forged"})
    assert r.status_code == 403 and started.app.incidents.get(iid)["state"] == "open"
    r = client.post(f"/incidents/{iid}/ack", data={"note": "rolling back", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert "Done: acknowledged" in page and '<td class="actor">alice</td>' in page and "rolling back" in page
    ev = started.app.incidents.get(iid)["events"][-1]
    assert (ev["actor"], ev["action"], ev["detail"]) == ("alice", "acknowledged", {"note": "rolling back"})
    r = client.post(f"/incidents/{iid}/resolve", data={"note": "rolled back", "csrf": csrf})
    assert r.status_code == 200 and started.app.incidents.get(iid)["state"] == "resolved"
    again = client.post(f"/incidents/{iid}/resolve", data={"csrf": csrf})
    assert again.status_code == 409 and "already resolved" in again.text


def test_viewer_cannot_act_and_approver_accepts(started, client):
    csrf = sign_in(client, started.tokens["bob"])
    iid = started.incident_id
    page = client.get(f"/incidents/{iid}").text
    assert 'id="ack"' not in page and "bob (viewer): acknowledging" in page
    r = client.post(f"/incidents/{iid}/ack", data={"note": "x", "csrf": csrf})
    assert r.status_code == 403 and "bob is a viewer; ack takes the role responder or admin" in r.text
    assert started.app.incidents.get(iid)["state"] == "open"
    assert client.post(f"/runs/{started.run_id}/accept", data={"reason": "x", "csrf": csrf}).status_code == 403

    client.cookies.clear()
    csrf = sign_in(client, started.tokens["carol"])
    assert 'id="accept"' in client.get("/pairs/triage").text
    assert client.post(f"/incidents/{iid}/silence", data={"note": "x", "csrf": csrf}).status_code == 403
    r = client.post(f"/runs/{started.run_id}/accept", data={"reason": "", "csrf": csrf})
    assert r.status_code == 400 and "a reason is required" in r.text
    r = client.post(f"/runs/{started.run_id}/accept", data={"reason": "int8 is 5% slower, agreed", "csrf": csrf})
    assert r.status_code == 200 and "Performance accepted by <b>carol</b>" in r.text
    assert started.app.store.get_run(started.run_id)["record"]["perf"]["accepted_by"]["actor"] == "carol"
    assert "int8 is 5% slower, agreed" in client.get("/pairs/triage").text


def test_sign_in_out_and_sessions_follow_the_users_file(started, client):
    r = client.post("/login", data={"token": "nope", "next": "/", "csrf": login_csrf(client)})
    assert r.status_code == 401 and "unknown token" in r.text
    # a sign-in posted from another site (no form token, or not the cookie's) signs nobody in
    for forged in ({}, {"csrf": "forged"}):
        r = client.post("/login", data={"token": started.tokens["alice"], "next": "/", **forged}, follow_redirects=False)
        assert r.status_code == 403 and "came from another site" in r.text
        assert COOKIE not in r.cookies
    assert client.post("/login", data={"token": started.tokens["alice"], "next": "//evil.example",
                                       "csrf": login_csrf(client)},
                       follow_redirects=False).headers["location"] == "/"
    assert "signed in as <b id=\"who\">alice</b>" in client.get("/").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text).group(1)
    assert client.post("/logout", data={"csrf": "x"}).status_code == 403
    assert client.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert "Sign in" in client.get("/").text and "signed in as" not in client.get("/").text
    # a new token for alice (the users file rewritten) ends her old sessions
    sign_in(client, started.tokens["alice"])
    text = started.users_file.read_text().replace(hash_token(started.tokens["alice"]), hash_token("rotated-" + "x" * 40))
    started.users_file.write_text(text + "\n")
    assert "signed in as" not in client.get("/").text


def test_read_access_authenticated_gates_pages_and_api(tmp_path):
    s = make_console_app(tmp_path, read_access="authenticated")
    c = TestClient(create_app(s.app, Control()), base_url="https://testserver")
    r = c.get(f"/incidents/{s.incident_id}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=/incidents/{s.incident_id}"
    assert c.get("/api/v1/incidents").status_code == 401 and c.get("/healthz").status_code == 200
    auth = {"Authorization": f"Bearer {s.tokens['bob']}"}
    assert c.get("/api/v1/incidents", headers=auth).status_code == 200
    sign_in(c, s.tokens["bob"])
    assert c.get(f"/incidents/{s.incident_id}").status_code == 200


def test_api_users_roles_and_audit(started, client, monkeypatch):
    iid = started.incident_id
    bearer = lambda name, **h: {"Authorization": f"Bearer {started.tokens[name]}", **h}   # noqa: E731
    r = client.post(f"/api/v1/incidents/{iid}/ack", headers=bearer("bob"))
    assert r.status_code == 403 and r.json()["error"]["message"] == "bob is a viewer; to respond takes the role responder or admin"
    assert client.post(f"/api/v1/runs/{started.run_id}/accept", headers=bearer("alice"), json={"reason": "x"}).status_code == 403
    # a person's token audits their own name: X-Sentinel-Actor cannot speak for someone else
    r = client.post(f"/api/v1/incidents/{iid}/ack", headers=bearer("alice", **{"X-Sentinel-Actor": "mallory"}),
                    json={"note": "on it"})
    assert r.status_code == 200 and r.json()["events"][-1]["actor"] == "alice"
    assert r.json()["url"] == f"https://sentinel.example.org/incidents/{iid}"
    assert r.json()["report"] == f"https://sentinel.example.org/runs/{started.run_id}/report"
    assert "/reports/" not in str(r.json())          # no path on the daemon's disk anywhere in it
    ok = client.post(f"/api/v1/runs/{started.run_id}/accept", headers=bearer("carol"), json={"reason": "fine"})
    assert ok.status_code == 200 and ok.json()["accepted_by"]["actor"] == "carol"
    # the shared token still works, as an admin who may name the person acting
    monkeypatch.setenv("SENTINEL_API_TOKEN", "shared-token-of-old")
    r = client.post(f"/api/v1/incidents/{iid}/resolve",
                    headers={"Authorization": "Bearer shared-token-of-old", "X-Sentinel-Actor": "erin"})
    assert r.status_code == 200 and r.json()["events"][-1]["actor"] == "erin"


def test_lists_are_paginated_summaries(started, client):
    store = started.app.store
    for i in range(60):
        add_run(store, "triage", [flip_result(0.001 * i)], perf=False)
    first = client.get("/api/v1/runs", params={"limit": 25}).json()
    assert len(first["runs"]) == 25 and "record" not in first["runs"][0] and "report_path" not in first["runs"][0]
    second = client.get("/api/v1/runs", params={"limit": 25, "before": first["next"]}).json()
    assert second["runs"][0]["id"] == first["runs"][-1]["id"] - 1
    assert "record" in client.get(f"/api/v1/runs/{started.run_id}").json()
    pair = client.get("/pairs/triage").text
    assert pair.count('<a href="https://sentinel.example.org/runs/') == 50 and "older →" in pair
    # incidents: filters and pages
    eng = started.app.incidents
    for i in range(55):
        rid = add_run(store, "triage", [], perf=False)
        from sentinel.checks.result import CheckResult
        eng.process_run("triage", rid, [CheckResult(f"c{i}", "overall", "fail", 1.0, 10, "x = 1", 0.1, 0.5)])
    listing = client.get("/incidents", params={"state": "open", "severity": "high"}).text
    assert "(55)" in listing and "page 1 of 2" in listing and listing.count('<tr><td><a href="https') == 50
    assert "page 2 of 2" in client.get("/incidents", params={"state": "open", "severity": "high", "page": 2}).text
    api = client.get("/api/v1/incidents", params={"severity": "critical"}).json()
    assert api["total"] == 1 and api["incidents"][0]["id"] == started.incident_id


def test_users_file_is_checked_and_tokens_are_stored_hashed(tmp_path):
    f = tmp_path / "u.yaml"
    token = add_user(f, "zoe", "responder")
    assert token not in f.read_text() and hash_token(token) in f.read_text()
    with pytest.raises(ConfigError, match="user 'zoe' is listed twice|users\\[1\\]"):
        add_user(f, "zoe", "viewer")
    users = Users(file=f)
    assert users.authenticate(token).name == "zoe" and users.authenticate(token + "x") is None
    for text, expect in [("users: [{name: a, role: boss, token_sha256: " + "a" * 64 + "}]", "unknown role 'boss'"),
                         ("users: [{name: a, role: viewer, token_sha256: abc}]", "64 hex digits"),
                         ("users: [{name: a, role: viewer, token_sha256: " + "a" * 64 + ", pw: x}]", "users[0].pw"),
                         ("people: []", "people: unknown key")]:
        with pytest.raises(ConfigError, match=re.escape(expect)):
            parse_users(text, "u.yaml")
    # a file broken while running keeps the users read before
    f.write_text("users: [oops")
    assert users.authenticate(token).name == "zoe"


def test_users_add_cli_prints_a_working_token_once(tmp_path, capsys):
    from sentinel.cli import main

    f = tmp_path / "users.yaml"
    assert main(["users", "add", "zed", "--role", "approver", "--file", str(f)]) == 0
    token = capsys.readouterr().out.split("privately): ")[1].strip()
    assert Users(file=f).authenticate(token).role == "approver" and token not in f.read_text()
    assert main(["users", "add", "zed", "--role", "viewer", "--file", str(f)]) == 2
    assert "users[1].name: user 'zed' is listed twice" in capsys.readouterr().err
    assert main(["users", "list", "--file", str(f)]) == 0 and capsys.readouterr().out == "zed: approver\n"


def test_a_browser_gets_error_pages_and_api_clients_json(client):
    html_ = {"Accept": "text/html,application/xhtml+xml"}
    r = client.get("/nowhere", headers=html_)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html") and 'id="error"' in r.text
    r = client.get("/incidents/abc", headers=html_)
    assert r.status_code == 400 and "valid integer" in r.text
    assert client.get("/api/v1/nowhere", headers=html_).json()["error"]["code"] == "not_found"
    assert client.get("/nowhere").json()["error"]["code"] == "not_found"


def test_users_from_the_env_var_sign_in_too(tmp_path, monkeypatch):
    from sentinel.config import load_config

    from pairs import example_config

    token = "snt_" + "e" * 43
    monkeypatch.setenv("SENTINEL_USERS", f"users: [{{name: erin, role: responder, token_sha256: {hash_token(token)}}}]")
    cfg = load_config(example_config(tmp_path))
    users = Users.from_config(cfg, lambda: None)
    assert users.authenticate(token).name == "erin" and users.configured()
    monkeypatch.setenv("SENTINEL_USERS", "users: [{name: erin, role: chief, token_sha256: x}]")
    with pytest.raises(ConfigError, match=r"\$SENTINEL_USERS: users\[0\]\.role: unknown role 'chief'"):
        Users.from_config(cfg, lambda: None)


def test_silence_form_on_one_candidates_incident_silences_that_candidate_only(started, client):
    """A pair with several candidates: each candidate's failure is its own incident, and the
    incident page's silence form holds that candidate's incidents, not the other candidate's."""
    results = []
    for name in ("int8", "damaged"):
        r = flip_result(0.05)
        r.candidate = name
        results.append(r)
    run_id = add_run(started.app.store, "triage", results)
    by = {c.candidate: c.incident_id for c in started.app.incidents.process_run("triage", run_id, results)}
    csrf = sign_in(client, started.tokens["alice"])
    r = client.post(f"/incidents/{by['int8']}/silence", data={"note": "int8 rebuild", "csrf": csrf, "duration": "1h"})
    assert r.status_code == 200, r.text
    [silence] = started.app.incidents.silences()
    assert silence["matchers"] == ["pair=triage", "check=decision_flips", "candidate=int8"]
    assert started.app.incidents.get(by["int8"])["state"] == "silenced"
    assert started.app.incidents.get(by["damaged"])["state"] == "open"
    assert started.app.incidents.get(started.incident_id)["state"] == "open"     # the single-candidate one too

"""Diagnosis per candidate (a pair with several ``candidates:``): each candidate's flipped rows
against the baseline, its diagnosis stored under its name, shown under its name in the report,
on the console run page and by the CLI and the API. Real models (the bundled triage pair: its
int8 candidate, its damaged one and one with a layer pruned hard, each with the float twin),
real stores, the real app over Starlette's test client."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from fastapi.testclient import TestClient

from pairs import EXAMPLE, example_config
from sentinel.app import build
from sentinel.cli import main
from sentinel.config import load_config
from sentinel.users import add_user
from stores import store_url  # noqa: F401  (fixture)
from test_diagnose import _pruned_candidate
from test_diagnose_auto import PRUNED_ORIGIN, REFERENCE, revalidate, served, sign_in  # noqa: F401  (fixture)

DAMAGED_ORIGIN = "/body/body.0/Gemm_output_0"


def make_multi_app(tmp_path: Path, candidates: dict[str, str], *, store: str | None = None, auto: bool = True,
                   users: Path | None = None):
    """The triage pair with several candidates, each with the float twin it was quantized from."""
    cfg_path = example_config(tmp_path, store_url=store,
                              api={"enabled": False, **({"users_file": str(users)} if users else {})})
    raw = yaml.safe_load(cfg_path.read_text())
    pair = raw["pairs"]["triage"]
    del pair["candidate"]
    pair["candidates"] = {name: {"path": str(EXAMPLE / path), "runtime": "onnxruntime", "threads": 1,
                                 "float_reference": str(REFERENCE)} for name, path in candidates.items()}
    pair["diagnose"] = {"auto": auto}
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return build(load_config(cfg_path)), cfg_path


def flips(outcome) -> dict[str, object]:
    return {r.candidate: r for r in outcome.results if r.type == "decision_flips" and r.slice == "overall"}


def test_each_failing_candidate_is_diagnosed_on_its_own_flipped_rows(tmp_path, store_url, capsys):  # noqa: F811
    from sentinel.console import views
    from sentinel.printing import print_results

    pruned = _pruned_candidate(tmp_path)
    app, _ = make_multi_app(tmp_path, {"int8": "candidate.int8.onnx", "pruned": str(pruned),
                                       "damaged": "damaged.int8.onnx"}, store=store_url)
    outcome = revalidate(app, tmp_path)
    by = flips(outcome)
    assert by["int8"].status == "pass" and by["pruned"].status == "fail" and by["damaged"].status == "fail"
    run = app.store.get_run(outcome.run_id)
    entry = run["record"]["diagnosis"]
    assert list(entry) == ["candidates"] and list(entry["candidates"]) == ["pruned", "damaged"]   # int8 passed
    assert outcome.record["diagnosis"] == entry
    for name, origin, weights in (("pruned", PRUNED_ORIGIN, ["body.2.weight"]),
                                  ("damaged", DAMAGED_ORIGIN, ["body.0.weight", "body.2.weight", "body.4.weight"])):
        one = entry["candidates"][name]
        d = one["result"]
        assert one["by"] == "auto" and {"check": "decision_flips", "slice": "overall", "type": "decision_flips"} in one["trigger"]
        assert d["candidate"] == name and d["pair"] == "triage" and d["run_id"] == outcome.run_id
        # its own flipped rows: as many as this candidate flipped (up to diagnose.max_rows)
        assert d["rows"]["flipped"] == min(round(by[name].value * by[name].n), 500)
        assert d["origin"] == origin, d["summary"]
        assert sorted(w["name"] for w in d["weights"] if w["below_floor"]) == weights
    # the report and the console's run page show each candidate's under its name, and none for int8
    report = Path(run["report_path"]).read_text()
    page = views.run(SimpleNamespace(store=app.store, cfg=app.cfg), outcome.run_id)["diagnosis"]
    for html in (report, page):
        assert "Where each candidate diverges (diagnosis)" in html and "diagnosis-int8" not in html
        for name, node in (("pruned", "/body/body.2/Gemm"), ("damaged", "/body/body.0/Gemm")):
            part = html[html.index(f"<section id='diagnosis-{name}'>"):]
            part = part[:part.index("</section>")]
            assert f"Candidate {name}</h3>" in part and f"from {node} (Gemm)" in part
            assert f"id='diagnosis-plot-{name}'><svg" in part
    print_results(outcome)       # what `sentinel revalidate` prints
    printed = capsys.readouterr().out
    assert "diagnosis of pruned: " in printed and "diagnosis of damaged: " in printed
    app.store.dispose()


@pytest.fixture
def multi(tmp_path):
    """A run of int8 (passing) and damaged (failing) diagnosed by nobody yet (auto off); the real
    app with a responder, its config file."""
    users = tmp_path / "users.yaml"
    token = add_user(users, "alice", "responder")
    app, cfg_path = make_multi_app(tmp_path, {"int8": "candidate.int8.onnx", "damaged": "damaged.int8.onnx"},
                                   auto=False, users=users)
    run_id = revalidate(app, tmp_path).run_id
    client = TestClient(app.http_app(), base_url="https://testserver")
    yield app, run_id, token, client, cfg_path
    app.store.dispose()


def test_api_diagnoses_every_candidate_or_the_one_named(multi):
    app, run_id, _, client, _ = multi
    got = client.get(f"/api/v1/runs/{run_id}/diagnosis").json()
    assert (got["pair"], got["run_id"]) == ("triage", run_id) and list(got["candidates"]) == ["int8", "damaged"]
    damaged, int8 = got["candidates"]["damaged"], got["candidates"]["int8"]
    assert damaged["candidate"] == "damaged" and damaged["origin"] == DAMAGED_ORIGIN and damaged["stored"] is None
    assert int8["candidate"] == "int8" and int8["origin"] is None and int8["below_floor"] == []
    assert damaged["rows"]["flipped"] > int8["rows"]["flipped"]
    one = client.get(f"/api/v1/runs/{run_id}/diagnosis", params={"candidate": "damaged"}).json()
    assert one["candidate"] == "damaged" and one["origin"] == DAMAGED_ORIGIN and one["stored"] is None
    r = client.get(f"/api/v1/runs/{run_id}/diagnosis", params={"candidate": "int4"})
    assert r.status_code == 404 and "its candidates are int8, damaged" in r.json()["error"]["message"]
    assert "diagnosis" not in app.store.get_run(run_id)["record"]     # reads store nothing


def test_single_candidate_pair_takes_no_candidate_name(served):
    _, run_id, _, client = served
    r = client.get(f"/api/v1/runs/{run_id}/diagnosis", params={"candidate": "int8"})
    assert r.status_code == 404 and "has a single candidate" in r.json()["error"]["message"]
    got = client.get(f"/api/v1/runs/{run_id}/diagnosis").json()
    assert "candidate" not in got and "candidates" not in got and got["origin"] == DAMAGED_ORIGIN


def test_console_diagnoses_one_candidate_then_every_one(multi):
    app, run_id, token, client, _ = multi
    csrf = sign_in(client, token, run_id)
    page = client.get(f"/runs/{run_id}").text
    assert ('<select name="candidate" id="diagnose-candidate" aria-label="candidate"><option value="">every '
            'candidate</option><option value="int8">int8</option><option value="damaged">damaged</option>') in page
    r = client.post(f"/runs/{run_id}/diagnose", data={"csrf": csrf, "candidate": "damaged"}, follow_redirects=False)
    assert r.status_code == 303
    entry = app.store.get_run(run_id)["record"]["diagnosis"]
    assert list(entry["candidates"]) == ["damaged"] and entry["candidates"]["damaged"]["by"] == "alice"
    assert entry["candidates"]["damaged"]["result"]["origin"] == DAMAGED_ORIGIN
    page = client.get(r.headers["location"]).text
    assert "<section id='diagnosis-damaged'><h3>Candidate damaged</h3>" in page and "diagnosis-int8" not in page
    got = client.get(f"/api/v1/runs/{run_id}/diagnosis").json()["candidates"]
    assert got["damaged"]["stored"]["by"] == "alice" and got["int8"]["stored"] is None
    first_at = entry["candidates"]["damaged"]["at"]
    r = client.post(f"/runs/{run_id}/diagnose", data={"csrf": csrf}, follow_redirects=False)   # every candidate
    entry = app.store.get_run(run_id)["record"]["diagnosis"]
    assert list(entry["candidates"]) == ["int8", "damaged"] and entry["candidates"]["damaged"]["at"] >= first_at
    assert entry["candidates"]["int8"]["result"]["candidate"] == "int8"
    page = client.get(r.headers["location"]).text
    assert page.index("id='diagnosis-int8'") < page.index("id='diagnosis-damaged'")
    r = client.post(f"/runs/{run_id}/diagnose", data={"csrf": csrf, "candidate": "int4"}, follow_redirects=False)
    assert r.status_code == 409 and "its candidates are int8, damaged" in r.text


def test_cli_diagnoses_every_candidate_into_its_own_files(multi, capsys):
    app, run_id, _, _, cfg_path = multi
    assert main(["diagnose", "--config", str(cfg_path), str(run_id), "--candidate", "int4"]) == 2
    assert "pair 'triage' has no candidate 'int4'; its candidates are int8, damaged" in capsys.readouterr().err
    assert main(["diagnose", "--config", str(cfg_path), str(run_id), "--candidate", "int8"]) == 0   # healthy
    capsys.readouterr()
    assert main(["diagnose", "--config", str(cfg_path), str(run_id)]) == 1       # damaged is below its floor
    printed = capsys.readouterr().out
    assert f"diagnosis of run {run_id} (triage, candidate int8)" in printed
    assert f"diagnosis of run {run_id} (triage, candidate damaged)" in printed
    reports = Path(app.cfg.reports_dir)
    for name, origin in (("int8", None), ("damaged", DAMAGED_ORIGIN)):
        result = json.loads((reports / f"run-{run_id}-{name}-diagnosis.json").read_text())
        assert result["candidate"] == name and result["origin"] == origin
        assert (reports / f"run-{run_id}-{name}-diagnosis.svg").is_file()
    entry = app.store.get_run(run_id)["record"]["diagnosis"]
    assert {n: e["by"] for n, e in entry["candidates"].items()} == {"int8": "cli", "damaged": "cli"}

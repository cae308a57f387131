"""The automatic diagnosis (sentinel.diagnose.auto) on the daemon's revalidation path, and the
diagnosis shown in the report, on the console run page (with its Diagnose button) and by the API:
real models (the bundled triage pair, a candidate with one layer pruned hard), a real store on
SQLite and PostgreSQL, the real app over Starlette's test client."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from consoles import login_csrf
from pairs import EXAMPLE, example_config, traffic_lines
from sentinel.app import build
from sentinel.config import load_config
from sentinel.examples.traffic import load_reference, ordinary_traffic
from sentinel.revalidation import read_input_file
from sentinel.users import add_user
from stores import store_url  # noqa: F401  (fixture)
from test_diagnose import _pruned_candidate

REFERENCE = EXAMPLE / "baseline.fp32.onnx"
PRUNED_ORIGIN = "/body/body.2/Gemm_output_0"


def make_app(tmp_path: Path, candidate: str, *, float_reference: str | None = str(REFERENCE), store: str | None = None,
             auto: bool = True, users: Path | None = None):
    cfg_path = example_config(tmp_path, candidate=candidate, store_url=store,
                              api={"enabled": False, **({"users_file": str(users)} if users else {})})
    raw = yaml.safe_load(cfg_path.read_text())
    pair = raw["pairs"]["triage"]
    if float_reference is not None:
        pair["candidate"]["float_reference"] = float_reference
    pair["diagnose"] = {"auto": auto}
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return build(load_config(cfg_path))


def revalidate(app, tmp_path: Path, n: int = 2000):
    """One run of the daemon's Revalidator on ordinary traffic read from a file, as
    ``sentinel revalidate --input`` makes it."""
    x, _ = ordinary_traffic(np.random.default_rng(1), n, reference=load_reference(EXAMPLE))
    path = tmp_path / "traffic.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in traffic_lines(x)) + "\n")
    by_pair, source, _ = read_input_file(str(path), {"triage": app.pair("triage").shape})
    return app.revalidator.run("triage", trigger="cli", samples=by_pair["triage"], source=source)


def _flips_failed(outcome) -> bool:
    return any(r.type == "decision_flips" and r.status == "fail" for r in outcome.results)


def test_failing_run_with_one_layer_pruned_is_diagnosed_and_names_that_layer(tmp_path, store_url):  # noqa: F811
    app = make_app(tmp_path, str(_pruned_candidate(tmp_path)), store=store_url)
    outcome = revalidate(app, tmp_path)
    assert outcome.status == "fail" and _flips_failed(outcome)
    run = app.store.get_run(outcome.run_id)
    entry = run["record"]["diagnosis"]
    assert entry["by"] == "auto" and {"check": "decision_flips", "slice": "overall", "type": "decision_flips"} in entry["trigger"]
    d = entry["result"]
    assert d["mode"] == "layers" and d["run_id"] == outcome.run_id and d["rows"]["flipped"] > 0
    assert d["origin"] == PRUNED_ORIGIN, d["summary"]
    assert [w["name"] for w in d["weights"] if w["below_floor"]] == ["body.2.weight"]
    by_node = {t["node"]: t for t in d["tensors"]}
    # the SQNR is lost at the pruned Gemm, far more than at the untouched first one
    assert by_node["/body/body.2/Gemm"]["below_floor"] and by_node["/body/body.2/Gemm"]["fall"] > 20
    assert by_node["/body/body.2/Gemm"]["fall"] > 2 * by_node["/body/body.0/Gemm"]["fall"]
    assert outcome.record["diagnosis"] == entry        # what the caller holds is what was stored
    # the report was written after the diagnosis and shows it: named layer, figures, plot
    report = Path(run["report_path"]).read_text()
    section = report[report.index("<section id='diagnosis'>"):report.index("</section>")]
    assert "from /body/body.2/Gemm (Gemm)" in section and "body.2.weight" in section
    svg = re.search(r"<svg.*?</svg>", section[section.index("diagnosis-plot"):], re.S).group(0)
    ET.fromstring(svg)
    # the plot is in network order: the float graph's nodes, left to right
    labels = [t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text") if t.get("transform")]
    assert labels == [t["node"][:28] for t in d["tensors"]]
    app.store.dispose()


def test_passing_run_is_not_diagnosed(tmp_path):
    app = make_app(tmp_path, "candidate.int8.onnx")
    outcome = revalidate(app, tmp_path)
    assert outcome.status in ("pass", "warn", "insufficient_data") and not _flips_failed(outcome)
    run = app.store.get_run(outcome.run_id)
    assert "diagnosis" not in run["record"]
    assert "id='diagnosis'" not in Path(run["report_path"]).read_text()
    app.store.dispose()


def test_a_diagnosis_that_fails_leaves_the_run_as_it_was(tmp_path):
    broken = tmp_path / "broken.fp32.onnx"
    broken.write_bytes(b"not an onnx graph")
    app = make_app(tmp_path, "damaged.int8.onnx", float_reference=str(broken))
    outcome = revalidate(app, tmp_path)
    run = app.store.get_run(outcome.run_id)
    assert outcome.status == run["status"] == "fail" and run["results"] and run["error"] is None
    entry = run["record"]["diagnosis"]
    assert "result" not in entry and "broken.fp32.onnx" in entry["error"], entry
    assert run["record"]["samples"]["kind"] == "file"   # the rest of the record is kept
    assert outcome.incidents and Path(run["report_path"]).is_file()
    assert "No diagnosis: " in Path(run["report_path"]).read_text()
    app.store.dispose()


def test_auto_off_and_no_float_twin(tmp_path):
    (tmp_path / "off").mkdir()
    app = make_app(tmp_path / "off", "damaged.int8.onnx", auto=False)
    outcome = revalidate(app, tmp_path / "off")
    assert outcome.status == "fail" and "diagnosis" not in app.store.get_run(outcome.run_id)["record"]
    app.store.dispose()
    # a candidate without a float twin (pruned, distilled): the output-level comparison, saying so
    (tmp_path / "twinless").mkdir()
    app = make_app(tmp_path / "twinless", "damaged.int8.onnx", float_reference=None)
    outcome = revalidate(app, tmp_path / "twinless")
    run = app.store.get_run(outcome.run_id)
    d = run["record"]["diagnosis"]["result"]
    assert d["mode"] == "outputs" and d["tensors"] == [] and "no float_reference" in d["reason"]
    assert d["outputs"]["sqnr_flipped"] < d["outputs"]["sqnr_agreeing"]
    assert "output-level comparison only: the candidate has no float_reference" in Path(run["report_path"]).read_text()
    app.store.dispose()


# -- the console's run page and the API --------------------------------------------------------------

@pytest.fixture
def served(tmp_path):
    """A failing run of the damaged candidate diagnosed by nobody yet (auto off), and the real app
    with one person per role."""
    users = tmp_path / "users.yaml"
    tokens = {name: add_user(users, name, role) for name, role in
              (("alice", "responder"), ("bob", "viewer"), ("carol", "approver"))}
    app = make_app(tmp_path, "damaged.int8.onnx", auto=False, users=users)
    outcome = revalidate(app, tmp_path)
    client = TestClient(app.http_app(), base_url="https://testserver")
    yield app, outcome.run_id, tokens, client
    app.store.dispose()


def sign_in(client: TestClient, token: str, run_id: int) -> str:
    client.cookies.clear()
    r = client.post("/login", data={"token": token, "next": f"/runs/{run_id}", "csrf": login_csrf(client)},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    return re.search(r'name="csrf" value="([^"]+)"', client.get(f"/runs/{run_id}").text).group(1)


def test_diagnose_button_runs_and_stores_it_for_a_responder_only(served):
    app, run_id, tokens, client = served
    url = f"/runs/{run_id}/diagnose"
    csrf = sign_in(client, tokens["bob"], run_id)
    assert 'id="diagnose"' not in client.get(f"/runs/{run_id}").text         # a viewer has no button
    r = client.post(url, data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 403 and "bob is a viewer" in r.text
    csrf = sign_in(client, tokens["alice"], run_id)
    page = client.get(f"/runs/{run_id}").text
    assert 'id="diagnose"' in page and "id='diagnosis'" not in page
    assert client.post(url, data={"csrf": "forged"}, follow_redirects=False).status_code == 403
    assert "diagnosis" not in app.store.get_run(run_id)["record"]           # refused forms stored nothing
    r = client.post(url, data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/runs/{run_id}?done=diagnosed"
    entry = app.store.get_run(run_id)["record"]["diagnosis"]
    assert entry["by"] == "alice" and entry["result"]["origin"] == "/body/body.0/Gemm_output_0"
    page = client.get(r.headers["location"]).text
    assert "Done: diagnosed." in page and "diagnosed on demand by alice" in page
    assert "from /body/body.0/Gemm (Gemm)" in page and "body.0.weight -13.9 dB (below floor)" in page
    plot = re.search(r"<div class='plots' id='diagnosis-plot'>(<svg.*?</svg>)", page, re.S).group(1)
    ET.fromstring(plot)
    assert '"diagnosis"' not in page[page.index("Reproducibility record"):]   # not repeated in the record
    # the API answers the stored diagnosis, saying who made it
    got = client.get(f"/api/v1/runs/{run_id}/diagnosis").json()
    assert got["stored"]["by"] == "alice" and got["origin"] == entry["result"]["origin"] and got["svg"] == plot


def test_api_computes_when_nothing_is_stored(served):
    app, run_id, _, client = served
    got = client.get(f"/api/v1/runs/{run_id}/diagnosis").json()
    assert got["stored"] is None and got["origin"] == "/body/body.0/Gemm_output_0"
    assert "diagnosis" not in app.store.get_run(run_id)["record"]   # a read stores nothing

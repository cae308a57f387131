"""deploy/rollouts/ against the gate's real answers: the routes of sentinel/api_gate.py mounted on a
FastAPI app served by uvicorn on loopback, over a real store holding real runs. The Argo
AnalysisTemplate is rendered (its ``{{args.*}}``), its URL fetched, its ``jsonPath`` applied and its
success/failure conditions evaluated the way Argo Rollouts does (utils/evaluate: failure first,
neither is Inconclusive); each Flagger webhook is POSTed the way Flagger does (its payload, any
status above 202 fails the step)."""
from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from fastapi import FastAPI

from sentinel.api_gate import GATE_PATH, register_gate_routes
from sentinel.config import load_config
from sentinel.incidents import IncidentEngine

from pairs import example_config
from receivers import free_port
from test_gate import SHA, flips, latency, stored_run

ROLLOUTS = Path(__file__).resolve().parent.parent / "deploy" / "rollouts"


def documents(name):
    return {d["kind"]: d for d in yaml.safe_load_all((ROLLOUTS / name).read_text())}


@contextlib.contextmanager
def served_gate(store, cfg):
    """The gate routes on a minimal FastAPI app (the lead mounts them on Sentinel's), served by
    uvicorn on a loopback port, over ``store`` with a real incident engine."""
    import uvicorn

    api = FastAPI()
    register_gate_routes(api, SimpleNamespace(store=store, cfg=cfg, pairs={}, incidents=IncidentEngine(store, targets=[])))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start in 10 s"
        time.sleep(0.05)
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", store=store)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def gate_api(tmp_path, store):
    with served_gate(store, load_config(example_config(tmp_path))) as served:
        yield served


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# -- the tiny subset of Argo's jsonPath and expr the template uses ---------------------------------

def json_path(expr, data):
    """Kubernetes jsonpath ``{$}`` / ``{$.a.b}`` (what the template may use)."""
    m = re.fullmatch(r"\{\$((?:\.[A-Za-z_][\w-]*)*)\}", expr.strip())
    assert m, f"jsonPath {expr!r} is outside the subset this test evaluates"
    for key in filter(None, m.group(1).split(".")):
        data = data[key]
    return data


def condition(expr, result):
    """``result.a.b`` (truthy) or ``result.a.b == "x"`` / ``== true|false|number``, Argo expr style."""
    m = re.fullmatch(r'result((?:\.[A-Za-z_]\w*)*)\s*(?:==\s*(".*"|\'.*\'|true|false|-?[\d.]+))?', expr.strip())
    assert m, f"condition {expr!r} is outside the subset this test evaluates"
    value = result
    for key in filter(None, m.group(1).split(".")):
        value = value[key]
    if m.group(2) is None:
        assert isinstance(value, bool), f"{expr!r} must be a bool for Argo's expr.AsBool(), got {value!r}"
        return value
    return value == json.loads(m.group(2).replace("'", '"'))


def argo_phase(metric, result):
    """Argo Rollouts' EvaluateResult: a failure condition that holds wins; neither is Inconclusive;
    a success condition alone fails when it does not hold."""
    ok = condition(metric["successCondition"], result) if metric.get("successCondition") else None
    bad = condition(metric["failureCondition"], result) if metric.get("failureCondition") else None
    if bad is None:
        bad = ok is False
    if bad:
        return "Failed"
    return "Successful" if ok or ok is None else "Inconclusive"


def render(text, args):
    return re.sub(r"\{\{\s*args\.([\w-]+)\s*\}\}", lambda m: str(args[m.group(1)]), text)


def argo_measure(gate_api, pair="triage", candidate=SHA):
    template = documents("analysis-template.yaml")["AnalysisTemplate"]
    args = {a["name"]: a.get("value") for a in template["spec"]["args"]}
    args.update({"pair": pair, "candidate": candidate, "sentinel-url": gate_api.url})
    [metric] = template["spec"]["metrics"]
    web = metric["provider"]["web"]
    status, body = http("GET", render(web["url"], args))
    assert status == 200, body                   # any non-2xx is a measurement Error in Argo, not a verdict
    return argo_phase(metric, json_path(web.get("jsonPath", "{$}"), body)), body


def flagger_steps(gate_api, candidate=SHA):
    """Each webhook of the Canary as Flagger calls it: POST its payload; passed when status <= 202."""
    canary = documents("flagger-canary.yaml")["Canary"]
    out = {}
    for hook in canary["spec"]["analysis"]["webhooks"]:
        url = re.sub(r"^https?://[^/]+", gate_api.url, hook["url"])
        meta = {**hook["metadata"], "candidate": candidate}
        status, body = http("POST", url, {"name": canary["metadata"]["name"], "namespace": canary["metadata"]["namespace"],
                                          "phase": "Progressing", "metadata": meta})
        out[hook["type"]] = (status <= 202, status, body)
    return out


def test_the_manifests_are_what_argo_and_flagger_read():
    docs = documents("analysis-template.yaml")
    template, rollout = docs["AnalysisTemplate"], docs["Rollout"]
    assert template["apiVersion"] == rollout["apiVersion"] == "argoproj.io/v1alpha1"
    [metric] = template["spec"]["metrics"]
    assert metric["successCondition"] == "result.ok" and metric["provider"]["web"]["jsonPath"] == "{$}"
    url = metric["provider"]["web"]["url"]
    assert GATE_PATH in url and "{{args.pair}}" in url and "{{args.candidate}}" in url
    declared = {a["name"] for a in template["spec"]["args"]}
    assert set(re.findall(r"\{\{\s*args\.([\w-]+)", url)) <= declared
    step = next(s["analysis"] for s in rollout["spec"]["strategy"]["canary"]["steps"] if "analysis" in s)
    assert step["templates"][0]["templateName"] == template["metadata"]["name"]
    passed = {a["name"] for a in step["args"]}
    assert {a["name"] for a in template["spec"]["args"] if "value" not in a} <= passed
    canary = documents("flagger-canary.yaml")["Canary"]
    assert canary["apiVersion"] == "flagger.app/v1beta1"
    hooks = {h["type"]: h for h in canary["spec"]["analysis"]["webhooks"]}
    assert set(hooks) == {"rollout", "confirm-promotion"}
    assert all(GATE_PATH in h["url"] and set(h["metadata"]) == {"pair", "candidate"} for h in hooks.values())


def test_pass_fail_and_inconclusive_reach_argo_and_flagger_as_such(gate_api):
    store = gate_api.store
    # no run of the file yet: Argo keeps asking (Inconclusive); Flagger neither rolls back nor promotes
    phase, body = argo_measure(gate_api)
    assert (phase, body["verdict"], body["ok"]) == ("Inconclusive", "inconclusive", False)
    steps = flagger_steps(gate_api)
    assert steps["rollout"][0] is True and steps["confirm-promotion"][:2] == (False, 412)

    # a window below the flip check's min_samples: still inconclusive, saying so
    stored_run(store, SHA, "insufficient_data", [flips("insufficient_data", None, 40)], n=40)
    phase, body = argo_measure(gate_api)
    assert phase == "Inconclusive" and body["n"] == 40 and "need 100" in body["reason"]

    # judged and passed
    passed = stored_run(store, SHA, "pass", [flips("pass", 0.01, 900), latency("pass")], n=900)
    phase, body = argo_measure(gate_api)
    assert (phase, body["verdict"], body["run"], body["n"]) == ("Successful", "pass", passed, 900)
    assert all(ok for ok, _, _ in flagger_steps(gate_api).values())

    # the next run of the same file fails: Argo aborts, Flagger's rollout step fails (rollback)
    stored_run(store, SHA, "fail", [flips("fail", 0.2, 900)], n=900)
    phase, body = argo_measure(gate_api)
    assert (phase, body["verdict"], body["ok"]) == ("Failed", "fail", False)
    steps = flagger_steps(gate_api)
    assert steps["rollout"][:2] == (False, 412) and steps["rollout"][2]["verdict"] == "fail"
    assert steps["confirm-promotion"][:2] == (False, 412)


def test_strict_get_and_errors_in_the_api_shape(gate_api):
    stored_run(gate_api.store, SHA, "fail", [flips("fail", 0.2)])
    base = f"{gate_api.url}{GATE_PATH}"
    assert http("GET", f"{base}?pair=triage&candidate={SHA}")[0] == 200
    status, body = http("GET", f"{base}?pair=triage&candidate={SHA}&strict=1")
    assert status == 412 and body["verdict"] == "fail" and body["candidate"] == SHA
    status, body = http("GET", f"{base}?pair=triage")
    assert status == 400 and body["error"]["message"].startswith("candidate required")
    status, body = http("GET", f"{base}?pair=triage&candidate=xyz")
    assert status == 400 and "64 hex digits" in body["error"]["message"]
    status, body = http("GET", f"{base}?pair=nope&candidate={SHA}")
    assert status == 404 and body["error"] == {"code": "not_found", "message": "no pair 'nope'; pairs are ['triage']"}
    status, body = http("GET", f"{base}?pair=%0D&candidate={SHA}")   # a pair of white space is a pair not found
    assert status == 404 and body["error"]["message"].startswith("no pair '\\r'")
    status, body = http("GET", f"{base}?pair=triage&candidate={SHA}&strict=maybe")
    assert status == 400 and "strict must be" in body["error"]["message"]
    # a Flagger POST without strict is strict: a webhook that cannot fail would be a silent pass
    assert http("POST", f"{base}", {"metadata": {"pair": "triage", "candidate": SHA}})[0] == 412


@pytest.mark.parametrize("candidate, phase", [("candidate.int8.onnx", "Successful"), ("damaged.int8.onnx", "Failed")])
def test_a_real_revalidation_of_the_example_pair_reaches_argo(tmp_path, candidate, phase):
    """``sentinel revalidate`` on the bundled pair stores a real run; Argo's measurement of the
    file it judged follows it: the int8 candidate rolls on, the damaged one is stopped."""
    import numpy as np

    from sentinel.cli import main
    from sentinel.examples.traffic import ordinary_traffic
    from sentinel.storage import open_store

    from pairs import traffic_lines

    cfg_path = example_config(tmp_path, candidate=candidate,
                              perf={"budget_seconds": 0.2, "warmup_seconds": 0, "memory": False})
    x, _ = ordinary_traffic(np.random.default_rng(3), 400)
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text("\n".join(json.dumps(m) for m in traffic_lines(x)) + "\n")
    main(["revalidate", "--config", str(cfg_path), "--input", str(traffic), "--json"])
    cfg = load_config(cfg_path)
    store = open_store(cfg.store.url)
    try:
        [run] = store.list_runs("triage")
        with served_gate(store, cfg) as served:
            got, body = argo_measure(served, candidate=run["record"]["models"]["candidate"]["sha256"])
    finally:
        store.dispose()
    assert got == phase and body["run"] == run["id"] and body["n"] == 400, body

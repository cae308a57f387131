"""Deployment artefacts: deploy/Dockerfile, deploy/grafana, deploy/prometheus, helm/sentinel.

Real where this machine allows it: promtool checks and unit-tests the rules; a real Prometheus
scrapes Sentinel's real FastAPI /metrics route, evaluates the rules and runs every dashboard query;
the chart is linted and rendered by Helm's own Go engine (helm-python-sdk, offline) and the
rendered sentinel.yaml is validated by Sentinel's parse_config; the Dockerfile's HEALTHCHECK
command runs against the live API. Not real: no image is built (no container engine here) and no
Grafana server runs (the upload script talks to a loopback stand-in of Grafana's HTTP API).
Tools that are missing skip their tests with the reason (pytest -rs prints it).
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml

from sentinel.config import parse_config
from sentinel.metrics import Metrics
from sentinel.testing.broker import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DASHBOARD = ROOT / "deploy" / "grafana" / "sentinel-overview.json"
PROVISION = ROOT / "deploy" / "grafana" / "provision.py"
RULES = ROOT / "deploy" / "prometheus" / "sentinel-rules.yaml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "sentinel-rules.test.yaml"
CHART = ROOT / "helm" / "sentinel"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
SITE_PACKAGES = "/opt/venv/lib/python3.11/site-packages/"
RUNBOOK_BASE = "https://wiki.example.org/runbooks/sentinel"


def exported_metric_names() -> set[str]:
    """The metric families Sentinel exports (sentinel/metrics.py), as Prometheus names them."""
    return {fam.name + ("_total" if fam.type == "counter" else "") for fam in Metrics().registry.collect()}


def metric_names_in(expr: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\bsentinel_[a-z_]+", expr)}


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_commands() -> list[Any]:
    dockerfile = pytest.importorskip("dockerfile", reason="the `dockerfile` parser (PyPI) is not installed")
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def test_dockerfile_installs_cpu_torch_first_runs_as_non_root_and_starts_the_cli():
    cmds = dockerfile_commands()
    stages = [c for c in cmds if c.cmd == "FROM"]
    assert stages and all(c.value[0] == "python:3.11-slim" for c in stages)
    runs = [(i, c.value[0]) for i, c in enumerate(cmds) if c.cmd == "RUN"]
    torch_i = next(i for i, r in runs if "torch==" in r)
    torch_run = dict(runs)[torch_i]
    # the same pin as the Makefile, from the CPU index only (an extra index could pick PyPI's CUDA build)
    make_pin = re.search(r"torch==[0-9.]+", (ROOT / "Makefile").read_text()).group(0)
    assert make_pin in torch_run
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_run and "--extra-index-url" not in torch_run
    pkg_i = next(i for i, r in runs if re.search(r"pip install \.(\s|$)", r))
    assert torch_i < pkg_i, "torch must be installed before the package"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    torch_range = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch"))
    from packaging.specifiers import SpecifierSet
    assert SpecifierSet(torch_range[len("torch"):]).contains("2.13.0+cpu"), torch_range

    # every COPY source from the build context exists (README.md is the package's readme)
    for c in cmds:
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags):
            for src in c.value[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    assert (ROOT / pyproject["project"]["readme"]).exists()

    # the last stage runs as a fixed non-root uid, the one the chart's securityContext uses
    final = cmds[max(i for i, c in enumerate(cmds) if c.cmd == "FROM"):]
    user = [c.value[0] for c in final if c.cmd == "USER"][-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart_values["podSecurityContext"]["runAsUser"] == int(uid)

    entry = next(c for c in final if c.cmd == "ENTRYPOINT")
    assert entry.json and list(entry.value) == ["sentinel"]
    assert pyproject["project"]["scripts"]["sentinel"] == "sentinel.cli:main"
    cmd = next(c for c in final if c.cmd == "CMD")
    assert cmd.json and list(cmd.value) == ["run", "--config", "/etc/sentinel/sentinel.yaml"]
    health = next(c for c in final if c.cmd == "HEALTHCHECK")
    assert health.value[0] == "CMD" and "/healthz" in " ".join(health.value)
    env = next(c for c in final if c.cmd == "ENV" and "SENTINEL_API__LISTEN" in c.value)
    listen = env.value[env.value.index("SENTINEL_API__LISTEN") + 1]
    assert listen.startswith("0.0.0.0:")
    assert f"EXPOSE {listen.rsplit(':', 1)[1]}" in [c.original for c in final]
    # the CLI really parses that command line (without running the daemon)
    from sentinel.cli import build_parser
    args = build_parser().parse_args(list(cmd.value))
    assert args.command == "run" and args.config == "/etc/sentinel/sentinel.yaml"


def healthcheck_argv() -> list[str]:
    health = next(c for c in dockerfile_commands() if c.cmd == "HEALTHCHECK")
    argv = list(health.value[1:])
    assert argv[0] == "python"
    return [sys.executable] + argv[1:]


# ---------------------------------------------------------------------------------------------
# A live Sentinel API (the real FastAPI app and /metrics route) over a real Metrics registry


def populated_metrics() -> Metrics:
    m = Metrics()
    m.messages_consumed.inc(1000)
    m.messages_quarantined.labels("invalid_json").inc(7)
    m.samples_stored.inc(100)
    m.consumer_lag.set(42)
    m.runs.labels("triage", "pass").inc(3)
    m.runs.labels("triage", "fail").inc()
    m.run_duration.observe(2.5)
    m.check_value.labels("triage", "decision_flips", "overall").set(0.176)
    m.check_status.labels("triage", "decision_flips", "overall").set(4)
    m.check_value.labels("triage", "latency_p95", "overall").set(0.8)
    m.check_status.labels("triage", "latency_p95", "overall").set(0)
    for role in ("baseline", "candidate"):
        for q, v in (("p50", 0.0004), ("p95", 0.0007), ("p99", 0.001)):
            m.inference_latency.labels("triage", role, q).set(v)
    m.set_incidents({("triage", "high", "open"): 1, ("triage", "critical", "acknowledged"): 1})
    m.last_run.labels("triage").set(time.time() - 60)
    m.notifications.labels("oncall-webhook", "sent").inc()
    for part in ("broker", "store", "ingest"):
        m.ready.labels(part).set(1)
    return m


@pytest.fixture(scope="module")
def live_api():
    """Sentinel's own create_app() served by uvicorn on a loopback port. The daemon behind it is a
    stand-in exposing what /healthz and /metrics read; the routes and the registry are real."""
    import uvicorn

    from sentinel.api import create_app

    metrics = populated_metrics()
    daemon = SimpleNamespace(cfg=SimpleNamespace(api=SimpleNamespace(public_reads=True, token_env="X", token_file=None)),
                             metrics=metrics, state=SimpleNamespace(value="started"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(daemon), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start in 10 s"
        time.sleep(0.05)
    yield SimpleNamespace(port=port, metrics=metrics)
    server.should_exit = True
    thread.join(10)


def test_dockerfile_healthcheck_command_passes_on_a_live_api_and_fails_without_one(live_api):
    argv = healthcheck_argv()
    env = {**os.environ, "SENTINEL_API__LISTEN": f"0.0.0.0:{live_api.port}"}
    ok = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=20)
    assert ok.returncode == 0, ok.stderr
    env["SENTINEL_API__LISTEN"] = f"0.0.0.0:{free_port()}"   # nothing listens there
    down = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=20)
    assert down.returncode != 0


def test_metrics_route_is_served_without_a_redirect(live_api):
    r = httpx.get(f"http://127.0.0.1:{live_api.port}/metrics", follow_redirects=False, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'sentinel_check_status{check="decision_flips",pair="triage",slice="overall"} 4.0' in r.text


# ---------------------------------------------------------------------------------------------
# Prometheus rules


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool not found: install Debian's `prometheus` package (.ci/run does when apt-get exists)")
    return path


def test_rules_pass_promtool_check_and_unit_tests():
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run([tool, "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent,
                          capture_output=True, text=True, timeout=60)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_rules_use_exported_metrics_and_every_alert_has_a_runbook_and_a_unit_test():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    exported = exported_metric_names()
    for r in rules:
        assert metric_names_in(r["expr"]) <= exported, (r.get("alert") or r.get("record"), metric_names_in(r["expr"]))
    alerts = [r for r in rules if "alert" in r]
    assert {"SentinelCheckFailing", "SentinelConsumerLagHigh", "SentinelNoRecentRuns", "SentinelNotificationsFailing",
            "SentinelQuarantineSpike", "SentinelDown", "SentinelIngestStalled"} <= {a["alert"] for a in alerts}
    docs = (ROOT / "docs" / "deploy.md").read_text().lower()
    tested = {t["alertname"] for case in yaml.safe_load(RULES_TEST.read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    for a in alerts:
        name = a["alert"]
        assert a["labels"]["severity"] in ("critical", "warning")
        assert {"summary", "description", "runbook_url"} <= set(a["annotations"])
        url = a["annotations"]["runbook_url"]
        assert url == f"{RUNBOOK_BASE}#{name.lower()}", url
        assert f"### {name.lower()}" in docs, f"docs/deploy.md has no runbook section for {name}"
        assert name in tested, f"{name} has no firing case in {RULES_TEST.name}"


# ---------------------------------------------------------------------------------------------
# A real Prometheus scraping a real Sentinel /metrics, with the rules loaded


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_targets(dash: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in dash["panels"] if p["type"] != "row" for t in p.get("targets", [])]


def as_promql(expr: str) -> str:
    """A dashboard query as Grafana would send it (all pairs, a 5-minute range)."""
    for var, value in (("$__rate_interval", "1m"), ("$__range", "5m"), ("$__interval", "1m"), ("$pair", ".*"),
                       ("$check", ".*")):
        expr = expr.replace(var, value)
    return expr


@pytest.fixture(scope="module")
def prometheus(live_api, tmp_path_factory):
    binary = shutil.which("prometheus")
    if not binary:
        pytest.skip("prometheus not found: install Debian's `prometheus` package (.ci/run does when apt-get exists)")
    work = tmp_path_factory.mktemp("prometheus")
    (work / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "sentinel", "static_configs": [{"targets": [f"127.0.0.1:{live_api.port}"]}]}],
    }))
    port = free_port()
    log = (work / "prometheus.log").open("w")
    proc = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (work / "prometheus.log").read_text()[-2000:]
            try:
                if client.get("/-/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready in 20 s"
            time.sleep(0.1)
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def query(client: httpx.Client, promql: str) -> list[dict[str, Any]]:
    r = client.get("/api/v1/query", params={"query": promql})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (promql, body)
    return body["data"]["result"]


def wait_for(what: str, fn, timeout: float = 25.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.25)


def test_prometheus_scrapes_sentinel_and_evaluates_the_rules(prometheus, live_api):
    up = wait_for("the sentinel target to be up", lambda: query(prometheus, 'up{job="sentinel"} == 1'))
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{live_api.port}"
    scraped = {s["metric"]["__name__"] for s in
               wait_for("sentinel_* series", lambda: query(prometheus, '{__name__=~"sentinel_.+"}'))}
    exported = exported_metric_names()
    assert exported <= {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in scraped}, exported - scraped

    # rules loaded and healthy
    groups = prometheus.get("/api/v1/rules").json()["data"]["groups"]
    assert {g["name"] for g in groups} == {"sentinel.recording", "sentinel.alerts"}
    # the recording rule needs two scrapes; the failing check (status 4) puts SentinelCheckFailing
    # in pending (its `for` is 1m) with the pair/check/slice labels
    rec = wait_for("sentinel:runs:increase1h", lambda: query(prometheus, "sentinel:runs:increase1h"))
    assert {(s["metric"]["pair"], s["metric"]["status"]) for s in rec} == {("triage", "pass"), ("triage", "fail")}

    def failing_alert():
        alerts = prometheus.get("/api/v1/alerts").json()["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "SentinelCheckFailing"]
    alert = wait_for("SentinelCheckFailing to be pending", failing_alert)
    assert len(alert) == 1 and alert[0]["state"] in ("pending", "firing")
    assert alert[0]["labels"]["check"] == "decision_flips" and alert[0]["labels"]["slice"] == "overall"
    for g in prometheus.get("/api/v1/rules").json()["data"]["groups"]:
        for r in g["rules"]:
            assert r["health"] in ("ok", "unknown"), (r["name"], r.get("lastError"))
    assert not [a for a in prometheus.get("/api/v1/alerts").json()["data"]["alerts"]
                if a["labels"]["alertname"] == "SentinelDown"]


def test_every_dashboard_query_runs_on_prometheus_and_returns_data(prometheus, live_api):
    # a second scrape at least, so rate() and increase() have two points
    wait_for("two scrapes", lambda: query(prometheus, 'count_over_time(up{job="sentinel"}[1m]) >= 2'))
    live_api.metrics.notifications.labels("oncall-webhook", "failed").inc()
    empty = []
    for title, target in dashboard_targets(dashboard()):
        if not query(prometheus, as_promql(target["expr"])):
            empty.append(title)
    # the only series created after the first scrape: give it its second scrape
    if empty:
        time.sleep(2.5)
        empty = [t for t, tg in dashboard_targets(dashboard()) if not query(prometheus, as_promql(tg["expr"]))]
    assert not empty, f"panels with no data on a populated Sentinel: {empty}"
    var = next(v for v in dashboard()["templating"]["list"] if v["name"] == "pair")
    series = prometheus.get("/api/v1/label/pair/values", params={"match[]": "sentinel_runs_total"}).json()["data"]
    assert series == ["triage"], var


# ---------------------------------------------------------------------------------------------
# Grafana dashboard


def test_dashboard_has_the_variables_and_panels_dashboard_users_expect():
    dash = dashboard()
    assert dash["schemaVersion"] >= 38 and dash["uid"] == "sentinel-overview" and dash["id"] is None
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    pair = variables["pair"]
    assert pair["definition"] == "label_values(sentinel_runs_total, pair)"
    assert pair["query"]["query"] == "label_values(sentinel_runs_total, pair)"
    assert pair["multi"] and pair["includeAll"] and pair["allValue"] == ".*"

    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            names = metric_names_in(t["expr"])
            assert names, (p["title"], t["expr"])
            used |= names
            if "pair" in t["expr"] and "{" in t["expr"]:
                assert 'pair=~"$pair"' in t["expr"], (p["title"], t["expr"])
    # every exported metric is on the dashboard, and nothing else
    assert used == exported_metric_names()
    titles = {p["title"]: p for p in panels}
    assert {"Ingest rate", "Quarantine rate by reason", "Consumer lag", "Runs by status", "Run duration",
            "Latest check results", "Check status over time", "Inference latency per role",
            "Open and acknowledged incidents", "Open incidents", "Notifications by outcome",
            "Candidate / baseline latency ratio", "Time since last run"} <= set(titles)
    assert titles["Check status over time"]["type"] == "state-timeline"
    # the check selector filters the check panels; links go to the console's pages
    check = variables["check"]
    assert check["multi"] and check["includeAll"] and "sentinel_check_status" in check["definition"]
    for title in ("Latest check results", "Check status over time", "Check values"):
        assert all('check=~"$check"' in t["expr"] for t in titles[title]["targets"]), title
    assert 'state=~"open|acknowledged"' in titles["Open and acknowledged incidents"]["targets"][0]["expr"]
    assert "sum by (state, severity)" in titles["Open and acknowledged incidents"]["targets"][0]["expr"]
    ratio = titles["Candidate / baseline latency ratio"]["targets"][0]["expr"]
    assert 'role="candidate"' in ratio and 'role="baseline"' in ratio and " / " in ratio
    assert "sentinel_last_run_timestamp_seconds" in titles["Time since last run"]["targets"][0]["expr"]
    urls = [link["url"] for p in panels for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])]
    urls += [link["url"] for link in dash["links"]]
    assert all(u.startswith("${public_url}/") for u in urls) and urls
    assert {u.split("?")[0].split("/")[1] for u in urls} >= {"incidents", "pairs", ""}
    assert any(a.get("target", {}).get("tags") == ["sentinel"] for a in dash["annotations"]["list"])
    assert titles["Latest check results"]["type"] == "table"
    lat = titles["Inference latency per role"]["targets"][0]["expr"]
    assert 'quantile=~"p50|p95|p99"' in lat and "role" in lat
    # panels do not overlap on the 24-column grid
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, p["title"]
        cells |= mine


# ---------------------------------------------------------------------------------------------
# Grafana upload script (grafana-client against a loopback stand-in of Grafana's HTTP API)


def load_provision():
    import importlib.util
    spec = importlib.util.spec_from_file_location("sentinel_grafana_provision", PROVISION)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FakeGrafana(BaseHTTPRequestHandler):
    """The three endpoints provision.py uses, with Grafana's status codes and response shapes."""
    token = "glsa_test"
    folders: list[dict[str, Any]] = []
    requests: list[tuple[str, str, dict[str, str], Any]] = []

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append((method, self.path, dict(self.headers), body))
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            return self._reply(401, {"message": "Unauthorized"})
        if method == "GET" and self.path.startswith("/api/folders"):
            return self._reply(200, self.folders)
        if method == "POST" and self.path == "/api/folders":
            folder = {"uid": "f-new", "title": body["title"], "id": 7}
            self.folders.append(folder)
            return self._reply(200, folder)
        if method == "POST" and self.path == "/api/dashboards/db":
            uid = body["dashboard"]["uid"]
            return self._reply(200, {"id": 1, "uid": uid, "status": "success", "version": 1,
                                     "url": f"/d/{uid}/sentinel-overview", "slug": "sentinel-overview"})
        return self._reply(404, {"message": "Not found"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_grafana():
    FakeGrafana.folders = [{"uid": "f-ops", "title": "Ops", "id": 3}]
    FakeGrafana.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGrafana)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeGrafana
    server.shutdown()
    server.server_close()


def test_provision_presets_the_console_url_every_link_starts_with():
    prov = load_provision()
    payload = prov.build_payload(dashboard(), public_url="https://sentinel.example/")
    var = next(v for v in payload["dashboard"]["templating"]["list"] if v["name"] == "public_url")
    assert var["current"]["value"] == var["query"] == "https://sentinel.example"
    assert next(v for v in dashboard()["templating"]["list"] if v["name"] == "public_url")["query"] != var["query"]


def test_provision_builds_a_payload_that_keeps_the_dashboard_and_sets_the_datasource():
    prov = load_provision()
    dash = dashboard()
    payload = prov.build_payload(dash, folder_uid="f1", overwrite=True, datasource="Prometheus")
    assert payload["folderUid"] == "f1" and payload["overwrite"] is True
    assert payload["dashboard"]["uid"] == dash["uid"] and payload["dashboard"]["id"] is None
    ds = next(v for v in payload["dashboard"]["templating"]["list"] if v["type"] == "datasource")
    assert ds["current"]["value"] == "Prometheus"
    assert dash == dashboard(), "the input dashboard must not be modified"
    assert payload["dashboard"]["panels"] == dash["panels"]
    assert "folderUid" not in prov.build_payload(dash)
    no_var = copy.deepcopy(dash)
    no_var["templating"]["list"] = []
    with pytest.raises(prov.UsageError):
        prov.build_payload(no_var, datasource="Prometheus")


def test_provision_argument_errors_exit_2_without_a_request(tmp_path, capsys):
    prov = load_provision()
    assert prov.main(["--url", "http://127.0.0.1:9"], environ={}) == 2
    assert "GRAFANA_TOKEN" in capsys.readouterr().err
    assert prov.main([], environ={"GRAFANA_TOKEN": "x"}) == 2
    assert prov.main(["--url", "grafana:3000", "--token", "x"], environ={}) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert prov.main(["--url", "http://127.0.0.1:9", "--token", "x", "--dashboard", str(bad)], environ={}) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert prov.main(["--dry-run", "--folder", "Sentinel"], environ={}) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dashboard"]["uid"] == "sentinel-overview" and out["overwrite"] is True


def test_provision_uploads_into_a_new_folder_with_the_token(fake_grafana, capsys):
    url, grafana = fake_grafana
    prov = load_provision()
    code = prov.main(["--url", url, "--folder", "Sentinel", "--datasource", "prom-main"],
                     environ={"GRAFANA_TOKEN": grafana.token})
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "uploaded 'Sentinel overview'" in out.out and grafana.token not in out.out + out.err
    calls = [(m, p.split("?")[0]) for m, p, _, _ in grafana.requests]
    assert calls == [("GET", "/api/folders"), ("POST", "/api/folders"), ("POST", "/api/dashboards/db")]
    body = grafana.requests[-1][3]
    assert body["folderUid"] == "f-new" and body["overwrite"] is True
    assert body["dashboard"]["uid"] == "sentinel-overview" and body["dashboard"]["id"] is None
    # an existing folder is reused, not created again
    grafana.requests.clear()
    assert prov.main(["--url", url, "--token", grafana.token, "--folder", "Ops", "--no-overwrite"], environ={}) == 0
    assert [p for m, p, _, _ in grafana.requests if m == "POST"] == ["/api/dashboards/db"]
    assert grafana.requests[-1][3]["folderUid"] == "f-ops" and grafana.requests[-1][3]["overwrite"] is False


def test_provision_reports_a_refused_token_and_an_unreachable_grafana_with_exit_1(fake_grafana, capsys):
    url, _ = fake_grafana
    prov = load_provision()
    assert prov.main(["--url", url, "--token", "wrong"], environ={}) == 1
    err = capsys.readouterr().err
    assert "401" in err and "wrong" not in err
    assert prov.main(["--url", f"http://127.0.0.1:{free_port()}", "--token", "x", "--timeout", "3"], environ={}) == 1
    assert "cannot reach Grafana" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Helm chart (Helm's Go engine through helm-python-sdk: offline, no helm binary)


@pytest.fixture(scope="module")
def helm():
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk (PyPI) is not installed")
    helm.disable_logging()
    return helm


def ci_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def render(helm, values: dict[str, Any], name: str = "sentinel", namespace: str = "monitoring") -> dict[str, list[dict]]:
    """Rendered manifests by kind."""
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name=name, namespace=namespace)
    by_kind: dict[str, list[dict]] = {}
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            by_kind["NOTES"] = [{"text": text}]
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def one(objs: dict[str, list[dict]], kind: str) -> dict[str, Any]:
    assert len(objs.get(kind, [])) == 1, (kind, list(objs))
    return objs[kind][0]


def rendered_config(objs: dict[str, list[dict]]) -> dict[str, Any]:
    return yaml.safe_load(one(objs, "ConfigMap")["data"]["sentinel.yaml"])


def env_names(objs: dict[str, list[dict]]) -> dict[str, dict]:
    container = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in container or container["env"], "an empty env: renders as null"
    return {e["name"]: e for e in container.get("env", [])}


def env_keys(node: Any) -> set[str]:
    """Every value of a *_env key in a config mapping: the variables the daemon will read."""
    found = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k.endswith("_env") and isinstance(v, str):
                found.add(v)
            found |= env_keys(v)
    elif isinstance(node, list):
        for v in node:
            found |= env_keys(v)
    return found


def test_ci_scenarios_exist(helm):
    assert {p.name for p in CI_VALUES} >= {"default-values.yaml", "postgres-existing-secret-values.yaml",
                                           "servicemonitor-values.yaml"}


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_chart_lints_and_renders_a_valid_sentinel_config(helm, values_file):
    values = ci_values(values_file)
    report = helm.lint(CHART, values, strict=True)
    assert not report["errors"], report
    assert not [m for m in report["messages"] if m["severity"] >= 2], report["messages"]

    objs = render(helm, values)
    cfg = rendered_config(objs)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    env = env_names(objs)
    # the daemon accepts the config as the pod will see it: env overrides applied, secrets present
    pod_env = {name: ("postgresql+psycopg://u:p@db/sentinel" if name == "SENTINEL_STORE__URL" else "x") for name in env}
    parsed = parse_config(cfg, source="/etc/sentinel/sentinel.yaml", base_dir="/etc/sentinel", environ=pod_env)
    assert parsed.api.enabled
    # every secret the config names by *_env is provided (api.token_env only when a token is given)
    provided = bool(values.get("secrets", {}).get("existingSecret") or values.get("secrets", {}).get("apiToken"))
    wanted = env_keys(cfg) | ({parsed.api.token_env} if provided else set())
    assert wanted <= set(env), wanted - set(env)
    for e in env.values():   # secrets only by reference, never as literal values
        assert "value" not in e and e["valueFrom"]["secretKeyRef"]["key"]

    # image, command and paths agree with deploy/Dockerfile
    container = pod["containers"][0]
    assert container["args"] == ["run", "--config", "/etc/sentinel/sentinel.yaml"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/etc/sentinel"] == "config" and mounts["/var/lib/sentinel"] == "data"
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == one(objs, "ConfigMap")["metadata"]["name"]

    # probes hit the API's real endpoints on the port the config listens on
    port = int(parsed.api.listen.rsplit(":", 1)[1])
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    from sentinel.api import create_app
    routes = {r.path for r in create_app(SimpleNamespace(cfg=parsed)).routes}
    assert {"/healthz", "/readyz", "/metrics"} <= routes

    # one daemon (Recreate) unless the scenario runs replicas; Service selects the pods; labels
    # come from _helpers.tpl
    deploy = one(objs, "Deployment")
    replicas = values.get("replicaCount", 1)
    assert deploy["spec"]["replicas"] == replicas
    assert deploy["spec"]["strategy"]["type"] == ("Recreate" if replicas <= 1 else "RollingUpdate")
    svc = one(objs, "Service")
    assert svc["spec"]["selector"].items() <= pod_labels(deploy).items()
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    for kind, docs in objs.items():
        for doc in docs:
            if kind != "NOTES":
                assert doc["metadata"]["namespace"] == "monitoring"
                assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "sentinel", kind
    one(objs, "ServiceAccount")


def pod_labels(deploy: dict[str, Any]) -> dict[str, str]:
    return deploy["spec"]["template"]["metadata"]["labels"]


def test_default_values_run_the_example_pair_shipped_in_the_image_and_turn_optional_resources_off(helm):
    objs = render(helm, {})
    assert set(objs) == {"ConfigMap", "Deployment", "Service", "ServiceAccount", "NOTES"}   # no Secret, PVC, monitors
    cfg = rendered_config(objs)
    assert list(cfg["pairs"]) == ["triage"]
    for role in ("baseline", "candidate"):
        path = cfg["pairs"]["triage"][role]["path"]
        assert path.startswith(SITE_PACKAGES)
        assert (ROOT / path[len(SITE_PACKAGES):]).is_file(), path   # package data the image installs
    assert "python -m venv /opt/venv" in DOCKERFILE.read_text()
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data == {"name": "data", "emptyDir": {}}
    assert "env" not in pod["containers"][0]
    notes = objs["NOTES"][0]["text"]
    assert "SQLite on an emptyDir" in notes and "No API token" in notes and "example pair" in notes


def test_own_pairs_replace_the_example_pair_and_existing_secret_feeds_every_secret_env(helm):
    values = ci_values(CHART / "ci" / "postgres-existing-secret-values.yaml")
    objs = render(helm, values)
    cfg = rendered_config(objs)
    assert list(cfg["pairs"]) == ["fraud"]
    assert "Secret" not in objs and "PersistentVolumeClaim" not in objs
    env = env_names(objs)
    assert set(env) == {"SENTINEL_API_TOKEN", "SENTINEL_KAFKA_PASSWORD", "SENTINEL_WEBHOOK_SECRET",
                        "SENTINEL_WEBHOOK_URL", "SENTINEL_STORE__URL", "SENTINEL_SESSION_SECRET"}
    for e in env.values():
        ref = e["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "sentinel-secrets" and ref["optional"] is True
    assert cfg["kafka"]["sasl_password_env"] == "SENTINEL_KAFKA_PASSWORD"
    # the Secret's store-url reaches the daemon through Sentinel's own env override
    parsed = parse_config(cfg, environ={"SENTINEL_STORE__URL": "postgresql+psycopg://s:pw@pg/sentinel"})
    assert parsed.store.url == "postgresql+psycopg://s:pw@pg/sentinel"
    assert "SQLite" not in objs["NOTES"][0]["text"]


def test_inline_secrets_become_a_chart_secret_and_monitoring_resources_render_when_enabled(helm):
    values = ci_values(CHART / "ci" / "servicemonitor-values.yaml")
    objs = render(helm, values)
    secret = one(objs, "Secret")
    import base64
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"api-token": "test-token", "webhook-secret": "test-hmac-key"}
    env = env_names(objs)
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in env.values()} == {secret["metadata"]["name"]}
    assert "test-token" not in one(objs, "ConfigMap")["data"]["sentinel.yaml"]

    pvc = one(objs, "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert next(v for v in pod["volumes"] if v["name"] == "data")["persistentVolumeClaim"]["claimName"] == \
        pvc["metadata"]["name"]

    sm = one(objs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["port"] == "http" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["spec"]["selector"]["matchLabels"].items() <= one(objs, "Service")["metadata"]["labels"].items()
    # job label = the Service's app.kubernetes.io/name = "sentinel", which SentinelDown selects
    assert sm["spec"]["jobLabel"] == "app.kubernetes.io/name"

    rule = one(objs, "PrometheusRule")
    expected = yaml.safe_load(RULES.read_text().replace(RUNBOOK_BASE, "https://runbooks.example.org/sentinel"))
    assert rule["spec"]["groups"] == expected["groups"]
    urls = [r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert urls and all(u.startswith("https://runbooks.example.org/sentinel#") for u in urls)


def test_chart_rules_file_is_the_deploy_rules_file(helm):
    link = CHART / "files" / "sentinel-rules.yaml"
    assert link.resolve() == RULES.resolve()
    with helm.Chart.load(CHART) as chart:
        files = {f["name"]: f["data"] for f in chart.files}
    import base64
    data = files["files/sentinel-rules.yaml"]
    text = data if data.startswith("#") else base64.b64decode(data).decode()
    assert text == RULES.read_text()


@pytest.mark.parametrize("bad, where", [
    ({"replicaCount": -1}, "/replicaCount"),
    ({"replicaCount": 2}, "/config/store/url"),   # several replicas only with PostgreSQL
    ({"replicas": 1}, "replicas"),
    ({"config": {"api": {"listen": "127.0.0.1:8080"}}}, "/config/api/listen"),
    ({"config": {"api": {"enabled": False}}}, "/config/api/enabled"),
    ({"image": {"repository": ""}}, "/image/repository"),
    ({"secrets": {"apiTokn": "x"}}, "apiTokn"),
])
def test_schema_rejects_unsafe_or_misspelt_values(helm, bad, where):
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmError) as err:
            chart.render(bad, name="sentinel", namespace="monitoring")
    assert where in str(err.value)

"""The CLI as users call it: exit codes, one-line errors, and a damaged candidate that opens
exactly one incident over two runs with exactly one webhook delivery."""
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import yaml

from sentinel.cli import main
from sentinel.examples.traffic import ordinary_traffic

from pairs import EXAMPLE, example_config, traffic_lines


def run_cli(*args):
    p = subprocess.run([sys.executable, "-m", "sentinel", *map(str, args)], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def receiver():
    got = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append({"headers": dict(self.headers), "body": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook", got
    srv.shutdown()


def write_traffic(tmp_path, n=400, seed=1):
    x, _ = ordinary_traffic(np.random.default_rng(seed), n)
    path = tmp_path / f"traffic-{seed}.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in traffic_lines(x, prefix=f"s{seed}-")) + "\n")
    return path


def test_damaged_candidate_opens_one_incident_over_two_runs_and_one_delivery(tmp_path, receiver, capsys):
    url, got = receiver
    cfg = example_config(tmp_path, candidate="damaged.int8.onnx",
                         notifiers={"oncall": {"type": "webhook", "url": url}})
    assert main(["revalidate", "--config", str(cfg), "--input", str(write_traffic(tmp_path, seed=1))]) == 1
    out = capsys.readouterr().out
    assert "decision_flips" in out and "FAIL" in out
    assert main(["revalidate", "--config", str(cfg), "--input", str(write_traffic(tmp_path, seed=2))]) == 1
    capsys.readouterr()
    assert main(["incidents", "list", "--config", str(cfg), "--json"]) == 0
    incidents = json.loads(capsys.readouterr().out)
    flips = [i for i in incidents if i["check"] == "decision_flips"]      # slices grouped: one per check
    assert "overall" in flips[0]["slices"]
    assert len(flips) == 1 and flips[0]["occurrences"] == 2 and flips[0]["state"] == "open"
    opened = [g for g in got if g["body"]["incident"]["id"] == flips[0]["id"]]
    assert len(opened) == 1 and opened[0]["body"]["event"] == "opened"
    assert len({g["headers"]["Idempotency-Key"] for g in got}) == len(got)  # one delivery per incident
    assert len(got) == len(incidents)


def test_healthy_candidate_passes_and_exits_zero(tmp_path, capsys):
    cfg = example_config(tmp_path, checks=[{"type": "decision_flips", "warn": 0.02, "fail": 0.05, "min_samples": 100}])
    assert main(["revalidate", "--config", str(cfg), "--input", str(write_traffic(tmp_path, n=300))]) == 0
    out = capsys.readouterr().out
    assert "status PASS" in out
    run_id = int(out.split()[1])
    assert main(["report", "--config", str(cfg), str(run_id)]) == 0
    report = capsys.readouterr().out.strip()
    assert report.endswith(".html") and "decision_flips" in open(report).read()
    assert main(["replay", "--config", str(cfg), str(run_id)]) == 0   # same samples, same verdicts


def test_run_records_reproducibility(tmp_path, capsys):
    cfg = example_config(tmp_path)
    traffic = write_traffic(tmp_path, n=150)
    main(["revalidate", "--config", str(cfg), "--input", str(traffic), "--json"])
    run = json.loads(capsys.readouterr().out)[0]
    from sentinel.config import load_config
    from sentinel.storage import open_store

    rec = open_store(load_config(cfg).store.url).get_run(run["run_id"])["record"]
    import hashlib
    assert rec["models"]["candidate"]["sha256"] == hashlib.sha256((EXAMPLE / "candidate.int8.onnx").read_bytes()).hexdigest()
    assert rec["config_hash"] == load_config(cfg).config_hash()
    assert rec["samples"]["sha256"] == hashlib.sha256(traffic.read_bytes()).hexdigest()
    assert rec["samples"]["count"] == 150 and "torch" in rec["packages"] and "seeds" in rec


@pytest.mark.parametrize("case", ["misspelt_key", "missing_model", "wrong_classes", "unknown_runtime"])
def test_config_errors_are_one_line_and_exit_2(tmp_path, case):
    cfg = example_config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    pair = raw["pairs"]["triage"]
    if case == "misspelt_key":
        raw["samplng"] = {"rate": 0.5}
        expect = "samplng: unknown key (did you mean 'sampling'?)"
    elif case == "missing_model":
        pair["candidate"]["path"] = str(tmp_path / "gone.onnx")
        expect = "pairs.triage.candidate.path: model file not found"
    elif case == "wrong_classes":
        pair["classes"] = ["a", "b", "c"]
        pair["critical_classes"] = ["a"]
        expect = "outputs 2 values per row but pairs.triage.classes lists 3 classes"
    else:
        pair["baseline"]["runtime"] = "tensorflow"
        expect = "pairs.triage.baseline"
    cfg.write_text(yaml.safe_dump(raw))
    commands = [["validate", cfg], ["revalidate", "--config", cfg]]
    if case == "missing_model":
        commands.append(["run", "--config", cfg])
    for cmd in commands:
        code, out, err = run_cli(*cmd)
        assert code == 2, (cmd, out, err)
        # the daemon's own JSON log lines may precede the error; the error itself is one line
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("{")]
        assert len(lines) == 1 and expect in lines[0] and str(cfg) in lines[0], err


def test_validate_accepts_a_good_config(tmp_path):
    code, out, err = run_cli("validate", example_config(tmp_path))
    assert code == 0 and "ok" in out, err


def test_the_shipped_example_config_is_valid():
    from pathlib import Path

    code, out, err = run_cli("validate", Path(__file__).parent.parent / "deploy" / "sentinel.example.yaml")
    assert code == 0, err


REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_shipped_escalation_policy_validates_against_its_config():
    # run from the repo root, as a user would: the policy's config is found by its `escalation:` key
    p = subprocess.run([sys.executable, "-m", "sentinel", "validate", "alerts/escalation.yaml"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "alerts/escalation.yaml: ok (2 escalation policies)" in p.stdout, p.stderr
    assert "not checked" not in p.stdout
    code, out, err = run_cli("validate", "--no-models", REPO / "deploy/sentinel.incidents.example.yaml")
    assert code == 0 and "2 escalation policies" in out, err


def test_incidents_silence_cli(tmp_path, capsys):
    from sentinel.checks.base import CheckResult
    from sentinel.config import load_config
    from sentinel.incidents import IncidentEngine
    from sentinel.storage import open_store

    cfg = example_config(tmp_path)
    store = open_store(load_config(cfg).store.url)
    [ch] = IncidentEngine(store, targets=[]).process_run("triage", store.create_run("triage", "t", {}), [
        CheckResult("decision_flips", "overall", "fail", 0.2, 500, "flip rate = 0.2", 0.02, 0.05)])
    args = ["incidents", "silence", "--config", str(cfg)]
    assert main([*args, "--match", "pair=triage", "--for", "2h", "--author", "alice", "--reason", "retraining"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("silence 1 active until ") and f"silenced incidents #{ch.incident_id}" in out
    assert main(["incidents", "list", "--config", str(cfg), "--state", "silenced", "--json"]) == 0
    assert [i["id"] for i in json.loads(capsys.readouterr().out)] == [ch.incident_id]
    assert main([*args, "--list"]) == 0 and "by alice: pair=triage  (retraining)" in capsys.readouterr().out
    assert main([*args, "--expire", "1", "--author", "alice"]) == 0
    capsys.readouterr()
    assert main(["incidents", "show", "--config", str(cfg), str(ch.incident_id)]) == 0
    shown = capsys.readouterr().out
    assert "open" in shown.splitlines()[0] and "silenced by alice" in shown and "unsilenced by alice" in shown
    for bad, expect in [(["--match", "pair~x", "--for", "1h", "--reason", "r"], "expected NAME=VALUE"),
                        (["--match", "pair=x", "--reason", "r"], "--for DURATION is required"),
                        (["--match", "pair=x", "--for", "1h"], "needs a reason"),
                        (["--expire", "99"], "no silence with id 99")]:
        assert main([*args, *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], err
    store.dispose()

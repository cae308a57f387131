"""``sentinel incidents show`` prints the notes (the resolve note too) and each notification under
the event it announced, never ``None``; ``--state`` takes every documented state (``reopened``
too); ``sentinel replay`` names the config keys and the models that changed since the run."""
import hashlib
import json

import numpy as np

from sentinel.checks.base import CheckResult
from sentinel.cli import main
from sentinel.config import load_config
from sentinel.examples.traffic import ordinary_traffic
from sentinel.incidents import IncidentEngine
from sentinel.incidents import engine as engine_module
from sentinel.cli import incidents as cli_incidents
from sentinel.storage import open_store

from pairs import EXAMPLE, example_config, traffic_lines


def failing(value=0.2):
    return [CheckResult("decision_flips", "overall", "fail", value, 500, "flip rate = 0.2", 0.02, 0.05)]


def test_show_prints_notes_and_deliveries_per_event_and_list_takes_reopened(tmp_path, capsys):
    cfg = example_config(tmp_path)
    store = open_store(load_config(cfg).store.url)
    engine = IncidentEngine(store, targets=["ops"], reopen_window=3600)
    [ch] = engine.process_run("triage", store.create_run("triage", "t", {}), failing())
    iid = str(ch.incident_id)
    assert main(["incidents", "ack", "--config", str(cfg), iid, "--actor", "alice", "--note", "looking at eu"]) == 0
    assert main(["incidents", "resolve", "--config", str(cfg), iid, "--actor", "bob",
                 "--note", "rolled back to the baseline"]) == 0
    capsys.readouterr()
    assert main(["incidents", "show", "--config", str(cfg), iid]) == 0
    shown = capsys.readouterr().out
    assert "None" not in shown, shown
    assert "note: looking at eu" in shown and "note: rolled back to the baseline" in shown
    lines = shown.splitlines()
    opened = next(i for i, line in enumerate(lines) if " opened by sentinel" in line)
    assert "> opened to ops: pending" in lines[opened + 1], shown          # the delivery under its event
    acked = next(i for i, line in enumerate(lines) if " ack" in line and "by alice" in line)
    assert "(open -> acknowledged" in lines[acked] and "> acknowledged to ops" in "\n".join(lines[acked:acked + 3])
    assert ".%f" not in shown and not any(":" in w and "." in w.split(":")[-1] for w in shown.split() if w[:2] == "20")

    # a failure within the reopen window reopens it: `--state reopened` finds it, as README says
    engine.process_run("triage", store.create_run("triage", "t", {}), failing())
    assert main(["incidents", "list", "--config", str(cfg), "--state", "reopened", "--json"]) == 0
    assert [i["id"] for i in json.loads(capsys.readouterr().out)] == [ch.incident_id]
    assert main(["incidents", "list", "--config", str(cfg), "--state", "resolved", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert cli_incidents.LIST_STATES == engine_module.LIST_STATES
    from sentinel.incidents import matchers
    assert cli_incidents.LABELS == matchers.LABELS       # the silence --help names every label
    store.dispose()


def test_replay_names_the_changed_config_keys_and_model_hashes(tmp_path, capsys):
    x, _ = ordinary_traffic(np.random.default_rng(3), 200)
    traffic = tmp_path / "t.jsonl"
    traffic.write_text("\n".join(json.dumps(m) for m in traffic_lines(x)) + "\n")
    checks = [{"type": "decision_flips", "warn": 0.02, "fail": 0.05, "min_samples": 50}]
    cfg = example_config(tmp_path, checks=checks, perf={"enabled": False})
    assert main(["revalidate", "--config", str(cfg), "--input", str(traffic)]) == 0
    run_id = capsys.readouterr().out.split()[1]
    cfg = example_config(tmp_path, checks=checks, perf={"enabled": False}, candidate="damaged.int8.onnx",
                         sampling={"rate": 0.5, "window": 100000})
    main(["replay", "--config", str(cfg), run_id])
    out = capsys.readouterr().out
    sha = lambda name: hashlib.sha256((EXAMPLE / name).read_bytes()).hexdigest()[:12]
    assert "models DIFFER; config DIFFERS" in out
    assert f"model candidate: sha256 {sha('candidate.int8.onnx')} -> {sha('damaged.int8.onnx')}" in out, out
    assert "damaged.int8.onnx" in out and "model baseline" not in out
    assert "config keys changed since the run: pairs.triage.candidate.path, sampling.rate" in out, out

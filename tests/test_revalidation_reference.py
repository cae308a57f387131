"""The reference window's model outputs are kept per (reference samples, model files) in the
revalidator: a daemon whose runs keep comparing with the same accepted window (its later runs
failed, so they do not become the reference) does not run both models over it again; a new
reference window is run through them."""
import json

import numpy as np

from sentinel.app import build
from sentinel.config import load_config
from sentinel.examples.traffic import drifted_traffic, ordinary_traffic
from sentinel.revalidation import read_input_file

from pairs import example_config, traffic_lines

CHECKS = [{"type": "decision_flips", "warn": 0.02, "fail": 0.05, "min_samples": 50},
          {"type": "prediction_drift", "min_samples": 50}]


def run(reval, tmp_path, app, name, x):
    got, source = samples(tmp_path, app, name, x)
    return reval.run("triage", trigger="cli", samples=got, source=source)


def samples(tmp_path, app, name, x):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in traffic_lines(x, prefix=f"{name}-")) + "\n")
    by_pair, source, _ = read_input_file(str(path), {"triage": app.pairs["triage"].shape})
    return by_pair["triage"], source


def test_the_same_reference_window_is_not_run_through_the_models_again(tmp_path):
    app = build(load_config(example_config(tmp_path, checks=CHECKS, perf={"enabled": False})))
    reval = app.revalidator
    rng = np.random.default_rng(5)
    first = run(reval, tmp_path, app, "a", ordinary_traffic(rng, 400)[0])
    assert first.status in ("pass", "warn", "insufficient_data")
    outs = []
    for name in ("b", "c"):     # drifted traffic near the boundary: decision flips fail, not accepted
        o = run(reval, tmp_path, app, name, drifted_traffic(rng, 400)[0])
        assert o.status == "fail" and o.record["reference"]["run_ids"] == [first.run_id]
        outs.append(reval._reference_cache["triage"][1])
    assert outs[0] is outs[1]          # the second run reused the first one's outputs on the reference
    healthy = run(reval, tmp_path, app, "d", ordinary_traffic(rng, 400)[0])
    assert healthy.record["reference"]["run_ids"] == [first.run_id]
    assert reval._reference_cache["triage"][1] is outs[0]
    latest = run(reval, tmp_path, app, "e", ordinary_traffic(rng, 400)[0])   # reference: run "d" now
    assert latest.record["reference"]["run_ids"] == [healthy.run_id]
    assert reval._reference_cache["triage"][1] is not outs[0]

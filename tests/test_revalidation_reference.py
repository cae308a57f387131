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


def stored(app, name, x, offset):
    """``x`` stored as the daemon stores traffic (no labels in the messages)."""
    from sentinel.daemon import read_batch
    from sentinel.sampling import Sampler
    from sentinel.sources.base import RawRecord
    records = [RawRecord("traffic", 0, offset + i, None, json.dumps(m).encode(), None)
               for i, m in enumerate(traffic_lines(x, prefix=f"{name}-"))]
    b = read_batch(records, {"triage": app.pairs["triage"].shape}, Sampler(rate=1.0, seed=0), None)
    app.store.ingest(b.samples, b.labels, b.bad, window=100000, rate=1.0)


def test_an_accepted_window_is_the_next_runs_reference_without_being_read_or_run_again(tmp_path, monkeypatch):
    """The daemon's next run compares with the window its last accepted run claimed: those
    samples (decoded) and both models' outputs on them are kept from that run, so the store is
    read for the new window only and the models run on it only; the results are those of a
    revalidator that reads and runs everything afresh."""
    app = build(load_config(example_config(tmp_path, checks=CHECKS, perf={"enabled": False})))
    reval, store = app.revalidator, app.store
    rng = np.random.default_rng(7)
    stored(app, "a", ordinary_traffic(rng, 400)[0], 0)
    first = reval.run("triage")
    assert first.status in ("pass", "warn", "insufficient_data") and store.accepted_runs("triage") == [first.run_id]
    stored(app, "b", ordinary_traffic(rng, 400)[0], 1000)
    reads, rows_run = [], []
    read, paired_run = store.run_samples, type(reval._paired(app.pairs["triage"])).run
    monkeypatch.setattr(store, "run_samples", lambda run_id, pair=None: reads.append(run_id) or read(run_id, pair))
    monkeypatch.setattr(type(reval._paired(app.pairs["triage"])), "run",
                        lambda self, x, batch_size: rows_run.append(len(x)) or paired_run(self, x, batch_size))
    second = reval.run("triage")
    assert second.record["reference"]["run_ids"] == [first.run_id]
    assert reads == [second.run_id]                   # the new window only
    assert rows_run[0] == 400 and rows_run.count(400) == 1, rows_run   # the models ran on the new window only
    monkeypatch.undo()
    fresh = build(load_config(example_config(tmp_path, checks=CHECKS, perf={"enabled": False}))).revalidator
    again = fresh.evaluate(fresh.pairs["triage"], store.run_samples(second.run_id), before_run=second.run_id)
    assert [(r.check, r.slice, r.status, r.value) for r in again] == \
        [(r.check, r.slice, r.status, r.value) for r in second.results]


def test_labels_joined_after_a_window_was_kept_are_in_the_next_reference(tmp_path):
    """A kept window's samples never change, but labels arriving later (the labels topic) join
    them: the next run's reference has them, as a revalidator reading the store afresh would."""
    from sentinel.storage.repository import LabelIn
    app = build(load_config(example_config(tmp_path, checks=CHECKS, perf={"enabled": False})))
    reval, store = app.revalidator, app.store
    rng = np.random.default_rng(8)
    stored(app, "a", ordinary_traffic(rng, 300)[0], 0)
    first = reval.run("triage")
    classes = app.pairs["triage"].classes
    late = [LabelIn(f"a-{i}", classes[i % 2], "labels", 0, i) for i in range(0, 300, 3)]
    store.ingest([], late, [], window=100000, rate=1.0)
    stored(app, "b", ordinary_traffic(rng, 300)[0], 1000)
    assert first.run_id in reval._windows["triage"]      # kept, and read again for its labels only
    window = store.claim_window("triage", store.create_run("triage", "manual", {}))
    loaded = app.pairs["triage"]
    kept = reval.build_data(loaded, window, measure=False).reference
    fresh = build(load_config(example_config(tmp_path, checks=CHECKS, perf={"enabled": False}))).revalidator
    read = fresh.build_data(fresh.pairs["triage"], window, measure=False).reference
    assert kept.source["run_ids"] == read.source["run_ids"] == [first.run_id]
    assert list(kept.labels) == list(read.labels) and sum(v is not None and v >= 0 for v in kept.labels) == 100


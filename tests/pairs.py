"""Configs for the bundled example pair, written the way a user would write them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from sentinel.examples.traffic import load_example_pair_dir

EXAMPLE = load_example_pair_dir()


def example_config(tmp_path: Path, *, candidate: str = "candidate.int8.onnx", bootstrap: str = "127.0.0.1:1",
                   topic: str = "traffic", store_url: str | None = None, **overrides: Any) -> Path:
    meta = json.loads((EXAMPLE / "meta.json").read_text())
    cfg: dict[str, Any] = {
        "store": {"url": store_url or f"sqlite:///{tmp_path}/sentinel.db"},
        "kafka": {"bootstrap_servers": [bootstrap], "topic": topic, "group_id": f"g-{topic}",
                  "session_timeout_ms": 6000, "heartbeat_interval_ms": 2000, "poll_timeout_ms": 200},
        "pairs": {"triage": {
            "baseline": {"path": str(EXAMPLE / "baseline.pt2"), "runtime": "torch", "threads": 1},
            "candidate": {"path": str(EXAMPLE / candidate), "runtime": "onnxruntime", "threads": 1},
            "classes": meta["classes"], "critical_classes": meta["critical_classes"]}},
        "sampling": {"rate": 1.0, "window": 100000},
        "revalidation": {"interval_seconds": 3600},
        "reports_dir": str(tmp_path / "reports"),
        # a short timing budget keeps tests fast; the default (4 s) is sized by `make bench-perf`
        "perf": {"budget_seconds": 0.5, "warmup_seconds": 0.05},
        "api": {"enabled": False},
        "logging": {"level": "INFO", "format": "json"},
    }
    for key, value in overrides.items():
        cfg[key] = value
    path = tmp_path / "sentinel.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def traffic_lines(x, prefix: str = "r") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i}", "inputs": [float(v) for v in row], "attributes": {"region": "eu" if i % 2 else "us"}}
            for i, row in enumerate(x)]

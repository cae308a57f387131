#!/usr/bin/env python
"""``make bench-models``: what each kind of model costs Sentinel (a benchmark, not a timed test).

Per example pair, one per model kind (``triage``: tabular MLP, one float input; ``support``:
MiniLM text classifier, ``input_ids`` + ``attention_mask`` int64 of variable length, raw-text
messages; ``digits``: CNN, NCHW float image):

* inference rows/s per role at the pair's serving batch size, straight through onnxruntime /
  torch ("plain") and through Sentinel's runners (``load_runner(...).predict_proba``);
* decode + store messages/s: the daemon's ``read_batch`` then ``Store.ingest`` into SQLite;
* stored bytes per sample (the ``samples.inputs`` column) vs the raw array bytes of its inputs;
* revalidation wall time of ``sentinel revalidate --input`` on 2,000 and 10,000 messages with the
  pair's full suite (``checks/triage.yaml``, ``checks/support/suite.yaml``,
  ``checks/digits/suite.yaml``), run twice: the first run becomes the reference, the second (timed,
  with every drift check comparing) is the figure.

A step that the installed Sentinel cannot do yet prints ``n/a`` and the reason in the table, so
the benchmark runs whatever works. ``--kinds triage,digits`` limits the kinds, ``--sizes 2000``
the revalidation sizes, ``--quick`` skips revalidation. The support pair is built into
``$SENTINEL_CACHE/examples/support`` first when missing (~1.5 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sentinel.examples import demos  # noqa: E402

KINDS = ("triage", "support", "digits")
SUITES = {"triage": "checks/triage.yaml", "support": "checks/support/suite.yaml", "digits": "checks/digits/suite.yaml"}
INFER_SECONDS = 3.0       # per role and path: enough batches for a stable rate, little enough for 2 cores
DECODE_MESSAGES = 2000


@dataclass
class Kind:
    name: str
    ex: demos.DemoExample
    messages: Callable[[int, int], list[dict[str, Any]]]   # (n, seed) -> traffic messages with labels
    batch: Callable[[list[dict[str, Any]]], dict[str, np.ndarray]]   # messages -> model batch (plain path)


def _triage() -> Kind:
    ex = demos.triage()

    def messages(n: int, seed: int) -> list[dict[str, Any]]:
        return [{**m, "model": "triage", "label": lab} for m, lab in ex.batch(np.random.default_rng(seed), 0, n, False)]

    return Kind("triage", ex, messages, lambda ms: {"features": np.array([m["inputs"] for m in ms], np.float32)})


def _digits() -> Kind:
    from sentinel.examples.digits import traffic_messages
    ex = demos.digits()
    return Kind("digits", ex, lambda n, seed: traffic_messages(np.random.default_rng(seed), n),
                lambda ms: {"image": np.array([m["inputs"]["image"] for m in ms], np.float32)})


def _support() -> Kind:
    from sentinel.examples import support
    from sentinel.examples.support_build import batches, load_tokenizer
    ex = demos.support(say=lambda msg: print(msg, flush=True))
    tok = load_tokenizer(Path(ex.pair["text"]["tokenizer"]))

    def batch(ms: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        ids, mask = next(batches(tok, [m["text"] for m in ms], size=len(ms)))
        return {"input_ids": ids, "attention_mask": mask}

    return Kind("support", ex, lambda n, seed: support.traffic_messages(np.random.default_rng(seed), n), batch)


def _rate(fn: Callable[[], int], seconds: float = INFER_SECONDS) -> float:
    fn()   # first call: session / graph set-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += fn()
    return n / (time.perf_counter() - t0)


def plain_rows_per_s(kind: Kind, role: str) -> float:
    """Rows/s straight through onnxruntime or torch, one thread, at the serving batch size."""
    spec = kind.ex.pair[role]
    b = kind.batch(kind.messages(kind.ex.pair["batch_size"], 1))
    n = len(next(iter(b.values())))
    if spec["runtime"] == "onnxruntime":
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(spec["path"], opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        feed = dict(zip(names, b.values())) if len(names) == len(b) else b
        return _rate(lambda: (sess.run(None, feed), n)[1])
    import torch
    torch.set_num_threads(1)
    mod = torch.export.load(spec["path"]).module()
    args = [torch.from_numpy(v) for v in b.values()]

    def call() -> int:
        with torch.inference_mode():
            mod(*args)
        return n
    return _rate(call)


def runner_rows_per_s(kind: Kind, role: str) -> float:
    """Rows/s through Sentinel's runner (what the daemon executes)."""
    from sentinel.runners import load_runner
    spec = kind.ex.pair[role]
    options = {k: spec[k] for k in ("output_name", "embedding_output") if k in spec}
    r = load_runner(Path(spec["path"]), runtime=spec["runtime"], role=role, threads=1, **options)
    b = kind.batch(kind.messages(kind.ex.pair["batch_size"], 1))
    x: Any = next(iter(b.values())) if len(b) == 1 else b
    n = len(next(iter(b.values())))
    try:
        return _rate(lambda: (r.predict_proba(x), n)[1])
    finally:
        r.close()


def config(kind: Kind, work: Path, *, suite: bool) -> Path:
    """A daemon config for the pair (the demo's, with the good candidate), optionally its suite."""
    import yaml
    pair = json.loads(json.dumps(kind.ex.pair))
    pair["candidate"]["path"] = pair["candidate"]["path"].replace("damaged.int8.onnx", "candidate.int8.onnx")
    cfg: dict[str, Any] = {
        "store": {"url": f"sqlite:///{work / 'bench.db'}"},
        "kafka": {"bootstrap_servers": ["127.0.0.1:1"], "topic": "traffic"},
        "pairs": {kind.name: pair},
        "sampling": {"rate": 1.0, "window": 100000},
        "revalidation": {"interval_seconds": 3600},
        "perf": {"budget_seconds": 1.0, "accepted_models_dir": str(work / "accepted")},
        "reports_dir": str(work / "reports"),
        "api": {"enabled": False},
        "logging": {"level": "WARNING", "format": "json"},
    }
    if suite:
        cfg["suites"] = [str(REPO / SUITES[kind.name])]
    path = work / "sentinel.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def decode_and_store(kind: Kind, work: Path) -> tuple[float, float, float]:
    """(messages/s decoded and stored, stored bytes per sample, raw array bytes per sample)."""
    from sqlalchemy import func, select

    from sentinel.config import load_config
    from sentinel.daemon import read_batch
    from sentinel.revalidation import load_pair
    from sentinel.sampling import Sampler
    from sentinel.sources.base import RawRecord
    from sentinel.storage.repository import open_store
    from sentinel.storage.tables import samples

    cfg = load_config(config(kind, work, suite=False))
    shapes = {kind.name: load_pair(cfg, kind.name).shape}
    msgs = kind.messages(DECODE_MESSAGES, 2)
    records = [RawRecord("traffic", 0, i, None, json.dumps(m).encode(), None) for i, m in enumerate(msgs)]
    store = open_store(cfg.store.url)
    sampler = Sampler(rate=1.0, seed=0)
    t0 = time.perf_counter()
    for lo in range(0, len(records), 500):
        b = read_batch(records[lo:lo + 500], shapes, sampler, None)
        store.ingest(b.samples, b.labels, b.bad, window=100000, rate=1.0, not_sampled=b.not_sampled)
    rate = len(records) / (time.perf_counter() - t0)
    with store.engine.connect() as conn:
        n, stored = conn.execute(select(func.count(), func.sum(func.length(samples.c.inputs)))).one()
    raw = sum(a.nbytes for a in kind.batch(msgs[:1]).values())   # one row, no padding
    store.dispose()
    return rate, (stored or 0) / max(n, 1), float(raw)


def revalidation_seconds(kind: Kind, work: Path, n: int) -> float:
    """Wall time of the second of two ``sentinel revalidate --input`` runs on ``n`` messages (the
    first, of the good candidate, passes and so becomes the second's ``last_accepted`` reference)."""
    cfg = config(kind, work, suite=True)
    seconds = 0.0
    for seed in (10, 11):
        path = work / f"traffic-{n}-{seed}.jsonl"
        path.write_text("".join(json.dumps(m) + "\n" for m in kind.messages(n, seed)))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "sentinel", "revalidate", "--config", str(cfg), "--input", str(path)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        seconds = time.perf_counter() - t0
        if proc.returncode == 2:
            raise RuntimeError(" ".join((proc.stderr or proc.stdout).strip().splitlines()[-1:]))
    return seconds


def attempt(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    try:
        return fn(), None
    except Exception as exc:   # noqa: BLE001 - a step the installed Sentinel cannot do yet is reported, not fatal
        return None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:90]}"


def measure(kind: Kind, sizes: list[int], quick: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": kind.name, "batch": kind.ex.pair["batch_size"], "notes": []}
    for role in ("baseline", "candidate"):
        for path, fn in (("plain", plain_rows_per_s), ("runner", runner_rows_per_s)):
            row[f"{role}_{path}"], why = attempt(lambda: fn(kind, role))
            if why:
                row["notes"].append(f"{role} {path}: {why}")
    with tempfile.TemporaryDirectory() as work:
        got, why = attempt(lambda: decode_and_store(kind, Path(work)))
    row["decode_store"], row["stored_bytes"], row["raw_bytes"] = got or (None, None, None)
    if why:
        row["notes"].append(f"decode+store: {why}")
    for n in ([] if quick else sizes):
        with tempfile.TemporaryDirectory() as work:
            row[f"reval_{n}"], why = attempt(lambda: revalidation_seconds(kind, Path(work), n))
        if why:
            row["notes"].append(f"revalidate {n}: {why}")
    return row


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def print_table(rows: list[dict[str, Any]], sizes: list[int]) -> None:
    head = ["kind", "batch", "base plain", "base runner", "cand plain", "cand runner", "decode+store",
            "bytes/sample", "raw bytes"] + [f"reval {n:,}" for n in sizes]
    print("rows/s and messages/s; bytes of samples.inputs per stored sample; revalidation wall seconds")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        cells = [r["kind"], str(r["batch"]), *(_fmt(r.get(k), ",.0f") for k in
                 ("baseline_plain", "baseline_runner", "candidate_plain", "candidate_runner", "decode_store")),
                 _fmt(r["stored_bytes"], ",.0f"), _fmt(r["raw_bytes"], ",.0f"),
                 *(_fmt(r.get(f"reval_{n}"), ".1f") for n in sizes)]
        print(" | ".join(cells))
    for r in rows:
        for note in r["notes"]:
            print(f"  {r['kind']}: n/a {note}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--sizes", default="2000,10000")
    ap.add_argument("--quick", action="store_true", help="skip the revalidation timings")
    args = ap.parse_args(argv)
    makers = {"triage": _triage, "support": _support, "digits": _digits}
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = []
    for name in args.kinds.split(","):
        t0 = time.monotonic()
        rows.append(measure(makers[name](), sizes, args.quick))
        print(f"[{name}: measured in {time.monotonic() - t0:.0f}s]", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings scale with it)")
    print_table(rows, [] if args.quick else sizes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``sentinel replay RUN_ID``: re-run a stored run's checks on the same samples and compare."""
from __future__ import annotations

import argparse
from typing import Any

from ..checks.perf import TIMING_TYPES
from ..errors import ConfigError, NotFoundError
from .common import EXIT_FAILED, EXIT_OK, app_of, config_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="re-run the checks of a stored run on the same samples and compare")
    config_arg(p)
    p.add_argument("run_id", type=int)


def model_differences(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``candidate: sha256 3f2a9c01b2d4 -> 77e0aa13c9f8 (path models/a.onnx -> models/b.onnx)`` for
    each role whose file, hash or runtime changed since the run."""
    out = []
    for role in sorted(set(then) | set(now)):
        a, b = then.get(role) or {}, now.get(role) or {}
        if a == b:
            continue
        parts = [f"sha256 {str(a.get('sha256') or '-')[:12]} -> {str(b.get('sha256') or '-')[:12]}"]
        parts += [f"{k} {a.get(k) or '-'} -> {b.get(k) or '-'}" for k in ("path", "runtime") if a.get(k) != b.get(k)]
        out.append(f"{role}: {parts[0]}" + (f" ({', '.join(parts[1:])})" if parts[1:] else ""))
    return out


def config_difference(rec: dict[str, Any], cfg: Any) -> str:
    """Which config keys changed since the run (from the record's per-key hashes)."""
    from ..record import config_changes, config_keys

    if not rec.get("config_keys"):
        return "differs; this run's record has no per-key hashes (recorded before they were), so the keys are unknown"
    keys = config_changes(rec["config_keys"], config_keys(cfg))
    shown = ", ".join(keys[:20]) + (f" and {len(keys) - 20} more" if len(keys) > 20 else "")
    return f"keys changed since the run: {shown}" if keys else "differs only in formatting (every key's value is the same)"


def run(args: argparse.Namespace) -> int:
    """Re-evaluate a run's stored samples with the configured models; prints old vs new status and
    whether the model hashes and config hash still match the run's record."""
    from ..revalidation import run_samples

    app, run_id = app_of(args), args.run_id
    cfg, store = app.cfg, app.store
    run = store.get_run(run_id)
    if run is None:
        raise NotFoundError("run", run_id)
    if run["pair"] not in cfg.pairs:
        raise ConfigError(cfg.source, "pairs", f"run {run_id} is for pair {run['pair']!r}, not in this config")
    loaded = app.pair(run["pair"])
    samples = run_samples(store, run, loaded.shape)
    rec = run["record"]
    results = app.evaluator(run["pair"]).evaluate(
        loaded, samples, before_run=run_id, reference_runs=(rec.get("reference") or {}).get("run_ids"))
    same_models = rec.get("models", {}) == loaded.hashes
    same_config = rec.get("config_hash") == cfg.config_hash()
    print(f"replay of run {run_id} ({run['pair']}): {len(samples)} samples; "
          f"models {'match' if same_models else 'DIFFER'}; config {'matches' if same_config else 'DIFFERS'}")
    for line in model_differences(rec.get("models") or {}, loaded.hashes):
        print(f"  model {line}")
    if not same_config:
        print(f"  config {config_difference(rec, cfg)}")
    old = {(r["check"], r["slice"]): r for r in run["results"]}
    differ = 0
    for r in results:
        if r.type in TIMING_TYPES:
            continue  # timing is not reproducible by nature; everything else must be
        o = old.get((r.check, r.slice))
        same = o is not None and o["status"] == r.status and (
            (o["value"] is None and r.value is None) or (o["value"] is not None and r.value is not None
                                                        and abs(o["value"] - r.value) <= 1e-9))
        differ += not same
        print(f"  {r.check:<16} {r.slice:<20} then {o['status'] if o else '-':<17} now {r.status:<17} "
              f"{'same' if same else 'DIFFERENT'}")
    return EXIT_OK if differ == 0 else EXIT_FAILED

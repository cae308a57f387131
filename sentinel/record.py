"""The reproducibility record of a run: what it is enough to know to run it again (model hashes,
config hash, seeds, sampling settings, checks and suites, package versions, host) and which
samples it used. The revalidation adds, as it learns them, the reference window, the
performance measurement and the duration (sentinel/revalidation/).

Duck-typed on purpose (a :class:`sentinel.config.Config`, a loaded pair): this module sits
beside the flow and imports none of it.
"""
from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata as importlib_metadata
from typing import Any, Sequence

PACKAGES = ("sentinel-ml", "torch", "onnxruntime", "numpy", "scipy", "evidently", "sqlalchemy", "kafka-python")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def run_record(cfg: Any, loaded: Any, trigger: str) -> dict[str, Any]:
    """The record a run of ``loaded`` (a sentinel.revalidation.LoadedPair) starts with."""
    return {"pair": loaded.name, "trigger": trigger, "models": loaded.hashes,
            "config_hash": cfg.config_hash(), "config_keys": config_keys(cfg), "config_source": cfg.source,
            "seeds": {"sampling": cfg.sampling.seed, "revalidation": cfg.revalidation.seed},
            "sampling": {"rate": cfg.sampling.rate, "window": cfg.sampling.window},
            "checks": [{"name": c.name, "type": type(c).__name__} for c in loaded.checks],
            "suites": loaded.suites,
            "packages": package_versions(), "host": platform.node(), "machine": platform.machine()}


def config_keys(cfg: Any) -> dict[str, str]:
    """A short sha256 of each config value by its dotted key (``sampling.rate``, ``pairs.triage.
    candidate.path``; a list is one value): enough for ``sentinel replay`` to name the keys that
    changed since a run, without storing values (secrets stay out of the record)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
            return
        blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        out[prefix] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    walk("", cfg.model_dump(mode="json"))
    return out


def config_changes(then: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """The dotted keys whose value differs between two :func:`config_keys` maps (added, removed or
    changed), sorted; None ``then`` (a run recorded before per-key hashes): ``[]``."""
    if not then:
        return []
    return sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))


def sample_record(samples: Sequence[Any], source: dict[str, Any]) -> dict[str, Any]:
    """What a run used, enough to reproduce it: ``source`` (where the samples came from), the
    ids (hashed), count, per-partition offsets, and the traffic's time range (first and last
    message time, ISO 8601) the report shows."""
    column = _columns(samples)
    offsets: dict[str, dict[str, int]] = {}
    for topic, partition, offset in zip(column("topic"), column("partition"), column("offset")):
        if topic is None:
            continue
        o = offsets.setdefault(f"{topic}/{partition}", {"min": offset, "max": offset, "count": 0})
        o["min"], o["max"], o["count"] = min(o["min"], offset), max(o["max"], offset), o["count"] + 1
    times = sorted(t for t in column("ts") if t is not None)
    span = {"first": times[0].isoformat(), "last": times[-1].isoformat()} if times else None
    return {**source, **ids_digest(samples), "offsets": offsets, "time_range": span}


def ids_digest(samples: Sequence[Any]) -> dict[str, Any]:
    """The samples' ``count`` and ``ids_sha256`` (of their sorted message ids): which samples a
    run used, whatever their order."""
    ids = sorted(str(v) for v in _columns(samples)("msg_id"))
    return {"count": len(ids), "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}


def _columns(samples: Sequence[Any]) -> Any:
    """``name -> every sample's field``: a window held by column (sentinel.storage.window) gives
    each without making a sample object."""
    return getattr(samples, "column", None) or (lambda name: [getattr(s, name, None) for s in samples])

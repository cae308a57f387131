"""The hardware and software a measurement was taken on.

Latencies measured on different CPUs, core counts, execution providers or runtime versions are
not comparable, so every measurement carries a fingerprint and history is only ever compared
within one fingerprint id (a short hash of the canonical JSON).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata as importlib_metadata
from typing import Any

_PACKAGES = ("onnxruntime", "torch", "numpy")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def fingerprint(runners: dict[str, Any]) -> dict[str, Any]:
    """Fingerprint of this host plus, per role, the runtime, execution providers and threads.

    ``runners`` maps role to a loaded runner (anything with ``runtime``, and optionally
    ``providers`` and ``threads`` attributes). The result has an ``id`` computed over every
    other key, so two measurements are comparable exactly when their ids are equal.
    """
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    fp: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "packages": {n: v for n in _PACKAGES if (v := _version(n)) is not None},
        "roles": {role: {"runtime": r.runtime, "providers": list(getattr(r, "providers", None) or []),
                         "threads": getattr(r, "threads", None)}
                  for role, r in sorted(runners.items())},
    }
    blob = json.dumps(fp, sort_keys=True, separators=(",", ":"))
    fp["id"] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return fp

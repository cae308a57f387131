"""Peak memory of one runtime session, measured in a fresh subprocess.

Why a subprocess: onnxruntime and torch allocate natively, so ``tracemalloc`` sees none of it,
and inside the daemon the RSS is shared with everything else it holds. A fresh Python process
imports the runtime first (that cost is shared by every session, so it is not counted), reads
its RSS, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), creates the session and
runs one serving-size batch, and reports ``peak RSS - RSS before``: the resident memory the
session itself needed at its worst, native allocations included. Results are cached per model
file and settings for the life of the process, because the file (its sha256) and the settings
fully determine them.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

_cache: dict[tuple[Any, ...], dict[str, Any]] = {}
_RUNTIME_IMPORTS = {"torch": "torch", "onnxruntime": "onnxruntime"}


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    import importlib

    import numpy as np

    from ..runners.base import load_runner

    module = _RUNTIME_IMPORTS.get(spec["runtime"])
    if module:
        importlib.import_module(module)
    importlib.import_module("sentinel.runners." + {"torch": "torch", "onnxruntime": "onnx"}.get(spec["runtime"], "base"))
    before = _status_kb("VmRSS")
    exact = _reset_peak()
    runner = load_runner(spec["path"], runtime=spec["runtime"], role=spec["role"], output=spec["output"],
                         threads=spec["threads"], providers=spec["providers"])
    runner.predict_proba(np.zeros((spec["batch_size"], *runner.input_shape), dtype=np.float32))
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return {"error": "no /proc/self/status on this platform"}
    return {"peak_rss_delta_bytes": max(0, peak - before) * 1024, "rss_before_bytes": before * 1024,
            "method": "fresh subprocess, VmHWM after reset" if exact else "fresh subprocess, VmHWM (not reset)"}


def session_peak_memory(*, path: str, runtime: str, role: str, output: str, threads: int | None,
                        providers: list[str] | None, batch_size: int, sha256: str) -> subprocess.Popen[str] | dict[str, Any]:
    """Start measuring one session; returns a cached result or a running ``Popen`` for :func:`collect`."""
    key = (sha256, runtime, output, threads, tuple(providers or ()), batch_size)
    if key in _cache:
        return _cache[key]
    spec = {"path": path, "runtime": runtime, "role": role, "output": output, "threads": threads,
            "providers": providers, "batch_size": batch_size}
    proc = subprocess.Popen([sys.executable, "-m", "sentinel.perf.memory", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.sentinel_key = key  # type: ignore[attr-defined]
    return proc


def collect(pending: subprocess.Popen[str] | dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """Wait for a measurement started by :func:`session_peak_memory`; never raises."""
    if isinstance(pending, dict):
        return pending
    try:
        out, err = pending.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pending.kill()
        pending.communicate()
        return {"error": f"memory probe timed out after {timeout:g}s"}
    if pending.returncode != 0:
        last = next((ln for ln in reversed(err.splitlines()) if ln.strip()), f"exit code {pending.returncode}")
        return {"error": f"memory probe failed: {last.strip()[:200]}"}
    result = json.loads(out.strip().splitlines()[-1])
    if "error" not in result:
        _cache[pending.sentinel_key] = result  # type: ignore[attr-defined]
    return result


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))

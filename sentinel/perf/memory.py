"""Peak memory of one runtime session, measured in a fresh subprocess.

Why a subprocess: onnxruntime and torch allocate natively, so ``tracemalloc`` sees none of it,
and inside the daemon the RSS is shared with everything else it holds. A fresh Python process
imports the runtime first (that cost is shared by every session, so it is not counted), reads
its RSS, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), creates the session and
runs one serving-size batch, and reports ``peak RSS - RSS before``: the resident memory the
session itself needed at its worst, native allocations included. Results are cached per model
file and settings for the life of the process, because the file (its sha256) and the settings
fully determine them.

Every probe is a tracked ``Popen`` (:func:`terminate_children` kills and reaps the live ones, which
the daemon does when it shuts down), and on Linux each probe asks the kernel to kill it when its
parent dies (``PR_SET_PDEATHSIG``), so not even a SIGKILLed daemon leaves one behind.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

_cache: dict[tuple[Any, ...], dict[str, Any]] = {}
_RUNTIME_IMPORTS = {"torch": "torch", "onnxruntime": "onnxruntime"}
_PARENT_ENV = "SENTINEL_PROBE_PARENT"
_PR_SET_PDEATHSIG = 1

# Live probes. The lock also orders spawning against terminate_children: a probe is either
# registered before the kill pass (and killed) or refused because its cancel event is set.
_live: set[subprocess.Popen[str]] = set()
_live_lock = threading.Lock()


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

    from ..runners.base import load_runner
    from ..runners.batches import PROBE_LENGTH, probe_batch

    module = _RUNTIME_IMPORTS.get(spec["runtime"])
    if module:
        importlib.import_module(module)
    importlib.import_module("sentinel.runners." + {"torch": "torch", "onnxruntime": "onnx"}.get(spec["runtime"], "base"))
    before = _status_kb("VmRSS")
    exact = _reset_peak()
    runner = load_runner(spec["path"], runtime=spec["runtime"], role=spec["role"], output=spec["output"],
                         threads=spec["threads"], providers=spec["providers"], **spec.get("options", {}))
    # one serving batch of valid inputs for whatever the model takes, dynamic dims at `length`
    runner.run(probe_batch(runner.signature, spec["batch_size"], spec.get("length") or PROBE_LENGTH))
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return {"error": "no /proc/self/status on this platform"}
    return {"peak_rss_delta_bytes": max(0, peak - before) * 1024, "rss_before_bytes": before * 1024,
            "method": "fresh subprocess, VmHWM after reset" if exact else "fresh subprocess, VmHWM (not reset)"}


def session_peak_memory(*, path: str, runtime: str, role: str, output: str, threads: int | None,
                        providers: list[str] | None, batch_size: int, sha256: str,
                        cancel: threading.Event | None = None, length: int | None = None,
                        options: dict[str, Any] | None = None) -> subprocess.Popen[str] | dict[str, Any]:
    """Start measuring one session; returns a cached result or a running ``Popen`` for :func:`collect`
    (an error result, and no process, once ``cancel`` is set). ``length``: the length of the
    probe rows' dynamic dimensions (sequence length; default 8); ``options``: load options
    (``output_name``, ``embedding_output``)."""
    options = dict(options or {})
    key = (sha256, runtime, output, threads, tuple(providers or ()), batch_size, length, tuple(sorted(options.items())))
    if key in _cache:
        return _cache[key]
    spec = {"path": path, "runtime": runtime, "role": role, "output": output, "threads": threads,
            "providers": providers, "batch_size": batch_size, "length": length, "options": options}
    with _live_lock:
        if cancel is not None and cancel.is_set():
            return {"error": "memory probe not started: the revalidation was cancelled"}
        # the probe dies with the thread that starts it (PR_SET_PDEATHSIG), so that thread must
        # be the one that collects it: measure_pair starts and collects in the same thread
        proc = subprocess.Popen([sys.executable, "-m", "sentinel.perf.memory", json.dumps(spec)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, _PARENT_ENV: str(os.getpid())})
        _live.add(proc)
    proc.sentinel_key = key  # type: ignore[attr-defined]
    return proc


def track(proc: subprocess.Popen[Any]) -> None:
    """Count another child of the daemon's with the probes (Evidently's report process), so that
    shutdown stops it with them (:func:`terminate_children`, :func:`kill_children_now`)."""
    with _live_lock:
        _live.add(proc)


def untrack(proc: subprocess.Popen[Any]) -> None:
    with _live_lock:
        _live.discard(proc)


def live_children() -> list[int]:
    """Pids of the probes started and not yet collected or reaped."""
    with _live_lock:
        return sorted(p.pid for p in _live if p.poll() is None)


def terminate_children(grace: float = 1.0) -> list[int]:
    """Stop every live probe: SIGTERM, up to ``grace`` seconds in all, then SIGKILL (at once when
    ``grace`` is 0); each is reaped, so no zombie is left. Returns the pids that were still
    running. Never raises."""
    with _live_lock:
        procs = [p for p in _live if p.poll() is None]
        for p in procs:
            _signal(p, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(p, signal.SIGKILL)
            try:
                p.wait(timeout=5.0)
            except subprocess.TimeoutExpired:   # stuck in the kernel: nothing more to do here
                pass
    return [p.pid for p in procs]


def kill_children_now() -> None:
    """SIGKILL every live probe without taking the lock or waiting: for a signal handler about to
    call ``os._exit`` (the thread it interrupted may hold the lock)."""
    try:
        procs = list(_live)
    except RuntimeError:   # the set changed while being copied
        procs = []
    for p in procs:
        _signal(p, signal.SIGKILL)


def _signal(proc: subprocess.Popen[str], signum: int) -> None:
    try:
        proc.send_signal(signum)
    except OSError:   # already gone
        pass


def collect(pending: subprocess.Popen[str] | dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """Wait for a measurement started by :func:`session_peak_memory`; never raises."""
    if isinstance(pending, dict):
        return pending
    try:
        return _collect(pending, timeout)
    finally:
        with _live_lock:
            _live.discard(pending)


def _collect(pending: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, err = pending.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pending.kill()
        pending.communicate()
        return {"error": f"memory probe timed out after {timeout:g}s"}
    if pending.returncode is not None and pending.returncode < 0:
        return {"error": f"memory probe stopped by signal {signal.Signals(-pending.returncode).name}"}
    if pending.returncode != 0:
        last = next((ln for ln in reversed(err.splitlines()) if ln.strip()), f"exit code {pending.returncode}")
        return {"error": f"memory probe failed: {last.strip()[:200]}"}
    result = json.loads(out.strip().splitlines()[-1])
    if "error" not in result:
        _cache[pending.sentinel_key] = result  # type: ignore[attr-defined]
    return result


def _die_with_parent() -> None:
    """In the probe, first thing: be killed when the daemon dies (Linux), and exit at once if it
    already has (it died before the request took effect, and we were re-parented)."""
    parent = os.environ.get(_PARENT_ENV)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if parent is not None and os.getppid() != int(parent):
        os._exit(3)


if __name__ == "__main__":
    _die_with_parent()
    print(json.dumps(_child(json.loads(sys.argv[1]))))

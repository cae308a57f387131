"""Clean shutdown of the real daemon (a subprocess, the real broker): SIGTERM during a scheduled
full-suite revalidation whose memory probe (a ``sentinel.perf.memory`` child) is running ends the
process within a bounded time, leaves no child process behind, and marks the run cut short at
once, with its samples back in the pending window. A second signal skips the waits, not the
steps."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from sentinel.config import load_config
from sentinel.storage import open_store

from sentinel.examples.traffic import ordinary_traffic

from pairs import EXAMPLE, example_config, traffic_lines
from test_daemon import counts, produce

REPO = Path(__file__).resolve().parents[1]
REFERENCE_ROWS = 20000
# a short grace: the run is cut short however fast the machine is (at 6 s a quiet machine
# sometimes finished it in time, and the test then had nothing to check)
GRACE = 0.5
N_SAMPLES = 6000   # enough that the checks and the report after the memory probe outlast the grace


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a live process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _processes() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def memory_probes_of(pid: int) -> list[int]:
    return [p for p in _processes() if (st := _proc_stat(p)) and st[1] == pid
            and "sentinel.perf.memory" in _cmdline(p)]


def left_in_group(pgid: int) -> list[tuple[int, str, str]]:
    """Processes still alive (not zombies) in the daemon's process group: its children keep the
    group when the daemon exits and they are re-parented, so this finds them afterwards."""
    out = []
    for p in _processes():
        st = _proc_stat(p)
        if st and st[2] == pgid and st[0] != "Z":
            out.append((p, st[0], _cmdline(p)))
    return out


def _full_suite(tmp_path):
    """The shipped suite with a pinned reference of REFERENCE_ROWS ordinary rows, so the very first
    run compares against it (drift checks and the Evidently report): the work after the memory
    probe then takes longer than the shutdown grace, every time."""
    suites = tmp_path / "checks"
    shutil.copytree(REPO / "checks", suites)
    x, _ = ordinary_traffic(np.random.default_rng(11), REFERENCE_ROWS)
    ref = suites / "reference.jsonl"
    ref.write_text("".join(json.dumps(m) + "\n" for m in traffic_lines(x, prefix="ref-")))
    suite = suites / "triage.yaml"
    raw = yaml.safe_load(suite.read_text())
    raw["reference"] = {"kind": "pinned", "file": "reference.jsonl",
                        "sha256": hashlib.sha256(ref.read_bytes()).hexdigest()}
    suite.write_text(yaml.safe_dump(raw, sort_keys=False))
    return [str(suites / "*.yaml")]


def _scheduled_run_config(tmp_path, broker, topic):
    return example_config(
        tmp_path, bootstrap=broker.bootstrap, topic=topic, suites=_full_suite(tmp_path),
        # the first scheduled run waits until every produced sample is stored (min_samples)
        revalidation={"interval_seconds": 1, "min_samples": N_SAMPLES, "shutdown_grace_seconds": GRACE},
        perf={"budget_seconds": 0.5, "warmup_seconds": 0.05, "memory": True},
        kafka={"bootstrap_servers": [broker.bootstrap], "topic": topic, "group_id": f"g-{topic}",
               "session_timeout_ms": 6000, "heartbeat_interval_ms": 2000, "poll_timeout_ms": 200})


def _start_until_probe(tmp_path, broker, topic):
    """Start the daemon in its own process group and return it once a memory probe child of the
    scheduled run is alive, with the probes seen and the store URL."""
    produce(broker.bootstrap, topic, N_SAMPLES, 0)
    cfg_path = _scheduled_run_config(tmp_path, broker, topic)
    url = load_config(cfg_path).store.url
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "sentinel", "run", "--config", str(cfg_path)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    probes: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None and not probes:
        time.sleep(0.02)
        probes = memory_probes_of(proc.pid)
    if not probes:
        proc.kill()
        proc.wait()
        pytest.fail("no memory probe started: " + (tmp_path / "daemon.log").read_text()[-3000:])
    return proc, probes, url


def _run_state(url):
    store = open_store(url)
    try:
        runs = store.list_runs()
        return runs, store.pending_count("triage")
    finally:
        store.dispose()


def _events(tmp_path):
    return [json.loads(line) for line in (tmp_path / "daemon.log").read_text().splitlines() if line.startswith("{")]


def _assert_cut_short_cleanly(tmp_path, proc, probes, url):
    pgid = proc.pid
    assert left_in_group(pgid) == [], "a child of the daemon outlived it"
    for p in probes:
        st = _proc_stat(p)
        assert st is None or st[0] == "Z", (p, st, _cmdline(p))
    runs, pending = _run_state(url)
    assert len(runs) == 1 and runs[0]["trigger"] == "schedule", runs
    run = runs[0]
    assert run["status"] == "abandoned", (run["status"], run["error"])
    assert "the daemon was stopped during this run" in run["error"] and "window" in run["error"]
    assert run["finished_at"] is not None
    # given back during the shutdown, not at the next start: nothing else has opened the store
    assert pending == N_SAMPLES
    assert counts(url)[0] == N_SAMPLES


def _signal_and_wait(proc, signals):
    """Send the signals (0.3 s apart), wait for the exit; returns (exit code, seconds)."""
    t0 = time.monotonic()
    for i, signum in enumerate(signals):
        if i:
            time.sleep(0.3)
        os.kill(proc.pid, signum)
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - t0


def _kill_group(pgid):
    """Whatever a failed test left in the daemon's process group goes (never outlives the test)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_sigterm_during_a_scheduled_run_leaves_no_child_and_marks_the_run(tmp_path, broker, topic):
    proc, probes, url = _start_until_probe(tmp_path, broker, topic)
    try:
        code, elapsed = _signal_and_wait(proc, [signal.SIGTERM])
        log = (tmp_path / "daemon.log").read_text()
        assert code == 0, log[-3000:]
        assert elapsed < 10, elapsed          # the grace for the run, then the steps
        _assert_cut_short_cleanly(tmp_path, proc, probes, url)
    finally:
        _kill_group(proc.pid)
    msgs = [e["msg"] for e in _events(tmp_path)]
    assert "signal received: stopping" in msgs and msgs[-1] == "stopped", msgs[-10:]
    assert "run abandoned at shutdown" in msgs


def test_second_signal_skips_the_waits_not_the_steps(tmp_path, broker, topic):
    proc, probes, url = _start_until_probe(tmp_path, broker, topic)
    try:
        code, elapsed = _signal_and_wait(proc, [signal.SIGTERM, signal.SIGTERM])
        log = (tmp_path / "daemon.log").read_text()
        assert code == 1, log[-3000:]
        assert elapsed < 5, elapsed           # no 6 s grace
        _assert_cut_short_cleanly(tmp_path, proc, probes, url)
    finally:
        _kill_group(proc.pid)
    events = _events(tmp_path)
    msgs = [e["msg"] for e in events]
    assert msgs[-1] == "stopped", msgs[-10:]
    abandoned = next(e for e in events if e["msg"] == "run abandoned at shutdown")
    assert abandoned["children_killed"], "the probes were running when the second signal came"


def _probe(tag):
    from sentinel.perf.memory import session_peak_memory

    return session_peak_memory(path=str(EXAMPLE / "baseline.pt2"), runtime="torch", role="baseline",
                               output="probabilities", threads=1, providers=None, batch_size=8, sha256=f"test-{tag}")


def _wait_for(predicate, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _runtime_loaded(pid):
    """The probe imported torch: it is past its first step (asking to die with its parent)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_terminate_children_kills_and_reaps_a_live_probe():
    from sentinel.perf.memory import collect, live_children, terminate_children

    probe = _probe("terminate")
    assert _wait_for(lambda: _runtime_loaded(probe.pid))
    os.kill(probe.pid, signal.SIGSTOP)      # frozen: it cannot finish on its own
    assert live_children() == [probe.pid]
    assert terminate_children(grace=0.5) == [probe.pid]
    assert probe.returncode in (-signal.SIGTERM, -signal.SIGKILL)
    assert _proc_stat(probe.pid) is None    # killed and reaped: not even a zombie is left
    name = signal.Signals(-probe.returncode).name
    assert collect(probe) == {"error": f"memory probe stopped by signal {name}"}
    assert live_children() == []


def test_a_probe_dies_with_its_parent_even_after_sigkill(tmp_path):
    """The backstop for a SIGKILLed daemon: the probe asked the kernel (PR_SET_PDEATHSIG) to kill it
    when its parent dies. The probe is frozen first, so it could never finish on its own."""
    script = ("import sys, time\n"
              "sys.path[:0] = [%r, %r]\n"
              "from test_shutdown import _probe\n"
              "print(_probe('parent').pid, flush=True)\n"
              "time.sleep(600)\n") % (str(REPO), str(REPO / "tests"))
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        pid = int(parent.stdout.readline())
        assert _wait_for(lambda: _runtime_loaded(pid))
        os.kill(pid, signal.SIGSTOP)
        parent.kill()
        parent.wait()
        assert _wait_for(lambda: (_proc_stat(pid) or ("Z",))[0] == "Z", seconds=10), _proc_stat(pid)
    finally:
        _kill_group(parent.pid)

"""Revalidation cost at 10k / 100k / 1M samples of the example pair (issue 13, goal 2), for
``make bench-scale`` (``--only revalidation``) or on its own: ``python benchmarks/revalidation_scale.py
--sizes 100000``.

Per size, the triage pair with its full shipped suite (``checks/triage.yaml``):

* CLI: ``sentinel revalidate --input`` on a JSON-lines file, run twice on two files of ``n``
  messages; the first run passes and becomes the second's ``last_accepted`` reference, so the
  second (the figure) compares every drift check against ``n`` reference rows. Wall time includes
  the interpreter start and every import; peak RSS is the child's maximum resident set
  (GNU time; the memory probes it starts are smaller).
* daemon: one process writes its three traffic files, builds the app as ``sentinel run`` does,
  stores ``n`` messages through the daemon's decoder, runs a revalidation (the reference), stores
  ``n`` more and times ``Revalidator.run`` from the window claim to the report written; then once
  more on a third window (its reference is the second window, accepted, which the revalidator
  kept decoded with both models' outputs on it). Peak RSS is the process's maximum. RSS after
  ``Daemon.start()`` with the API up and its Kafka source on a local broker is measured in a
  separate fresh process (``idle``), with its consumer process's.

A benchmark, not a test: figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SUITE = ROOT / "checks" / "triage.yaml"
#: the Sentinel checkout under test in the child processes (``--code``: e.g. an older commit's files)
CODE = Path(os.environ.get("SENTINEL_BENCH_CODE", str(ROOT)))


def write_traffic(path: Path, n: int, seed: int, start: int = 0) -> Path:
    """``n`` ordinary messages of the triage pair as JSON lines (id, inputs, attributes, label)."""
    import numpy as np

    from sentinel.examples.traffic import ordinary_traffic

    rng = np.random.default_rng(seed)
    with path.open("w") as f:
        for lo in range(0, n, 50_000):
            x, y = ordinary_traffic(rng, min(50_000, n - lo))
            lines = []
            for i, (row, label) in enumerate(zip(x.tolist(), y.tolist()), start=start + lo):
                lines.append(json.dumps({"model": "triage", "id": f"req-{seed}-{i}",
                                         "inputs": [round(v, 6) for v in row],
                                         "attributes": {"region": "eu" if i % 3 else "us"}, "label": label}))
            f.write("\n".join(lines) + "\n")
    return path


def write_config(work: Path, *, api: bool = False, port: int = 0, bootstrap: str = "127.0.0.1:1") -> Path:
    """The daemon config of the bench: the triage pair (good int8 candidate), its shipped suite,
    a SQLite store in ``work``, default perf settings."""
    import yaml

    from sentinel.examples import demos

    pair = json.loads(json.dumps(demos.triage().pair))
    pair["candidate"]["path"] = pair["candidate"]["path"].replace("damaged.int8.onnx", "candidate.int8.onnx")
    cfg: dict[str, Any] = {
        "store": {"url": f"sqlite:///{work / 'bench.db'}"},
        "kafka": {"bootstrap_servers": [bootstrap], "topic": "traffic"},
        "pairs": {"triage": pair},
        "suites": [str(SUITE)],
        "sampling": {"rate": 1.0, "window": 10_000_000},
        "revalidation": {"interval_seconds": 3600},
        "perf": {"accepted_models_dir": str(work / "accepted")},
        "reports_dir": str(work / "reports"),
        "api": {"enabled": api, **({"listen": f"127.0.0.1:{port}"} if api else {})},
        "logging": {"level": "WARNING", "format": "json"},
    }
    path = work / "sentinel.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def timed_child(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of one child process, under GNU time (its maximum
    resident set, which also covers its own children, e.g. the memory probes, when larger)."""
    t0 = time.perf_counter()
    # cwd: not a checkout (python -m / -c put the cwd first on sys.path, before PYTHONPATH)
    proc = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M", *cmd], capture_output=True, text=True, cwd=tempfile.gettempdir(),
                          env={**os.environ, "PYTHONPATH": str(CODE), "SENTINEL_BENCH_CODE": str(CODE)})
    wall = time.perf_counter() - t0
    if proc.returncode == 2 or proc.returncode < 0 or "MAXRSS" not in proc.stderr:
        raise RuntimeError(f"{' '.join(cmd[-4:])} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    rss = int(proc.stderr.rsplit("MAXRSS ", 1)[1].split()[0]) / 1024
    return wall, rss, proc.stdout


def cli_runs(work: Path, n: int) -> dict[str, float]:
    """The second of two ``sentinel revalidate --input`` runs on ``n`` messages each."""
    cfg = write_config(work)
    got: dict[str, float] = {}
    for seed in (10, 11):
        path = write_traffic(work / f"traffic-{n}-{seed}.jsonl", n, seed)
        wall, rss, _ = timed_child([sys.executable, "-m", "sentinel", "revalidate", "--config", str(cfg),
                                    "--input", str(path)])
        got = {"cli_seconds": wall, "cli_peak_mb": rss}
        path.unlink()
    return got


DAEMON_SCRIPT = r"""
import json, resource, sys, time
sys.path.append(sys.argv[1])   # after PYTHONPATH: sentinel comes from the checkout under test
from benchmarks.revalidation_scale import daemon_inside
print("RESULT " + json.dumps(daemon_inside(sys.argv[2], int(sys.argv[3]))))
"""


def daemon_inside(work: str, n: int) -> dict[str, float]:
    """In a fresh process: store n messages, revalidate (reference), store n more, time the run
    from claim to report; once more on a third window (its reference: the second, kept)."""
    import json as _json

    from sentinel.app import build
    from sentinel.config import load_config
    from sentinel.daemon import read_batch
    from sentinel.sampling import Sampler
    from sentinel.sources.base import RawRecord

    w = Path(work)
    # the traffic files first: making them (50,000 JSON lines at a time) is the bench's work, not
    # the daemon's, and would otherwise count in the peak RSS measured for it
    files = {seed: write_traffic(w / f"d-{seed}.jsonl", n, seed) for seed in (20, 21, 22)}
    cfg = load_config(write_config(w))
    app = build(cfg, load_models=False)
    shapes = {"triage": app.pairs["triage"].shape}
    sampler = Sampler(rate=1.0, seed=0)

    def put(batch: list[Any]) -> None:
        b = read_batch(batch, shapes, sampler, None)
        app.store.ingest(b.samples, b.labels, b.bad, window=10_000_000, rate=1.0)

    def ingest(seed: int) -> None:
        path = files[seed]
        with path.open("rb") as f:
            batch: list[Any] = []
            for i, line in enumerate(f):
                batch.append(RawRecord("traffic", 0, seed * 10_000_000 + i, None, line.rstrip(b"\n"), None))
                if len(batch) == 5000:
                    put(batch)
                    batch = []
            if batch:
                put(batch)
        path.unlink()

    out: dict[str, float] = {}
    ingest(20)
    t0 = time.perf_counter()
    first = app.revalidator.run("triage")
    out["daemon_first_seconds"] = time.perf_counter() - t0
    for key, seed in (("daemon_seconds", 21), ("daemon_cached_seconds", 22)):
        ingest(seed)
        t0 = time.perf_counter()
        o = app.revalidator.run("triage")
        out[key] = time.perf_counter() - t0
        out[key.replace("seconds", "status")] = o.status if o else "none"
    out["first_status"] = first.status if first else "none"
    out["daemon_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _json.dumps(out)
    return out


def daemon_runs(work: Path, n: int) -> dict[str, Any]:
    wall, rss, stdout = timed_child([sys.executable, "-c", DAEMON_SCRIPT, str(ROOT), str(work), str(n)])
    line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


IDLE_SCRIPT = r"""
import resource, sys, time
sys.path.insert(0, sys.argv[1])
from sentinel.app import build
from sentinel.config import load_config
from sentinel.daemon import Daemon
t0 = time.perf_counter()
d = Daemon(build(load_config(sys.argv[2]), load_models=False), install_signals=False)
d.start()
started = time.perf_counter() - t0
time.sleep(12)
def rollup(pid):
    got = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if parts[0] in ("Rss:", "Pss:"):
            got[parts[0][:-1]] = int(parts[1]) / 1024
    return got
me = rollup("self")
child = getattr(d.source, "pid", None)
kid = rollup(child) if child else {"Rss": 0, "Pss": 0}
print(f"RESULT {me['Rss']:.0f} {started:.2f} {kid['Rss']:.0f} {kid['Pss']:.0f} {me['Pss']:.0f}")
d.shutdown()
"""


def idle_rss(work: Path) -> dict[str, float]:
    """Twelve seconds after ``Daemon.start()`` with the API up and its default Kafka source on a
    local broker: the daemon's RSS and PSS, its consumer process's (kafka-python's, when it runs
    in one: sentinel/sources/process.py), in MB, and the seconds the start took. PSS counts a
    page shared by the two processes half in each, so daemon RSS + consumer PSS is what the pair
    holds of the machine's memory without counting a shared page twice."""
    from sentinel.testing.broker import TansuBroker, free_port

    with TansuBroker() as broker:
        cfg = write_config(work, api=True, port=free_port(), bootstrap=broker.bootstrap)
        _, _, stdout = timed_child([sys.executable, "-c", IDLE_SCRIPT, str(CODE), str(cfg)])
    _, rss, started, kid_rss, kid_pss, pss = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT ")).split()
    return {"rss": float(rss), "started": float(started), "consumer_rss": float(kid_rss),
            "consumer_pss": float(kid_pss), "pss": float(pss)}


def revalidation_table(sizes: list[int], *, daemon: bool = True, cli: bool = True) -> list[dict[str, Any]]:
    from e2e_harness import print_table

    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"sentinel-reval-{n}-") as tmp:
            work = Path(tmp)
            got: dict[str, Any] = {"n": n}
            if cli:
                (work / "cli").mkdir()
                got.update(cli_runs(work / "cli", n))
            if daemon:
                (work / "daemon").mkdir()
                got.update(daemon_runs(work / "daemon", n))
            print(f"  {n:,}: {got}", flush=True)
            rows.append(got)
    with tempfile.TemporaryDirectory(prefix="sentinel-idle-") as tmp:
        idle = idle_rss(Path(tmp))
    print(f"\nrevalidation: triage pair, full shipped suite (checks/triage.yaml), SQLite; after start (API up, "
          f"Kafka source on a local broker): daemon RSS {idle['rss']:.0f} MB (PSS {idle['pss']:.0f}), its consumer "
          f"process RSS {idle['consumer_rss']:.0f} MB (PSS {idle['consumer_pss']:.0f}); daemon RSS + consumer PSS "
          f"{idle['rss'] + idle['consumer_pss']:.0f} MB; started in {idle['started']:.1f} s")
    f = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    print_table(["samples", "CLI s", "CLI peak MB", "daemon claim->report s", "third window s", "daemon peak MB"],
                [[f"{r['n']:,}", f(r.get("cli_seconds"), ".1f"), f(r.get("cli_peak_mb"), ".0f"),
                  f(r.get("daemon_seconds"), ".1f"), f(r.get("daemon_cached_seconds"), ".1f"),
                  f(r.get("daemon_peak_mb"), ".0f")] for r in rows])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated sample counts")
    ap.add_argument("--no-daemon", action="store_true")
    ap.add_argument("--no-cli", action="store_true")
    ap.add_argument("--code", help="the Sentinel checkout to measure (default: this one), e.g. an older commit's files")
    args = ap.parse_args(argv)
    if args.code:
        global CODE
        CODE = Path(args.code).resolve()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    revalidation_table([int(s) for s in args.sizes.split(",")], daemon=not args.no_daemon, cli=not args.no_cli)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared parts of the end-to-end benchmarks (``benchmarks/fuzz.py``, ``benchmarks/soak.py``): the
real Tansu broker, the real daemon (``sentinel run`` as a subprocess, watched and restarted when it
dies), a store of either backend, and exact accounting of every produced message by its Kafka
position.

Accounting: a message produced at (partition, offset) is *stored* when a ``samples`` row has that
position, *quarantined* when a ``quarantine`` row has it, *not sampled* when its id's sampling key
(``sentinel.sampling.Sampler``, the daemon's own function) is at or above the rate, and *lost*
otherwise. Rows are read from the store after the daemon stopped, so the figures are the store's,
not the daemon's counters (which restart at 0 with every restart).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml
from sqlalchemy import create_engine, func, select, text

from sentinel.examples.traffic import load_example_pair_dir
from sentinel.storage.tables import quarantine, samples
from sentinel.testing.broker import TansuBroker, free_port

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("SENTINEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


# -- store -----------------------------------------------------------------------------------------
class BenchStore:
    """The benchmark's own database: a SQLite file in ``workdir``, or a fresh PostgreSQL database
    created here and dropped by :meth:`drop`."""

    def __init__(self, backend: str, workdir: Path):
        self.backend = backend
        self._pg_name: str | None = None
        if backend == "sqlite":
            self.url = f"sqlite:///{workdir}/sentinel.db"
        elif backend == "postgresql":
            self._pg_name = f"sentinel_bench_{uuid.uuid4().hex[:10]}"
            self._admin(f'CREATE DATABASE "{self._pg_name}"')
            self.url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self._pg_name
        else:
            raise ValueError(f"--store must be sqlite or postgresql, not {backend!r}")
        self._engine = None

    @staticmethod
    def _admin(sql: str) -> None:
        eng = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
        try:
            with eng.connect() as c:
                c.execute(text(sql))
        finally:
            eng.dispose()

    @property
    def engine(self):
        if self._engine is None:
            args = {"connect_timeout": 5} if self.backend == "postgresql" else {"timeout": 5}
            self._engine = create_engine(self.url, connect_args=args)
        return self._engine

    def row_counts(self) -> tuple[int, int] | None:
        """(samples rows, quarantine rows), or None while the schema does not exist yet or the
        database does not answer (both are normal during a daemon start)."""
        try:
            with self.engine.connect() as c:
                s = c.execute(select(func.count()).select_from(samples)).scalar_one()
                q = c.execute(select(func.count()).select_from(quarantine)).scalar_one()
            return int(s), int(q)
        except Exception:  # noqa: BLE001 - not yet created / locked: the caller polls again
            return None

    def positions(self, topic: str) -> tuple[list[tuple[int, int]], list[tuple[int, int, str]]]:
        """Every stored sample's (partition, offset) and every quarantine row's (partition, offset,
        reason) for ``topic``."""
        with self.engine.connect() as c:
            s = [(int(p), int(o)) for p, o in c.execute(
                select(samples.c.partition, samples.c.offset).where(samples.c.topic == topic))]
            q = [(int(p), int(o), str(r)) for p, o, r in c.execute(
                select(quarantine.c.partition, quarantine.c.offset, quarantine.c.reason)
                .where(quarantine.c.topic == topic))]
        return s, q

    def runs(self) -> list[dict[str, Any]]:
        from sentinel.storage.tables import runs

        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(select(runs.c.id, runs.c.status, runs.c.n_samples,
                                                               runs.c.started_at, runs.c.finished_at))]

    def drop(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._pg_name is not None:
            self._admin(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)')
            self._pg_name = None


# -- config ----------------------------------------------------------------------------------------
def write_config(workdir: Path, *, bootstrap: str, topic: str, store_url: str, api_port: int,
                 interval_seconds: float, rate: float, window: int, stratify_by: Iterable[str] = (),
                 max_poll_records: int = 500) -> Path:
    """A config for the bundled example pair, as a user would write it (like tests/pairs.py)."""
    pair_dir = load_example_pair_dir()
    meta = json.loads((pair_dir / "meta.json").read_text())
    cfg: dict[str, Any] = {
        "store": {"url": store_url},
        "kafka": {"bootstrap_servers": [bootstrap], "topic": topic, "group_id": f"g-{topic}",
                  "session_timeout_ms": 6000, "heartbeat_interval_ms": 2000, "poll_timeout_ms": 200,
                  "max_poll_records": max_poll_records},
        "pairs": {"triage": {
            "baseline": {"path": str(pair_dir / "baseline.pt2"), "runtime": "torch", "threads": 1},
            "candidate": {"path": str(pair_dir / "candidate.int8.onnx"), "runtime": "onnxruntime", "threads": 1},
            "classes": meta["classes"], "critical_classes": meta["critical_classes"]}},
        "sampling": {"rate": rate, "window": window, "stratify_by": list(stratify_by)},
        "revalidation": {"interval_seconds": interval_seconds},
        "reports_dir": str(workdir / "reports"),
        "perf": {"budget_seconds": 0.5, "warmup_seconds": 0.05},
        "api": {"enabled": True, "listen": f"127.0.0.1:{api_port}"},
        "logging": {"level": "INFO", "format": "json"},
    }
    path = workdir / "sentinel.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# -- the daemon ------------------------------------------------------------------------------------
@dataclass
class Exit:
    at_s: float          # seconds since the supervisor was made
    code: int | None
    cause: str           # the exception the daemon logged last ("crashed"), or its last log line


@dataclass
class DaemonSupervisor:
    """``sentinel run`` as a subprocess (this checkout's code first on the path), its own process
    group, logs to ``log_path``. Records every exit it did not ask for and restarts up to
    ``max_restarts`` times."""

    config: Path
    log_path: Path
    api_port: int
    max_restarts: int = 3
    proc: subprocess.Popen | None = None
    exits: list[Exit] = field(default_factory=list)
    starts: int = 0
    health_probes: int = 0
    health_failures: int = 0
    down_events: int = 0           # two health probes in a row failed while the process was alive
    orphans: list[int] = field(default_factory=list)   # pids left in the daemon's group after it exited
    _t0: float = field(default_factory=time.monotonic)
    _log_offset: int = 0
    _consecutive: int = 0
    _healthy_once: bool = False

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "sentinel", "run", "--config", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                     cwd=self.config.parent, start_new_session=True)
        log.close()
        self.starts += 1
        self._healthy_once = False
        self._consecutive = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def gave_up(self) -> bool:
        return len(self.exits) > self.max_restarts

    def check(self) -> bool:
        """Call often. Records an unrequested exit and restarts the daemon while restarts remain.
        False once it is down for good."""
        if self.proc is None:
            return False
        if self.alive():
            return True
        self.exits.append(Exit(round(time.monotonic() - self._t0, 1), self.proc.returncode, self._cause()))
        self._reap_group()
        self.proc = None
        if self.gave_up:
            return False
        self.start()
        return True

    def get(self, path: str, timeout: float = 10.0) -> tuple[int | None, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except Exception as exc:  # noqa: BLE001 - refused, reset, timed out: not answering
            return None, f"{type(exc).__name__}: {exc}"

    def probe_health(self) -> bool | None:
        """GET /healthz. None before this incarnation first answered (it is still starting)."""
        status, _ = self.get("/healthz", timeout=10.0)
        if status == 200:
            self._healthy_once = True
            self._consecutive = 0
            self.health_probes += 1
            return True
        if not self._healthy_once or not self.alive():
            return None
        self.health_probes += 1
        self.health_failures += 1
        self._consecutive += 1
        if self._consecutive == 2:
            self.down_events += 1
        return False

    def wait_healthy(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.check():
                return False
            if self.alive() and self.probe_health():
                return True
            time.sleep(0.5)
        return False

    def metric(self, name: str) -> float | None:
        """A sample's value from /metrics (summed over labels), None when not answered."""
        status, body = self.get("/metrics", timeout=10.0)
        if status != 200:
            return None
        total, seen = 0.0, False
        for line in body.splitlines():
            if line.startswith(name) and (line[len(name)] in " {"):
                total += float(line.rsplit(" ", 1)[1])
                seen = True
        return total if seen else None

    def rss_mb(self) -> float | None:
        """Resident set size of the daemon process (not its children), from /proc."""
        if not self.alive():
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL. Returns the exit code; a child left in its process group
        is recorded in ``orphans`` and killed."""
        if self.proc is None:
            return None
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._reap_group()
        self.proc = None
        return proc.returncode

    def _reap_group(self) -> None:
        pgid = self.proc.pid   # start_new_session: the daemon leads its own group
        left = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == pgid and int(entry.name) != pgid:
                        left.append(int(entry.name))
                except OSError:
                    continue
        if left:
            self.orphans.extend(left)
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass

    def _cause(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "?"
        for line in reversed(lines):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("exc"):
                return f"{rec.get('msg')}: {rec['exc'].strip().splitlines()[-1][:160]}"
        return (lines[-1][:160] if lines else "no output")


@dataclass
class Bench:
    """One benchmark's work directory, broker, store and daemon (see :func:`bench`)."""
    workdir: Path
    broker: TansuBroker
    store: BenchStore
    daemon: DaemonSupervisor | None = None

    def start_daemon(self, config: Path, api_port: int, max_restarts: int) -> DaemonSupervisor | None:
        """Start ``sentinel run``; None (after printing its log tail) if it is not healthy in 120 s."""
        self.daemon = DaemonSupervisor(config, self.workdir / "daemon.log", api_port, max_restarts=max_restarts)
        self.daemon.start()
        if self.daemon.wait_healthy(120):
            return self.daemon
        print("the daemon did not become healthy within 120 s; log tail:\n"
              + (self.workdir / "daemon.log").read_text(errors="replace")[-3000:])
        return None


@contextmanager
def bench(prefix: str, backend: str, *, keep: bool) -> Iterator[Bench]:
    """A started broker and a fresh store in a new work directory; on exit the daemon is stopped,
    the broker stopped, a PostgreSQL database dropped and the directory removed unless ``keep``."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    broker = TansuBroker(log_path=workdir / "tansu.log")
    b = Bench(workdir, broker, BenchStore(backend, workdir))
    try:
        broker.start()
        yield b
    finally:
        if b.daemon is not None and b.daemon.alive():
            b.daemon.stop()
        broker.stop()
        b.store.drop()
        if keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def daemon_failures(sup: DaemonSupervisor, acc: "Accounting", lost: int) -> list[str]:
    """What broke the contract on the daemon's side: crashes, downtime, losses, rows twice."""
    checks = [(len(sup.exits), "{} crash(es)"), (sup.down_events, "/healthz down {} time(s)"), (lost, "{} lost"),
              (acc.duplicated, "{} stored or quarantined twice"), (acc.phantom, "{} rows at positions nobody produced"),
              (len(sup.orphans), "{} child process(es) left behind")]
    return [text.format(n) for n, text in checks if n]


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(r[i].lstrip("-").replace(".", "", 1).isdigit() for r in cells[1:] if r[i]) for i in range(len(headers))]
    for n, r in enumerate(cells):
        print("  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


# -- accounting ------------------------------------------------------------------------------------
@dataclass
class Accounting:
    """What became of each produced message (indexed like the produced list)."""
    outcome: list[str]                 # "stored" | "quarantined" | "not_sampled" | "lost"
    reason: list[str | None]           # quarantine reason, when quarantined
    duplicated: int = 0                # positions with more than one row (samples + quarantine)
    phantom: int = 0                   # rows at positions nobody produced

    def count(self, what: str) -> int:
        return sum(1 for o in self.outcome if o == what)


def account(produced: dict[tuple[int, int], int], n: int, stored: list[tuple[int, int]],
            quarantined: list[tuple[int, int, str]], not_sampled: set[int] | frozenset[int] = frozenset()
            ) -> Accounting:
    """Match store rows to produced positions. ``produced`` maps (partition, offset) to the
    message's index; ``not_sampled`` are indexes the sampler was expected to drop."""
    acc = Accounting(["lost"] * n, [None] * n)
    hits = [0] * n
    for p, o in stored:
        i = produced.get((p, o))
        if i is None:
            acc.phantom += 1
            continue
        hits[i] += 1
        acc.outcome[i] = "stored"
    for p, o, reason in quarantined:
        i = produced.get((p, o))
        if i is None:
            acc.phantom += 1
            continue
        hits[i] += 1
        if acc.outcome[i] != "stored":
            acc.outcome[i], acc.reason[i] = "quarantined", reason
    acc.duplicated = sum(1 for h in hits if h > 1)
    for i in not_sampled:
        if 0 <= i < n and acc.outcome[i] == "lost":
            acc.outcome[i] = "not_sampled"
    return acc


def raw_kafka_python(bootstrap: str, topic: str, n: int, batch: int = 500) -> float:
    """msg/s of a bare kafka-python group member committing each batch: ``(per wall second, per CPU
    second of this process)``."""
    from kafka import KafkaConsumer

    from sentinel.testing.broker import unique_name

    c = KafkaConsumer(topic, bootstrap_servers=[bootstrap], group_id=unique_name("raw"), enable_auto_commit=False,
                      auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=2000,
                      max_poll_records=batch)
    got, first, t0 = 0, 0, None
    try:
        while got < n:
            batch = c.poll(timeout_ms=500)
            if batch:
                got += sum(len(v) for v in batch.values())
                c.commit()
                if t0 is None:   # timed from the first batch on, as the daemon's loop is
                    first, t0, c0 = got, time.monotonic(), time.process_time()
        return (got - first) / (time.monotonic() - t0), (got - first) / (time.process_time() - c0)
    finally:
        c.close(autocommit=False)


def raw_confluent(bootstrap: str, topic: str, n: int, batch: int = 10_000) -> float:
    """msg/s of a bare librdkafka group member committing each batch of ``batch`` records
    (synchronously): the confluent source's default batch (``kafka.max_poll_records``); ``(per wall
    second, per CPU second of this process, librdkafka's threads included)``."""
    from confluent_kafka import Consumer

    from sentinel.testing.broker import unique_name

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("raw"), "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 2000})
    c.subscribe([topic])
    got, first, t0 = 0, 0, None
    try:
        while got < n:
            msgs = c.consume(num_messages=batch, timeout=0.5)
            if msgs:
                got += sum(1 for m in msgs if m.error() is None)
                c.commit(asynchronous=False)
                if t0 is None:   # timed from the first batch on, as the daemon's loop is
                    first, t0, c0 = got, time.monotonic(), time.process_time()
        return (got - first) / (time.monotonic() - t0), (got - first) / (time.process_time() - c0)
    finally:
        c.close()

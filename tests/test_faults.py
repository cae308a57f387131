"""Fault tests against real parts: the real daemon (``sentinel run`` in a subprocess) with its
real /readyz polled over HTTP, a real Tansu broker, a real PostgreSQL.

* the broker down for FAULT_SECONDS, then a new (empty: Tansu keeps everything in memory) broker
  on the same port, the topic re-created, more traffic produced;
* PostgreSQL connections refused for FAULT_SECONDS (a TCP proxy between the daemon and the
  server closes its listener and cuts its connections; the shared server is never stopped);
* PostgreSQL writes refused for FAULT_SECONDS (``default_transaction_read_only`` on the test's own
  database, its backends terminated so pooled connections come back read-only).

Each asserts /readyz went 503 naming the part and came back 200 by itself, that every message
produced while a broker was up is stored exactly once, and prints the time to catch up (run with
``-s`` to see it). ``SENTINEL_FAULT_SECONDS`` shortens the faults while developing.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from sentinel.examples.traffic import ordinary_traffic
from sentinel.sources.kafka import make_producer
from sentinel.storage.tables import quarantine, samples
from sentinel.testing.broker import TansuBroker, broker_available, free_port, unique_name

from pairs import example_config, traffic_lines
from stores import PG_ADMIN, pg_url  # noqa: F401 - a fixture

pytestmark = pytest.mark.kafka

#: How long each fault lasts (the issue asks for 60 s).
FAULT_SECONDS = float(os.environ.get("SENTINEL_FAULT_SECONDS", "60"))
#: Messages produced before the fault, and during/after it.
N_BEFORE, N_AFTER = 300, 300
#: Health settings given to the daemon (as SENTINEL_HEALTH__* variables): a stall is reported
#: after 20 s here so the write fault exercises it within FAULT_SECONDS.
HEALTH_ENV = {"SENTINEL_HEALTH__STALL_SECONDS": "20"}
CATCH_UP_LIMIT_S = 90.0


# ---------------------------------------------------------------------------------------------
# the parts


class ReadyzWatch(threading.Thread):
    """Polls GET /readyz every ``every`` seconds and keeps (monotonic time, status, body)."""

    def __init__(self, port: int, every: float = 0.5):
        super().__init__(daemon=True, name="readyz-watch")
        self.url = f"http://127.0.0.1:{port}/readyz"
        self.every = every
        self.seen: list[tuple[float, int, Any]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._halt.is_set():
                t = time.monotonic()
                try:
                    r = client.get(self.url)
                    body = r.json()
                    self.seen.append((t, r.status_code, body))
                except (httpx.HTTPError, ValueError) as exc:
                    self.seen.append((t, -1, repr(exc)))
                self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def between(self, t0: float, t1: float) -> list[tuple[float, int, Any]]:
        return [s for s in self.seen if t0 <= s[0] <= t1]

    def wait(self, pred, after: float, timeout: float) -> tuple[float, int, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for s in self.seen:
                if s[0] >= after and pred(s):
                    return s
            time.sleep(0.2)
        raise AssertionError(f"/readyz never matched in {timeout:g} s; last: {self.seen[-3:]}")


def failing_parts(body: Any) -> set[str]:
    """The part names a 503 body names (``parts`` with ok false; ``problems`` strings' prefixes)."""
    if not isinstance(body, dict):
        return set()
    names = {name for name, p in (body.get("parts") or {}).items() if not p.get("ok")}
    names |= {str(p).split(":", 1)[0] for p in body.get("problems") or []}
    return names


class TcpProxy:
    """127.0.0.1:port → upstream, one thread per direction. :meth:`cut` closes the listener and
    every open connection (clients then get connection refused); :meth:`resume` listens again on
    the same port."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = free_port()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.resume()

    def resume(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True, name="proxy-accept").start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # close() alone does not wake a thread blocked in accept() (the kernel socket stays
            # listening); shutdown() does
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            socks, self._socks = list(self._socks), set()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut()
            if self._listener is not listener:
                client.close()
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            self._socks -= {src, dst}


def traffic(prefix: str, n: int, seed: int) -> list[bytes]:
    x, _ = ordinary_traffic(np.random.default_rng(seed), n)
    return [json.dumps(m).encode() for m in traffic_lines(x, prefix=prefix)]


def produce(bootstrap: str, topic: str, messages: list[bytes]) -> None:
    p = make_producer([bootstrap])
    try:
        for m in messages:
            p.send(topic, value=m)
        p.flush(timeout=30)
    finally:
        p.close()


def counts(url: str) -> tuple[int, int, int]:
    """(samples, distinct ids, quarantined): a fresh connection each time (no pool to go stale)."""
    eng = create_engine(url, poolclass=NullPool)
    try:
        with eng.connect() as c:
            s = c.execute(select(func.count()).select_from(samples)).scalar_one()
            d = c.execute(select(func.count(func.distinct(samples.c.msg_id))).select_from(samples)).scalar_one()
            q = c.execute(select(func.count()).select_from(quarantine)).scalar_one()
        return s, d, q
    finally:
        eng.dispose()


def wait_stored(url: str, n: int, timeout: float, proc: subprocess.Popen, log: Path) -> tuple[float, float | None]:
    """Wait until ``n`` samples are stored; returns (time all were stored, time the count first
    rose above its value at the call)."""
    deadline = time.monotonic() + timeout
    start = None
    first = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"daemon exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            s = counts(url)[0]
        except Exception:  # noqa: BLE001 - the schema may not exist yet
            s = 0
        if start is None:
            start = s
        elif first is None and s > start:
            first = time.monotonic()
        if s >= n:
            return time.monotonic(), first
        time.sleep(0.2)
    raise AssertionError(f"only {counts(url)[0]} of {n} samples stored in {timeout:g} s:\n{log.read_text()[-3000:]}")


class RunningDaemon:
    def __init__(self, tmp_path: Path, *, bootstrap: str, topic: str, store_url: str | None = None):
        self.api_port = free_port()
        kafka = {"bootstrap_servers": [bootstrap], "topic": topic, "group_id": unique_name("g"),
                 "session_timeout_ms": 6000, "heartbeat_interval_ms": 2000, "poll_timeout_ms": 200,
                 "max_poll_records": 100}
        self.cfg_path = example_config(tmp_path, bootstrap=bootstrap, topic=topic, store_url=store_url, kafka=kafka,
                                       api={"enabled": True, "listen": f"127.0.0.1:{self.api_port}"})
        from sentinel.config import load_config
        self.store_url = load_config(self.cfg_path).store.url
        self.group = kafka["group_id"]
        self.log = tmp_path / "daemon.log"
        self._log = self.log.open("wb")
        env = {**os.environ, **HEALTH_ENV}
        self.proc = subprocess.Popen([sys.executable, "-m", "sentinel", "run", "--config", str(self.cfg_path)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.watch = ReadyzWatch(self.api_port)
        self.watch.start()

    def wait_ready(self, timeout: float = 60) -> None:
        self.watch.wait(lambda s: s[1] == 200, after=0, timeout=timeout)

    def stop(self) -> None:
        self.watch.stop()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def stored(self, n: int, timeout: float = CATCH_UP_LIMIT_S) -> tuple[float, float | None]:
        return wait_stored(self.store_url, n, timeout, self.proc, self.log)


def report(name: str, daemon: RunningDaemon, t_fault: float, t_back: float, t_all: float, t_first: float | None,
           parts: set[str]) -> None:
    statuses = sorted({s[1] for s in daemon.watch.between(t_fault + 2, t_back)})
    first = f"{t_first - t_back:.1f} s" if t_first else "n/a"
    print(f"\nFAULT {name}: {FAULT_SECONDS:g} s; /readyz during the fault {statuses} naming {sorted(parts)}; "
          f"after recovery: first new sample {first}, all stored {t_all - t_back:.1f} s after the part came back")


def unready_during(daemon: RunningDaemon, t0: float, t1: float) -> tuple[list, set[str]]:
    seen = daemon.watch.between(t0, t1)
    bad = [s for s in seen if s[1] == 503]
    parts: set[str] = set()
    for s in bad:
        parts |= failing_parts(s[2])
    return bad, parts


def assert_exactly_once(url: str, n: int) -> None:
    time.sleep(1.0)   # anything stored twice would show now
    s, distinct, q = counts(url)
    assert (s, distinct, q) == (n, n, 0), f"{s} samples, {distinct} distinct ids, {q} quarantined; expected {n}"


def _need_broker() -> None:
    reason = broker_available()
    if reason:
        pytest.skip(f"needs the tansu broker: {reason}")


# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(int(FAULT_SECONDS) + 240)
def test_broker_down_then_back_loses_and_duplicates_nothing(tmp_path):
    _need_broker()
    port = free_port()
    broker = TansuBroker(port=port).start()
    topic = unique_name("faults")
    broker.create_topic(topic)
    d = RunningDaemon(tmp_path, bootstrap=broker.bootstrap, topic=topic)
    new_broker = None
    try:
        d.wait_ready()
        produce(broker.bootstrap, topic, traffic("a-", N_BEFORE, 1))
        d.stored(N_BEFORE)

        t_fault = time.monotonic()
        broker.stop()
        time.sleep(FAULT_SECONDS)
        new_broker = TansuBroker(port=port).start()     # empty: memory-only, like a lost broker
        new_broker.create_topic(topic)
        t_back = time.monotonic()
        produce(new_broker.bootstrap, topic, traffic("b-", N_AFTER, 2))
        t_all, t_first = d.stored(N_BEFORE + N_AFTER)
        d.watch.wait(lambda s: s[1] == 200, after=t_back, timeout=60)

        bad, parts = unready_during(d, t_fault + 10, t_back)
        report("broker down", d, t_fault, t_back, t_all, t_first, parts)
        assert bad and "broker" in parts, d.watch.between(t_fault, t_back)[-5:]
        assert_exactly_once(d.store_url, N_BEFORE + N_AFTER)
        # commits resumed on the new broker (the group's offsets there started from nothing)
        deadline = time.monotonic() + 20
        while committed(new_broker.bootstrap, topic, d.group) != N_AFTER and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed(new_broker.bootstrap, topic, d.group) == N_AFTER
    finally:
        d.stop()
        broker.stop()
        if new_broker is not None:
            new_broker.stop()


def committed(bootstrap: str, topic: str, group: str) -> int | None:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=group, enable_auto_commit=False)
    try:
        return c.committed(TopicPartition(topic, 0))
    finally:
        c.close()


@pytest.mark.postgres
@pytest.mark.timeout(int(FAULT_SECONDS) + 240)
def test_postgres_connections_refused_then_back(tmp_path, broker, topic, pg_url):
    db = pg_url.rsplit("/", 1)[1]
    pg_host, pg_port = "127.0.0.1", int(PG_ADMIN.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy((pg_host, pg_port))
    via_proxy = pg_url.replace(f"{pg_host}:{pg_port}", f"127.0.0.1:{proxy.port}")
    d = RunningDaemon(tmp_path, bootstrap=broker.bootstrap, topic=topic, store_url=via_proxy)
    try:
        d.wait_ready()
        produce(broker.bootstrap, topic, traffic("a-", N_BEFORE, 1))
        wait_stored(pg_url, N_BEFORE, CATCH_UP_LIMIT_S, d.proc, d.log)

        t_fault = time.monotonic()
        proxy.cut()
        produce(broker.bootstrap, topic, traffic("b-", N_AFTER, 2))   # arrives while the store is away
        time.sleep(FAULT_SECONDS)
        proxy.resume()
        t_back = time.monotonic()
        t_all, t_first = wait_stored(pg_url, N_BEFORE + N_AFTER, CATCH_UP_LIMIT_S, d.proc, d.log)
        d.watch.wait(lambda s: s[1] == 200, after=t_back, timeout=60)

        bad, parts = unready_during(d, t_fault + 10, t_back)
        report(f"postgres connections refused ({db})", d, t_fault, t_back, t_all, t_first, parts)
        assert bad and "store" in parts, d.watch.between(t_fault, t_back)[-5:]
        assert_exactly_once(pg_url, N_BEFORE + N_AFTER)
    finally:
        d.stop()
        proxy.close()


def _terminate_backends(admin, db: str) -> None:
    admin.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": db})


@pytest.mark.postgres
@pytest.mark.timeout(int(FAULT_SECONDS) + 240)
def test_postgres_writes_refused_then_back(tmp_path, broker, topic, pg_url):
    db = pg_url.rsplit("/", 1)[1]
    d = RunningDaemon(tmp_path, bootstrap=broker.bootstrap, topic=topic, store_url=pg_url)
    admin_engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        d.wait_ready()
        produce(broker.bootstrap, topic, traffic("a-", N_BEFORE, 1))
        d.stored(N_BEFORE)

        with admin_engine.connect() as admin:
            t_fault = time.monotonic()
            admin.execute(text(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on'))
            _terminate_backends(admin, db)
        produce(broker.bootstrap, topic, traffic("b-", N_AFTER, 2))
        time.sleep(FAULT_SECONDS)
        assert counts(pg_url)[0] == N_BEFORE, "a write got through a read-only database?"
        stalled_during = metric(d.api_port, "sentinel_ingest_stalled")
        with admin_engine.connect() as admin:
            admin.execute(text(f'ALTER DATABASE "{db}" RESET default_transaction_read_only'))
            _terminate_backends(admin, db)
        t_back = time.monotonic()
        t_all, t_first = d.stored(N_BEFORE + N_AFTER)
        d.watch.wait(lambda s: s[1] == 200, after=t_back, timeout=60)

        bad, parts = unready_during(d, t_fault + 10, t_back)
        report(f"postgres writes refused ({db})", d, t_fault, t_back, t_all, t_first, parts)
        assert bad and "store" in parts, d.watch.between(t_fault, t_back)[-5:]
        # the stall (20 s here) is reported too, and its gauge is back at 0 once ingest moves
        assert "ingest" in parts and stalled_during == 1.0
        assert metric(d.api_port, "sentinel_ingest_stalled") == 0.0
        assert_exactly_once(pg_url, N_BEFORE + N_AFTER)
    finally:
        d.stop()
        with admin_engine.connect() as admin:
            admin.execute(text(f'ALTER DATABASE "{db}" RESET default_transaction_read_only'))
        admin_engine.dispose()


def metric(port: int, name: str) -> float | None:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, follow_redirects=True)
    for line in r.text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None

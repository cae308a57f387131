"""Readiness parts on a real daemon (in-process, real broker, real stores, real HTTP): a stalled
ingest, a revalidation running too long, an overdue schedule, and the store write probe against
a read-only PostgreSQL database and a role without write privileges. The broker and store
outages of 60 s are in tests/test_faults.py."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from sentinel.config import load_config
from sentinel.app import build
from sentinel.daemon import Daemon
from sentinel.examples.traffic import ordinary_traffic
from sentinel.health import PROBE_TIMEOUT_SECONDS
from sentinel.sources.kafka import make_producer
from sentinel.storage import open_store
from sentinel.storage.repository import Store

from pairs import example_config, traffic_lines
from stores import PG_ADMIN, pg_url, store_url  # noqa: F401 - fixtures

pytestmark = pytest.mark.kafka


def produce(bootstrap: str, topic: str, n: int, prefix: str) -> None:
    x, _ = ordinary_traffic(np.random.default_rng(5), n)
    p = make_producer([bootstrap])
    for m in traffic_lines(x, prefix=prefix):
        p.send(topic, value=json.dumps(m).encode())
    p.flush()
    p.close()


@pytest.fixture
def daemon(tmp_path, broker, topic, request):
    health = getattr(request, "param", {})
    cfg = load_config(example_config(tmp_path, bootstrap=broker.bootstrap, topic=topic, health=health,
                                     api={"enabled": True, "listen": "127.0.0.1:0"}))
    d = Daemon(build(cfg, load_models=False), install_signals=False)
    d.start()
    yield d
    d.shutdown()


def readyz(d: Daemon) -> tuple[int, dict]:
    r = httpx.get(f"http://127.0.0.1:{d.api_port}/readyz", timeout=10)
    return r.status_code, r.json()


def gauge(d: Daemon, name: str) -> float:
    text_ = httpx.get(f"http://127.0.0.1:{d.api_port}/metrics", timeout=10, follow_redirects=True).text
    return float(next(line for line in text_.splitlines() if line.startswith(name + " ")).rsplit(" ", 1)[1])


def catch_up(d: Daemon, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while d.store.count("samples") < n and time.monotonic() < deadline:
        d.ingest_once()
    assert d.store.count("samples") >= n
    for _ in range(3):
        d.ingest_once()


@pytest.mark.parametrize("daemon", [{"stall_seconds": 1.5}], indirect=True)
def test_a_stalled_ingest_is_not_ready_and_sets_the_gauge_until_it_moves(daemon, broker, topic):
    d = daemon
    produce(broker.bootstrap, topic, 40, "s-")
    catch_up(d, 40)
    status, body = readyz(d)
    assert status == 200 and body["ready"] and body["parts"]["ingest"] == {"ok": True, "reason": None}, body
    assert gauge(d, "sentinel_ingest_stalled") == 0.0

    produce(broker.bootstrap, topic, 20, "t-")
    time.sleep(2.0)   # the ingest loop does not turn: nothing is stored while records wait
    status, body = readyz(d)
    assert status == 503 and not body["ready"]
    assert body["parts"]["ingest"]["ok"] is False and "no batch stored for" in body["parts"]["ingest"]["reason"]
    assert [p for p in body["problems"] if p.startswith("ingest: ")], body["problems"]
    assert all(body["parts"][p]["ok"] for p in ("broker", "store", "scheduler", "models", "daemon")), body
    assert gauge(d, "sentinel_ingest_stalled") == 1.0
    assert 'sentinel_ready{part="ingest"} 0.0' in httpx.get(f"http://127.0.0.1:{d.api_port}/metrics",
                                                              timeout=10).text

    catch_up(d, 60)
    assert readyz(d)[0] == 200
    assert gauge(d, "sentinel_ingest_stalled") == 0.0


@pytest.mark.parametrize("daemon", [{"max_run_seconds": 0.5}], indirect=True)
def test_a_revalidation_running_too_long_is_named(daemon, broker, topic):
    d = daemon
    produce(broker.bootstrap, topic, 200, "r-")
    catch_up(d, 200)
    run = threading.Thread(target=d.revalidate, args=("triage",))
    run.start()
    seen = []
    while run.is_alive():
        seen.append(d.health.scheduler_part())
        d.ingest_once()   # the ingest loop keeps turning meanwhile
    run.join()
    slow = [p for p in seen if not p.ok]
    assert slow and "triage: a revalidation has been running for" in slow[-1].reason, seen[-3:]
    assert readyz(d)[0] == 200 and d.health.scheduler_part().ok


@pytest.mark.parametrize("daemon", [{"schedule_overdue_seconds": 1}], indirect=True)
def test_an_overdue_schedule_is_named_and_recovers(daemon):
    d = daemon
    # a stuck scheduler, seen from outside: its ticker stops claiming and a pair falls due
    d.scheduler.stop(wait=2.0)
    set_next_run(d, dt.datetime.now(dt.timezone.utc))
    deadline = time.monotonic() + 10
    while d.health.scheduler_part().ok and time.monotonic() < deadline:
        time.sleep(0.2)
    status, body = readyz(d)
    assert status == 503 and "triage: the revalidation due at" in body["parts"]["scheduler"]["reason"], body
    assert "s overdue (limit 1 s)" in body["parts"]["scheduler"]["reason"]
    # the schedule moves on (what a working scheduler does after the run): ready again
    set_next_run(d, dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    deadline = time.monotonic() + 30
    while readyz(d)[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert readyz(d)[0] == 200


def set_next_run(d, when):
    from sqlalchemy import update

    from sentinel.storage.tables import schedules
    with d.store.engine.begin() as c:
        c.execute(update(schedules).where(schedules.c.pair == "triage").values(next_run_at=when))


# ---------------------------------------------------------------------------------------------
# the write probe


def probe_writes(engine):
    """The readiness probe (bounded) on ``engine``'s store."""
    Store(engine).probe_writes(timeout_s=PROBE_TIMEOUT_SECONDS)


def test_write_probe_passes_on_a_writable_store_and_changes_nothing(store_url):
    store = open_store(store_url)
    with store.engine.connect() as c:
        before = c.execute(text("SELECT version_num FROM alembic_version")).all()
    probe_writes(store.engine)
    probe_writes(store.engine)
    store.probe_writes()          # the unbounded probe ingest uses before splitting a batch
    with store.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).all() == before
    assert store.count("quarantine") == 0          # the probe row was rolled back
    store.dispose()


def test_write_probe_on_a_busy_sqlite_store_is_bounded_and_counts_as_writable(tmp_path):
    import sqlite3

    store = open_store(f"sqlite:///{tmp_path}/s.db")
    holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")              # another writer holds the write lock
    try:
        t0 = time.monotonic()
        probe_writes(store.engine)
        assert time.monotonic() - t0 < 10          # its own 1 s busy wait, not the store's 30 s
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with store.engine.connect() as c:              # the connection went back with the 30 s wait
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30000
    store.dispose()


@pytest.mark.postgres
def test_write_probe_catches_read_only_and_missing_privileges(pg_url):
    store_url = pg_url
    db = store_url.rsplit("/", 1)[1]
    store = open_store(store_url)
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    role = f"sentinel_ro_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on'))
        store.engine.dispose()   # new connections read the database's new default
        with pytest.raises(Exception, match="read-only transaction"):
            probe_writes(store.engine)
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{db}" RESET default_transaction_read_only'))
        store.engine.dispose()
        probe_writes(store.engine)

        # a role that may read but not write: SHOW transaction_read_only says "off", the probe fails
        owner = create_engine(store_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with owner.connect() as c:
            c.execute(text(f"CREATE ROLE {role} LOGIN"))
            c.execute(text(f"GRANT SELECT ON alembic_version TO {role}"))
        owner.dispose()
        reader = create_engine(store_url.replace("postgres@", f"{role}@"), poolclass=NullPool)
        with reader.connect() as c:
            assert c.execute(text("SHOW transaction_read_only")).scalar_one() == "off"
        with pytest.raises(Exception, match="permission denied"):
            probe_writes(reader)
        reader.dispose()
    finally:
        store.dispose()
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{db}" RESET default_transaction_read_only'))
        owner = create_engine(store_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with owner.connect() as c:   # the role's grants live in the test database
            if c.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
                c.execute(text(f"DROP OWNED BY {role}"))
                c.execute(text(f"DROP ROLE {role}"))
        owner.dispose()
        admin.dispose()

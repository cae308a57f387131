"""Revalidation schedules live in Sentinel's own ``schedules`` table, in plain columns: nothing is
ever unpickled (APScheduler 3's SQLAlchemy job store unpickled ``apscheduler_jobs.job_state`` at
every start). The migration carries next run times over from that table without touching the
pickle; claims are leases taken by a conditional update, so a due run is claimed once even when
claimers race; a run the daemon abandoned cannot be overwritten by its late revalidation."""
from __future__ import annotations

import ast
import datetime as dt
import pickle
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import Column, Float, LargeBinary, MetaData, String, Table, create_engine, inspect, select

from sentinel.config import load_config
from sentinel.app import build
from sentinel.daemon import Daemon
from sentinel.storage import open_store
from sentinel.storage.repository import MIGRATIONS, SampleIn, Store, make_engine
from sentinel.storage.tables import schedules

from pairs import example_config
from stores import store_url  # noqa: F401  (fixture)

SENTINEL = Path(__file__).resolve().parents[1] / "sentinel"
T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)


class _CreatesFile:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _upgrade(url, revision):
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = make_engine(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()


def _apscheduler_table(url, rows):
    """APScheduler 3's own job table (as SQLAlchemyJobStore creates it), with ``rows``."""
    md = MetaData()
    jobs = Table("apscheduler_jobs", md, Column("id", String(191), primary_key=True),
                 Column("next_run_time", Float(25), index=True), Column("job_state", LargeBinary, nullable=False))
    engine = create_engine(url)
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(jobs.insert(), rows)
    engine.dispose()


def test_migration_carries_next_run_times_over_without_unpickling(tmp_path, store_url, broker, topic):  # noqa: F811
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_CreatesFile(marker))
    due = T0.replace(year=2030)        # in the future: the daemon start must keep it, not run it
    _upgrade(store_url, "0003")        # a store as the APScheduler daemon left it
    _apscheduler_table(store_url, [
        {"id": "revalidate:triage", "next_run_time": due.timestamp(), "job_state": evil},
        {"id": "revalidate:gone", "next_run_time": None, "job_state": evil},        # paused, pair since removed
        {"id": "revalidate:odd", "next_run_time": 1e300, "job_state": evil},        # not a usable time
        {"id": "someone-elses-job", "next_run_time": 0.0, "job_state": evil}])

    store = open_store(store_url)      # migrates to head
    assert not marker.exists()
    assert "apscheduler_jobs" not in inspect(store.engine).get_table_names()
    with store.engine.connect() as conn:
        rows = {r.pair: r for r in conn.execute(select(schedules))}
    assert set(rows) == {"triage", "gone", "odd"}
    assert rows["triage"].interval_seconds is None            # it was inside the pickle
    assert store.schedule_times() == {"triage": due, "gone": None, "odd": None}
    store.dispose()

    cfg = load_config(example_config(tmp_path, bootstrap=broker.bootstrap, topic=topic, store_url=store_url,
                                     revalidation={"interval_seconds": 3600}))
    d = Daemon(build(cfg, load_models=False), install_signals=False, serve_api=False)
    d.start()
    try:
        assert not marker.exists()
        assert "apscheduler.jobstores.sqlalchemy" not in sys.modules
        # the carried-over time is kept and the configured interval adopted; removed pairs dropped
        assert d.next_run_times() == {"triage": due}
        assert d.store.schedule_times() == {"triage": due}
        with d.store.engine.connect() as conn:
            assert conn.execute(select(schedules.c.interval_seconds)).scalar_one() == 3600
    finally:
        d.shutdown()
    assert not marker.exists()


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_nothing_in_the_package_unpickles():
    """No pickle-based loading anywhere in sentinel/: the only `pickle` import is the torch runner's,
    for the exception type torch.load(weights_only=True) raises; no APScheduler job store; no
    numpy/pandas/joblib pickle loading."""
    unpicklers = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "shelve", "joblib", "jsonpickle"}
    found = []
    for path in sorted(SENTINEL.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(SENTINEL.parent).as_posix()
        for name in _imports(tree):
            if name.split(".")[0] in unpicklers and rel != "sentinel/runners/torch.py":
                found.append(f"{rel}: import {name}")
            if name.startswith("apscheduler"):
                found.append(f"{rel}: import {name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pickle" \
                    and node.attr != "UnpicklingError":
                found.append(f"{rel}:{node.lineno}: pickle.{node.attr}")
            if isinstance(node, ast.Attribute) and node.attr in ("read_pickle", "Unpickler"):
                found.append(f"{rel}:{node.lineno}: {node.attr}")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle" and not (
                    isinstance(node.value, ast.Constant) and node.value.value is False):
                found.append(f"{rel}:{node.value.lineno}: allow_pickle not False")
    assert found == []


def _store(url):
    return open_store(url)


def test_replicas_starting_together_all_sync_the_schedules(store_url):  # noqa: F811
    """Replicas started at once each make the stored schedules match their config: none may fail
    on a row another inserted first (it crashed a replica of the 3-replica test on PostgreSQL)."""
    _store(store_url)   # migrated once, as the first replica's start does
    stores = [_store(store_url) for _ in range(6)]
    go, errors, got = threading.Barrier(len(stores)), [], []

    def start(store):
        go.wait()
        try:
            got.append(store.sync_schedules({"a": 60, "b": 30, "c": 10}, now=T0))
        except Exception as exc:   # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == [] and len(got) == len(stores)
    assert all(g == {"a": T0 + dt.timedelta(seconds=60), "b": T0 + dt.timedelta(seconds=30),
                     "c": T0 + dt.timedelta(seconds=10)} for g in got)


def test_schedules_follow_the_config(store_url):  # noqa: F811
    store = _store(store_url)
    assert store.sync_schedules({"a": 60, "b": 30}, now=T0) == {"a": T0 + dt.timedelta(seconds=60),
                                                                 "b": T0 + dt.timedelta(seconds=30)}
    later = T0 + dt.timedelta(seconds=5)
    # a restart with unchanged intervals keeps the times; a changed one starts afresh; a pair no
    # longer configured loses its schedule; a new one is due one interval from now
    assert store.sync_schedules({"a": 60, "b": 45, "c": 10}, now=later) == {
        "a": T0 + dt.timedelta(seconds=60), "b": later + dt.timedelta(seconds=45), "c": later + dt.timedelta(seconds=10)}
    assert set(store.sync_schedules({"a": 60}, now=later)) == {"a"}


def test_missed_runs_coalesce_and_late_ones_are_passed_over(store_url):  # noqa: F811
    store = _store(store_url)
    store.sync_schedules({"a": 10, "b": 10}, now=T0)          # both due at T0+10
    now = T0 + dt.timedelta(seconds=41)                        # down through T0+10, 20, 30, 40
    claims, missed = store.claim_due_schedules("me", misfire_grace=3, lease_seconds=60, now=now)
    assert [(c.pair, c.due_at, c.next_run_at) for c in claims] == [
        ("a", T0 + dt.timedelta(seconds=40), T0 + dt.timedelta(seconds=50)),
        ("b", T0 + dt.timedelta(seconds=40), T0 + dt.timedelta(seconds=50))]   # one catch-up each
    assert missed == []
    store.release_schedule("a", "me")
    # 'a' is next due at T0+50; 5 s late is beyond the 3 s grace: passed over, moved on, not leased
    claims, missed = store.claim_due_schedules("me", misfire_grace=3, lease_seconds=60, now=T0 + dt.timedelta(seconds=55))
    assert claims == [] and sorted((m.pair, m.reason) for m in missed) == [("a", "misfire"), ("b", "running")]
    assert store.schedule_times() == {"a": T0 + dt.timedelta(seconds=60), "b": T0 + dt.timedelta(seconds=60)}


def test_a_lease_is_held_until_released_or_lapsed(store_url):  # noqa: F811
    store = _store(store_url)
    store.sync_schedules({"a": 10}, now=T0)
    at = T0 + dt.timedelta(seconds=10)
    assert [c.pair for c in store.claim_due_schedules("one", misfire_grace=5, lease_seconds=30, now=at)[0]] == ["a"]
    # due again while 'one' holds it: another owner leaves it alone
    assert store.claim_due_schedules("two", misfire_grace=5, lease_seconds=30, now=at + dt.timedelta(seconds=10)) == ([], [])
    # 'one' died: once its lease lapses, 'two' takes the pair over
    late = at + dt.timedelta(seconds=31)
    claims, _ = store.claim_due_schedules("two", misfire_grace=5, lease_seconds=30, now=late)
    assert [c.pair for c in claims] == ["a"]
    store.release_schedule("a", "one")                         # a late release by the dead owner changes nothing
    with store.engine.connect() as conn:
        assert conn.execute(select(schedules.c.lease_owner)).scalar_one() == "two"
    # a claim handed back unstarted puts its due time back
    store.release_schedule("a", "two", finished=False, next_run_at=claims[0].due_at)
    assert store.schedule_times() == {"a": claims[0].due_at}


def test_racing_claimers_claim_each_due_run_once(store_url):  # noqa: F811
    pairs = {f"p{i}": 10 for i in range(30)}
    _store(store_url).sync_schedules(pairs, now=T0)
    stores = [Store(make_engine(store_url)) for _ in range(4)]
    now = T0 + dt.timedelta(seconds=10)
    got: dict[int, list[str]] = {}
    start = threading.Barrier(len(stores))

    def claim(i):
        start.wait()
        got[i] = []
        for _ in range(5):
            got[i] += [c.pair for c in stores[i].claim_due_schedules(f"r{i}", misfire_grace=5, lease_seconds=60,
                                                                       now=now)[0]]

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [p for ps in got.values() for p in ps]
    assert sorted(claimed) == sorted(pairs)                    # every due run once, none twice
    for s in stores:
        s.dispose()


def test_a_run_marked_abandoned_is_not_overwritten_by_its_revalidation(store_url):  # noqa: F811
    store = _store(store_url)
    rows = [SampleIn(pair="p", msg_id=f"m{i}", ts=T0, topic="t", partition=0, offset=i, sample_key=0.01 * i,
                     inputs=[float(i)], attributes={}) for i in range(5)]
    store.ingest(rows, [], [], window=100, rate=1.0)
    run = store.create_run("p", "schedule", {"pair": "p"})
    assert len(store.claim_window("p", run)) == 5
    # the daemon gives up on it at shutdown: marked, window given back, in one transaction
    assert store.finish_run(run, status="abandoned", n_samples=0, record=None, results=[], error="stopped",
                            release_window=True)
    assert store.pending_count("p") == 5
    # the revalidation thread resumes and tries to record its result: nothing changes
    result = {"check": "c", "slice": "overall", "status": "pass", "value": 0.0, "warn": None, "fail": None,
              "n": 5, "message": "", "evidence": {}}
    assert not store.finish_run(run, status="pass", n_samples=5, record={"x": 1}, results=[result])
    assert store.claim_window("p", run) == []                  # nor can it take the window again
    got = store.get_run(run)
    assert (got["status"], got["error"], got["record"], got["results"]) == ("abandoned", "stopped", {"pair": "p"}, [])
    assert store.pending_count("p") == 5


def test_revalidation_cancelled_before_it_starts_gives_its_window_back(tmp_path):
    from sentinel.perf.memory import live_children
    from sentinel.revalidation import Revalidator, load_pair

    cfg = load_config(example_config(tmp_path))
    store = open_store(cfg.store.url)
    rows = [SampleIn(pair="triage", msg_id=f"m{i}", ts=T0, topic="t", partition=0, offset=i, sample_key=0.001 * i,
                     inputs=[0.5] * 30, attributes={}) for i in range(50)]
    store.ingest(rows, [], [], window=1000, rate=1.0)
    cancel = threading.Event()
    cancel.set()
    pairs = {"triage": load_pair(cfg, "triage")}
    assert Revalidator(cfg, store, pairs, cancel=cancel).run("triage") is None
    (run,) = store.list_runs()
    assert run["status"] == "abandoned" and "cancelled" in run["error"]
    assert store.pending_count("triage") == 50 and live_children() == []

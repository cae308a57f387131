"""Several daemons on one store. On PostgreSQL: three real `sentinel run` processes share one
topic of 6 partitions; one is SIGKILLed mid-ingest and started again, and still every message is
stored or quarantined once, every scheduled slot is claimed once and no pair runs twice at once,
every notification reaches a real HTTP receiver (counted by idempotency key); a replica killed
while it holds a pair's lease is taken over within the lease. On SQLite a second daemon is refused.

The big test's message count is SENTINEL_REPLICA_MESSAGES (30,000 by default, so it fits CI on 2
cores; `make bench-scale` runs 300,000 through the same harness, benchmarks/scale.py)."""
from __future__ import annotations

import collections
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import create_engine, func, select

from sentinel.examples.traffic import ordinary_traffic
from sentinel.storage.replicas import Replica, ReplicaRefused
from sentinel.sources.confluent import produce_values
from sentinel.storage.repository import open_store, utcnow
from sentinel.storage.tables import outbox, quarantine, replicas, runs, samples, schedules
from sentinel.testing.broker import unique_name

from pairs import example_config
from receivers import Receiver
from stores import pg_url  # noqa: F401 - a fixture

MESSAGES = int(os.environ.get("SENTINEL_REPLICA_MESSAGES", "30000"))
PAIRS = ("triage", "triage-b", "triage-c")
MALFORMED = [b"not json", b'{"id": "x-short", "inputs": [1, 2], "model": "triage"}', b"[1, 2, 3]"]


# -- harness (also used by benchmarks/scale.py) -------------------------------------------------
def traffic(n: int, prefix: str, pairs=PAIRS, bad_every: int = 100, seed: int = 5) -> list[bytes]:
    """``n`` messages spread over ``pairs``, one malformed in every ``bad_every``."""
    x, _ = ordinary_traffic(np.random.default_rng(seed), n)
    out = []
    for i, row in enumerate(x):
        if bad_every and i % bad_every == bad_every - 1:
            out.append(MALFORMED[i % len(MALFORMED)])
        else:
            out.append(json.dumps({"id": f"{prefix}{i}", "model": pairs[i % len(pairs)],
                                   "inputs": [round(float(v), 5) for v in row]}).encode())
    return out


def replica_config(tmp: Path, name: str, *, store_url: str, bootstrap: str, topic: str, group: str,
                   client: str = "confluent", pairs=PAIRS, interval: float = 8, lease: float = 10,
                   notify: str | None = None, window: int = 1_000_000, candidate: str = "damaged.int8.onnx") -> Path:
    """One replica's config: its own folder (reports, log), the shared store, topic and group."""
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    extra = {}
    if notify:
        (d / "alerts").mkdir(exist_ok=True)
        (d / "alerts" / "policy.yaml").write_text(yaml.safe_dump({"policies": [{"name": "all", "tiers": [
            {"targets": ["oncall"], "delay": "2s"}, {"targets": ["lead"]}]}]}))
        extra = {"escalation": "alerts/*.yaml", "notifiers": {
            "oncall": {"type": "webhook", "url": notify + "/oncall"}, "lead": {"type": "webhook", "url": notify + "/lead"}}}
    path = example_config(d, candidate=candidate, store_url=store_url, bootstrap=bootstrap, topic=topic,
                          kafka={"bootstrap_servers": [bootstrap], "topic": topic, "group_id": group, "client": client,
                                 "session_timeout_ms": 6000, "heartbeat_interval_ms": 2000, "poll_timeout_ms": 200},
                          sampling={"rate": 1.0, "window": window},
                          revalidation={"interval_seconds": interval, "misfire_grace_seconds": 600},
                          replicas={"lease_seconds": lease}, perf={"enabled": False},
                          api={"enabled": True, "listen": "127.0.0.1:0"}, **extra)
    cfg = yaml.safe_load(path.read_text())
    one = cfg["pairs"]["triage"]
    cfg["pairs"] = {p: dict(one) for p in pairs}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Proc:
    """A `sentinel run` process whose JSON log is kept (appended across restarts)."""

    def __init__(self, cfg: Path):
        self.cfg, self.log_path = cfg, cfg.parent / "daemon.log"
        self.p: subprocess.Popen | None = None

    def start(self) -> "Proc":
        log = open(self.log_path, "ab")
        self.p = subprocess.Popen([sys.executable, "-m", "sentinel", "run", "--config", str(self.cfg)],
                                  stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def kill(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(10)

    def stop(self, timeout: float = 20) -> int | None:
        if self.p is None or self.p.poll() is not None:
            return None if self.p is None else self.p.returncode
        self.p.terminate()
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait(5)

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def api_port(self) -> int | None:
        started = [e for e in self.events() if e.get("msg") == "started" and e.get("api_port")]
        return started[-1]["api_port"] if started else None


def counts(url: str) -> tuple[int, int, int]:
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            s = c.execute(select(func.count()).select_from(samples)).scalar_one()
            d = c.execute(select(func.count()).select_from(
                select(samples.c.pair, samples.c.msg_id).distinct().subquery())).scalar_one()
            q = c.execute(select(func.count()).select_from(quarantine)).scalar_one()
        return s, d, q
    finally:
        eng.dispose()


def wait_for(predicate, seconds: float, what: str, step: float = 0.3):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:   # noqa: BLE001 - the schema may not exist yet
            value = None
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def rows(url: str, table) -> list[dict]:
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return [dict(r._mapping) for r in c.execute(select(table))]
    finally:
        eng.dispose()


def claimed_slots(procs) -> list[tuple[str, str, str]]:
    return [(e["pair"], e["due"], e["owner"]) for p in procs for e in p.events()
            if e.get("msg") == "scheduled revalidation claimed"]


# -- SQLite: one replica ---------------------------------------------------------------------
def test_replica_registry_on_sqlite_refuses_a_live_other_and_takes_over_a_stale_one(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    now = [utcnow()]
    first = Replica(store, "host-a:1:x", lease_seconds=30, host="host-a", clock=lambda: now[0])
    first.register()
    second = Replica(store, "host-b:2:y", lease_seconds=30, host="host-b", clock=lambda: now[0])
    with pytest.raises(ReplicaRefused, match=r"another Sentinel daemon is running on this SQLite store .*host-a:1:x"):
        second.register()
    assert [r["owner"] for r in second.replicas.all()] == ["host-a:1:x"]   # the refused one left no row
    now[0] += dt.timedelta(seconds=31)                                     # host-a stopped beating
    second.register()
    assert [r["owner"] for r in second.replicas.all()] == ["host-b:2:y"]
    store.dispose()


def test_second_sentinel_run_on_one_sqlite_store_is_refused_with_a_clear_message(tmp_path, broker, topic):
    cfg = example_config(tmp_path, bootstrap=broker.bootstrap, topic=topic)
    url = yaml.safe_load(cfg.read_text())["store"]["url"]
    first = Proc(cfg).start()
    try:
        wait_for(lambda: rows(url, replicas), 90, "the first daemon to register")
        second = subprocess.run([sys.executable, "-m", "sentinel", "run", "--config", str(cfg)],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        assert "another Sentinel daemon is running on this SQLite store" in second.stderr
        assert "use PostgreSQL" in second.stderr
        assert first.p.poll() is None                      # the first one carries on
        # a killed daemon's row does not lock the store: the next start on this host takes over
        first.kill()
        first.start()
        wait_for(lambda: [r for r in rows(url, replicas) if r["pid"] == first.p.pid], 90, "the restart to register")
        assert len(rows(url, replicas)) == 1
    finally:
        first.stop()


# -- PostgreSQL: several replicas --------------------------------------------------------------
def test_two_replicas_on_postgresql_register_and_a_dead_ones_work_is_taken_over(pg_url):
    store = open_store(pg_url)
    now = [utcnow()]
    a = Replica(store, "a", lease_seconds=10, host="h1", clock=lambda: now[0])
    b = Replica(store, "b", lease_seconds=10, host="h2", clock=lambda: now[0])
    a.register()
    b.register()                                          # PostgreSQL: both live
    store.sync_schedules({"triage": 1.0}, now=now[0] - dt.timedelta(seconds=5))
    [claim], _ = store.claim_due_schedules("a", misfire_grace=60, lease_seconds=10, now=now[0])
    store.owner = "a"
    run_id = store.create_run("triage", "schedule", {})
    assert b.beat() == 0                                   # a is alive: nothing taken
    now[0] += dt.timedelta(seconds=11)                     # a stopped beating
    assert b.beat() == 1                                   # its run abandoned, its lease dropped
    assert store.get_run(run_id)["status"] == "abandoned"
    assert [r["owner"] for r in b.replicas.all()] == ["b"]
    assert rows(pg_url, schedules)[0]["lease_owner"] is None
    store.dispose()


@pytest.mark.postgres
@pytest.mark.kafka
def test_lease_takeover_when_the_replica_holding_a_pair_is_killed(tmp_path, pg_url, broker):
    topic = unique_name("topic")
    broker.create_topic(topic, partitions=2)
    lease, interval = 8.0, 4.0
    procs = [Proc(replica_config(tmp_path, f"r{i}", store_url=pg_url, bootstrap=broker.bootstrap, topic=topic,
                                 group=f"g-{topic}", pairs=("triage",), interval=interval, lease=lease,
                                 candidate="candidate.int8.onnx")).start() for i in range(2)]
    stop = threading.Event()

    def feed():   # fresh samples for every run (a run with no pending samples is skipped)
        i = 0
        while not stop.is_set():
            produce_values(broker.bootstrap, topic, traffic(40, f"f{i}-", pairs=("triage",), bad_every=0, seed=i))
            i += 1
            stop.wait(1.0)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        def holder():
            live = {r["owner"]: r["pid"] for r in rows(pg_url, replicas)}
            held = [r for r in rows(pg_url, runs) if r["status"] == "running" and r["owner"] in live]
            return held and (held[0], live[held[0]["owner"]])
        run, pid = wait_for(holder, 180, "a scheduled run in progress", step=0.1)
        victim = next(p for p in procs if p.p.pid == pid)
        victim.kill()
        killed_at = utcnow()
        survivor = next(p for p in procs if p is not victim)

        def next_run():
            return [r for r in rows(pg_url, runs) if r["owner"] != run["owner"] and r["trigger"] == "schedule"
                    and r["started_at"] > killed_at]
        later = wait_for(next_run, 120, "the survivor's next scheduled run")
        took = (min(r["started_at"] for r in later) - killed_at).total_seconds()
        # within the lease (+ one interval for the next slot, + the tick): not a speed figure, the bound
        print(f"lease {lease:g} s, interval {interval:g} s: the next run started {took:.1f} s after the kill")
        assert took <= lease + interval + 2, took
        wait_for(lambda: next(r for r in rows(pg_url, runs) if r["id"] == run["id"])["status"] == "abandoned",
                 max(3 * lease, 60), "the killed replica's run to be marked abandoned")   # a bound, not a speed figure: slack for a loaded machine
        assert survivor.p.poll() is None
    finally:
        stop.set()
        for p in procs:
            p.stop()


@pytest.mark.postgres
@pytest.mark.kafka
def test_three_replicas_sigkill_one_mid_ingest_nothing_lost_twice_or_sent_twice(tmp_path, pg_url, broker):
    result = run_three_replicas(tmp_path, pg_url, broker, MESSAGES)
    print({k: v for k, v in result.items() if k != "keys_missing"})
    s, distinct, q = result["counts"]
    assert distinct == s, "an id was stored twice"
    assert s + q == result["produced"], result
    assert not result["duplicate_slots"], result["duplicate_slots"]
    assert set(result["runs_per_pair"]) == set(PAIRS)
    assert not result["overlapping_runs"], result["overlapping_runs"]
    assert not result["still_running"]
    assert result["outbox_pending"] == 0 and result["notifications"] > 0
    assert result["keys_missing"] == set()
    # a send in flight when the daemon was killed may be repeated (same key): at most that one
    assert result["repeats"] <= 1, result["repeats"]
    assert result["same_incidents_on_every_replica"]


def run_three_replicas(tmp_path: Path, pg_url: str, broker, n: int, *, client: str = "confluent") -> dict:
    """The scenario of the test above; returns what it observed (benchmarks/scale.py prints it)."""
    topic = unique_name("topic")
    broker.create_topic(topic, partitions=6)
    rx = Receiver()
    produced = produce_values(broker.bootstrap, topic, traffic(n, "m"))
    t0 = time.monotonic()
    procs = [Proc(replica_config(tmp_path, f"r{i}", store_url=pg_url, bootstrap=broker.bootstrap, topic=topic,
                                 group=f"g-{topic}", client=client, notify=rx.url)).start() for i in range(3)]
    try:
        wait_for(lambda: sum(counts(pg_url)[::2]) >= n // 4, 600, "a quarter of the messages")
        procs[0].kill()
        at_kill = sum(counts(pg_url)[::2])
        procs[0].start()
        wait_for(lambda: sum(counts(pg_url)[::2]) >= produced, 1200, "every message", step=1.0)
        ingest_s = time.monotonic() - t0
        time.sleep(12)   # a last scheduled round and its notifications (escalation after 2 s)
        wait_for(lambda: all(r["status"] != "pending" for r in rows(pg_url, outbox)), 120, "the outbox to drain")
        incidents_seen = []
        for p in procs:
            with urllib.request.urlopen(f"http://127.0.0.1:{p.api_port()}/api/v1/incidents?limit=500", timeout=10) as r:
                body = json.loads(r.read())
            items = body["incidents"] if isinstance(body, dict) else body
            incidents_seen.append(sorted(i["id"] for i in items))
    finally:
        codes = [p.stop() for p in procs]
        rx.stop()
    slots = claimed_slots(procs)
    all_runs = rows(pg_url, runs)
    sent = {r["idempotency_key"] for r in rows(pg_url, outbox) if r["status"] == "sent"}
    received = collections.Counter(rx.keys())
    return {"produced": produced, "counts": counts(pg_url), "at_kill": at_kill, "ingest_seconds": ingest_s,
            "duplicate_slots": [k for k, c in collections.Counter((p, d) for p, d, _ in slots).items() if c > 1],
            "slots": len(slots), "runs_per_pair": collections.Counter(r["pair"] for r in all_runs),
            "overlapping_runs": _overlaps(all_runs), "still_running": [r["id"] for r in all_runs if r["status"] == "running"],
            "outbox_pending": sum(1 for r in rows(pg_url, outbox) if r["status"] == "pending"),
            "notifications": len(sent), "keys_missing": sent - set(received),
            "repeats": sum(c - 1 for c in received.values()),
            "same_incidents_on_every_replica": len({tuple(i) for i in incidents_seen}) == 1 and bool(incidents_seen[0]),
            "exit_codes": codes}


def _overlaps(all_runs: list[dict]) -> list[tuple[int, int]]:
    """Pairs of runs of one pair whose [started, finished] overlap (a pair run twice at once)."""
    out = []
    by_pair = collections.defaultdict(list)
    for r in all_runs:
        if r["trigger"] == "schedule" and r["finished_at"] is not None:
            by_pair[r["pair"]].append(r)
    for rs in by_pair.values():
        rs.sort(key=lambda r: r["started_at"])
        for a, b in zip(rs, rs[1:]):
            if b["started_at"] < a["finished_at"] and a["status"] != "abandoned":
                out.append((a["id"], b["id"]))
    return out

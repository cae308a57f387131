"""The figures the incident issue asks for, measured and printed (run with -s to see them):
a receiver down for 60 s then back gets every notification exactly once; 1,000 failing runs of one
check make one incident and no notification storm. (The restart figure is in test_escalation.py.)
Time is an injected clock: no test sleeps through a real minute."""
from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import func, select

from sentinel.checks.base import CheckResult
from sentinel.config import NotifierConfig
from sentinel.incidents import IncidentEngine
from sentinel.incidents.escalation import parse_policies
from sentinel.notifiers import OutboxDispatcher, WebhookNotifier
from sentinel.storage import tables as t
from sentinel.storage.repository import as_utc

from receivers import Receiver


def fail(slice_="overall", critical=False):
    return CheckResult("decision_flips", slice_, "fail", 0.2, 500, "flip rate = 0.2 (>= fail level 0.05)",
                       0.02, 0.05, critical=critical)


def outbox_rows(store):
    with store.engine.connect() as conn:
        return [r._mapping for r in conn.execute(select(t.outbox).order_by(t.outbox.c.id))]


def test_receiver_down_for_60s_then_back_gets_every_notification_exactly_once(store, clock):
    rx = Receiver()
    rx.stop()                                     # down: connections to its port are refused
    targets = ["ops-hook", "audit-hook"]
    eng = IncidentEngine(store, targets=targets, group_slices=False, clock=clock)
    notifiers = {n: WebhookNotifier(n, rx.url, timeout=2) for n in targets}
    # the daemon's defaults: 1 s base backoff, doubling, capped at 300 s, jittered; 20 attempts
    d = OutboxDispatcher(store, notifiers, clock=clock, backoff_seconds=1.0, rng=random.Random(5),
                         max_attempts=NotifierConfig().max_attempts)
    start = clock.now
    [*changes] = eng.process_run("triage", store.create_run("triage", "t", {}), [fail(f"s{i}") for i in range(10)])
    attempts_while_down = 0
    up_at = None
    for second in range(1, 900):
        clock.advance(1)
        if second == 5:
            for ch in changes[:5]:
                eng.ack(ch.incident_id, "alice")
        if second == 8:
            for ch in changes[:3]:
                eng.resolve(ch.incident_id, "alice")
        if second == 60:
            rx.start()                            # back, on the same port
            up_at = clock.now
        counts = d.dispatch_due()
        if up_at is None:
            attempts_while_down += counts["retry"] + counts["failed"]
            assert counts["sent"] == 0
        if up_at is not None and d.pending_count() == 0:
            break
    rx.stop()
    rows = outbox_rows(store)
    keys = [r["headers"]["Idempotency-Key"] for r in rx.accepted]
    assert len(rows) == (10 + 5 + 3) * len(targets) == 36
    assert {r["status"] for r in rows} == {"sent"}
    assert sorted(keys) == sorted(r["idempotency_key"] for r in rows)            # every one, exactly once
    assert len(rx.requests) == len(rows)                                         # no repeats reached it
    last_sent = max(as_utc(r["sent_at"]) for r in rows)
    delay_after_up = (last_sent - up_at).total_seconds()
    print(f"\nFIGURE outage: {len(rows)} notifications (18 transitions x 2 targets) owed while the receiver was "
          f"down for {(up_at - start).total_seconds():.0f}s; {attempts_while_down} failed attempts during the outage; "
          f"after it came back: {len(keys)} delivered, {len(set(keys))} distinct keys, "
          f"{len(keys) - len(set(keys))} duplicates, all delivered {delay_after_up:.0f}s after recovery "
          f"(max attempts per row {max(r['attempts'] for r in rows)})")
    assert delay_after_up <= 100        # the 7th attempt's backoff is at most 64 s x 1.5 jitter


def test_1000_failing_runs_make_one_incident_and_no_notification_storm(store, clock):
    rx = Receiver()
    policy = parse_policies({"policies": [{"name": "p", "tiers": [
        {"targets": ["oncall"], "delay": "15m"}, {"targets": ["lead"]}]}]}, source="p.yaml", targets=None)
    eng = IncidentEngine(store, targets=["oncall", "lead"], policies=policy, open_after=2, clock=clock)
    d = OutboxDispatcher(store, {n: WebhookNotifier(n, rx.url, timeout=5) for n in ("oncall", "lead")}, clock=clock)
    results = [fail("overall"), fail("class=malignant", critical=True), fail("region=eu"),
               CheckResult("decision_flips", "region=us", "pass", 0.0, 500, "flip rate = 0 (< warn level 0.02)")]
    t0 = time.perf_counter()
    for _ in range(1000):
        run_id = store.create_run("triage", "schedule", {})
        eng.process_run("triage", run_id, results)
        clock.advance(300)                       # a run every 5 minutes: ~3.5 simulated days
        eng.tick()
        d.dispatch_due()
    seconds = time.perf_counter() - t0
    rx.stop()
    [inc] = eng.list()
    with store.engine.connect() as conn:
        n_incidents = conn.execute(select(func.count()).select_from(t.incidents)).scalar_one()
        n_events = conn.execute(select(func.count()).select_from(t.incident_events)).scalar_one()
    rows = outbox_rows(store)
    print(f"\nFIGURE storm: 1000 failing runs (3 failing slices each) in {seconds:.1f}s "
          f"({seconds:.3f} ms per run): {n_incidents} incident, occurrences {inc['occurrences']}, "
          f"{n_events} audit events, {len(rows)} outbox rows, {len(rx.accepted)} deliveries "
          f"({', '.join(r['target'] + ':' + r['payload']['event'] for r in rows)})")
    assert n_incidents == 1 and inc["occurrences"] == 999        # the first run only started the streak
    assert inc["slices"] == ["overall", "class=malignant", "region=eu"] and inc["severity"] == "critical"
    assert [(r["target"], r["payload"]["event"]) for r in rows] == [("oncall", "opened"), ("lead", "escalated")]
    assert len(rx.accepted) == 2

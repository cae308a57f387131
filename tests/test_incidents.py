"""The incident engine against a real store, SQLite and PostgreSQL (the ``store`` fixture in
conftest.py): dedupe by fingerprint, severity, audited transitions, and outbox rows written with
the transitions they announce."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from sentinel.checks.base import CheckResult
from sentinel.errors import NotFoundError, StateError
from sentinel.incidents import IncidentEngine, fingerprint
from sentinel.storage import tables as t
from sentinel.storage.repository import open_store

TARGETS = ("ops-webhook", "audit-webhook")


@pytest.fixture
def engine(store, clock):
    return IncidentEngine(store, targets=TARGETS, runbook_url="https://runbooks.example/flips", clock=clock)


def run(store, pair="triage"):
    return store.create_run(pair, "schedule", {})


def flips(status="fail", value=0.23, slice_="overall", critical=False):
    return CheckResult(check="decision_flips", slice=slice_, status=status, value=value, n=1000,
                       message=f"flip rate = {value:.4g} (>= fail level 0.05, n=1000)", warn=0.02, fail=0.05,
                       evidence={"flips": 230}, critical=critical)


def outbox_rows(store, incident_id=None):
    with store.engine.connect() as conn:
        q = select(t.outbox).order_by(t.outbox.c.id)
        if incident_id is not None:
            q = q.where(t.outbox.c.incident_id == incident_id)
        return [dict(r._mapping) for r in conn.execute(q)]


def test_repeated_failure_updates_one_incident_without_notifying_again(store, engine, clock):
    r1, r2 = run(store), run(store)
    [opened] = engine.process_run("triage", r1, [flips(value=0.23)], report_path="reports/1.html")
    clock.advance(300)
    [updated] = engine.process_run("triage", r2, [flips(value=0.31)], report_path="reports/2.html")

    assert opened.action == "opened" and updated.action == "updated"
    assert opened.incident_id == updated.incident_id
    assert opened.notified == TARGETS and updated.notified == ()
    assert opened.fingerprint == fingerprint("triage", "decision_flips")        # slices grouped per check

    [inc] = engine.list()
    assert inc["state"] == "open" and inc["occurrences"] == 2 and inc["severity"] == "high"
    assert inc["first_run_id"] == r1 and inc["last_run_id"] == r2
    assert inc["run_ids"] == [r1, r2] and inc["report"] == "reports/2.html"
    assert inc["evidence"]["result"]["value"] == pytest.approx(0.31)       # latest evidence
    # a result without a decision is titled by its own message, not by its value beside a level
    assert inc["title"] == "triage: decision_flips failed on overall: flip rate = 0.23 (>= fail level 0.05, n=1000)"
    assert inc["runbook_url"] == "https://runbooks.example/flips"
    assert inc["updated_at"] == clock.now and inc["opened_at"] == clock.now - dt.timedelta(seconds=300)

    full = engine.get(inc["id"])
    assert [e["action"] for e in full["events"]] == ["opened", "updated"]
    assert full["events"][1]["run_id"] == r2

    rows = outbox_rows(store)
    assert sorted(r["target"] for r in rows) == sorted(TARGETS)     # one per target, from the open only
    assert {r["status"] for r in rows} == {"pending"}
    assert {r["idempotency_key"] for r in rows} == {f"{inc['id']}:{opened.event_id}:{tg}" for tg in TARGETS}
    payload = rows[0]["payload"]
    assert payload["version"] == 1 and payload["event"] == "opened" and payload["actor"] is None
    assert payload["incident"]["fingerprint"] == opened.fingerprint
    assert payload["incident"]["run_ids"] == [r1] and payload["incident"]["report"] == f"/runs/{r1}/report"
    assert payload["incident"]["url"] == f"/incidents/{inc['id']}"     # console paths (absolute with api.public_url)
    assert payload["incident"]["evidence"]["details"]["flips"] == 230
    assert payload["at"] == "2026-11-21T10:00:00Z"
    assert [d["event"] for d in full["deliveries"]] == ["opened", "opened"]


def test_reprocessing_the_same_run_does_not_double_count(store, engine):
    r1 = run(store)
    engine.process_run("triage", r1, [flips()])
    assert engine.process_run("triage", r1, [flips()]) == []
    assert engine.list()[0]["occurrences"] == 1


def test_duplicate_fingerprint_within_a_run_is_handled_once(store, engine):
    changes = engine.process_run("triage", run(store), [flips(value=0.1), flips(value=0.2, critical=True)])
    assert len(changes) == 1 and changes[0].severity == "critical"     # the worse of the two wins
    assert len(outbox_rows(store)) == len(TARGETS)


def test_slices_of_one_check_are_grouped_into_one_incident(store, engine):
    r1 = run(store)
    [ch] = engine.process_run("triage", r1, [flips(slice_="region=eu", value=0.1), flips(slice_="overall"),
                                             flips(status="pass", value=0.0, slice_="region=us")])
    engine.process_run("other", run(store, "other"), [flips(slice_="overall")])
    assert len(engine.list()) == 2 and len(engine.list(pair="other")) == 1
    inc = engine.get(ch.incident_id)
    assert inc["slice"] == "overall" and inc["slices"] == ["region=eu", "overall"]     # failing ones only
    assert inc["title"].startswith("triage: decision_flips failed on overall and 1 more slice: ")
    assert [s["value"] for s in inc["evidence"]["slices"]] == [pytest.approx(0.1), pytest.approx(0.23)]
    # a slice failing later updates the same incident and is listed
    [upd] = engine.process_run("triage", run(store), [flips(slice_="region=us")])
    assert upd.action == "updated" and engine.get(ch.incident_id)["slices"] == ["region=us"]


def test_another_slice_is_another_incident_without_grouping(store):
    eng = IncidentEngine(store, targets=TARGETS, group_slices=False)
    eng.process_run("triage", run(store), [flips(slice_="overall"), flips(slice_="region=eu")])
    incidents = eng.list()
    assert len(incidents) == 2 and len({i["fingerprint"] for i in incidents}) == 2
    assert {i["fingerprint"] for i in incidents} == {fingerprint("triage", "decision_flips", s)
                                                      for s in ("overall", "region=eu")}


def test_severity_from_status_and_criticality_and_only_raised(store):
    eng = IncidentEngine(store, targets=["x"], open_on=("warn", "fail"))
    [warn] = eng.process_run("triage", run(store), [flips(status="warn", value=0.03)])
    assert warn.severity == "warning"
    assert eng.list()[0]["title"].startswith("triage: decision_flips warned on overall")
    [crit] = eng.process_run("triage", run(store), [flips(critical=True)])
    assert crit.incident_id == warn.incident_id and crit.severity == "critical"
    [still] = eng.process_run("triage", run(store), [flips(status="warn", value=0.03)])
    assert still.severity == "critical"                                 # never lowered by a milder repeat
    inc = eng.get(warn.incident_id)
    assert inc["events"][1]["detail"]["severity"] == {"from": "warning", "to": "critical"}


def test_pass_and_other_statuses_never_open(store, engine):
    results = [flips(status="pass", value=0.0), flips(status="warn", value=0.03),
               CheckResult("latency_p95", "overall", "insufficient_data", None, 2, "too few"),
               CheckResult("latency_p95", "overall", "error", None, 200, "broken")]
    assert engine.process_run("triage", run(store), results) == []
    assert engine.list() == [] and outbox_rows(store) == []


def test_ack_then_resolve_is_audited_and_notified(store, engine, clock):
    [ch] = engine.process_run("triage", run(store), [flips()])
    clock.advance(60)
    acked = engine.ack(ch.incident_id, "alice", note="looking")
    assert acked["state"] == "acknowledged"
    clock.advance(60)
    resolved = engine.resolve(ch.incident_id, "bob", note="rolled back to fp32")
    assert resolved["state"] == "resolved" and resolved["resolved_at"] == clock.now

    inc = engine.get(ch.incident_id)
    events = inc["events"]
    assert [(e["action"], e["actor"], e["from_state"], e["to_state"]) for e in events] == [
        ("opened", "sentinel", None, "open"),
        ("acknowledged", "alice", "open", "acknowledged"),
        ("resolved", "bob", "acknowledged", "resolved")]
    assert events[1]["detail"] == {"note": "looking"} and events[2]["detail"] == {"note": "rolled back to fp32"}

    rows = outbox_rows(store, ch.incident_id)
    assert len(rows) == 3 * len(TARGETS)
    by_event = {}
    for r in rows:
        by_event.setdefault(r["payload"]["event"], []).append(r)
    assert {e: len(v) for e, v in by_event.items()} == {"opened": 2, "acknowledged": 2, "resolved": 2}
    assert {r["payload"]["actor"] for r in by_event["resolved"]} == {"bob"}
    assert {r["payload"]["incident"]["state"] for r in by_event["acknowledged"]} == {"acknowledged"}
    assert len({r["idempotency_key"] for r in rows}) == len(rows)


def test_open_can_be_resolved_directly(store, engine):
    [ch] = engine.process_run("triage", run(store), [flips()])
    assert engine.resolve(ch.incident_id, "carol")["state"] == "resolved"


def test_invalid_transitions_raise(store, engine):
    [ch] = engine.process_run("triage", run(store), [flips()])
    engine.ack(ch.incident_id, "alice")
    with pytest.raises(StateError, match="already acknowledged"):
        engine.ack(ch.incident_id, "alice")
    engine.resolve(ch.incident_id, "alice")
    with pytest.raises(StateError, match="cannot acknowledge incident .*: it is resolved"):
        engine.ack(ch.incident_id, "bob")
    with pytest.raises(StateError, match="already resolved"):
        engine.resolve(ch.incident_id, "bob")
    with pytest.raises(NotFoundError):
        engine.ack(9999, "bob")
    with pytest.raises(NotFoundError):
        engine.get(9999)
    # failed transitions leave no audit or outbox trace
    assert len(engine.get(ch.incident_id)["events"]) == 3
    assert len(outbox_rows(store, ch.incident_id)) == 3 * len(TARGETS)


def test_failure_after_resolve_opens_a_new_incident(store, engine):
    [first] = engine.process_run("triage", run(store), [flips()])
    engine.resolve(first.incident_id, "alice")
    [second] = engine.process_run("triage", run(store), [flips()])
    assert second.action == "opened" and second.incident_id != first.incident_id
    assert second.fingerprint == first.fingerprint
    assert [i["state"] for i in engine.list(state="open")] == ["open"]
    assert len(engine.list(state="resolved")) == 1
    assert engine.open_counts() == {("triage", "high"): 1}


def test_acknowledged_incident_still_absorbs_repeats(store, engine):
    [ch] = engine.process_run("triage", run(store), [flips()])
    engine.ack(ch.incident_id, "alice")
    [again] = engine.process_run("triage", run(store), [flips()])
    assert again.action == "updated" and again.incident_id == ch.incident_id and again.state == "acknowledged"


def test_run_ids_are_capped(store, engine):
    ids = [run(store) for _ in range(55)]
    for r in ids:
        engine.process_run("triage", r, [flips()])
    [inc] = engine.list()
    assert inc["occurrences"] == 55 and inc["run_ids"] == ids[-50:]


def test_list_rejects_unknown_state(engine):
    with pytest.raises(ValueError, match="unknown incident state"):
        engine.list(state="opened")


def test_racing_engines_open_one_incident(store, store_url):
    import threading

    # two "processes" (own engine, own connection pool) reporting the same problem at once
    others = [open_store(store_url, migrate=False) for _ in range(2)]
    run_ids = [[run(store) for _ in range(10)] for _ in others]
    barrier = threading.Barrier(2)
    errors = []

    def work(s, ids):
        eng = IncidentEngine(s, targets=TARGETS)
        barrier.wait()
        try:
            for r in ids:
                eng.process_run("triage", r, [flips()])
        except Exception as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, ids)) for s, ids in zip(others, run_ids)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    for s in others:
        s.dispose()
    assert errors == []
    [inc] = IncidentEngine(store, targets=TARGETS).list()
    assert inc["occurrences"] == 20
    assert len(outbox_rows(store)) == len(TARGETS)


# -- flapping control, reopen window, silences, runbooks ---------------------------------------

def passing(slice_="overall"):
    return flips(status="pass", value=0.0, slice_=slice_)


def test_opens_only_after_n_consecutive_failing_runs(store, clock):
    eng = IncidentEngine(store, targets=TARGETS, open_after=3, clock=clock)
    seq = ["fail", "fail", "pass", "fail", "fail", "insufficient", "fail"]
    actions = []
    for s in seq:
        result = {"fail": flips(), "pass": passing(),
                  "insufficient": CheckResult("decision_flips", "overall", "insufficient_data", None, 3, "too few")}[s]
        actions.append([c.action for c in eng.process_run("triage", run(store), [result])])
    # a pass resets the streak; insufficient data neither breaks nor extends it
    assert actions == [[], [], [], [], [], [], ["opened"]]
    assert len(eng.list()) == 1 and len(outbox_rows(store)) == len(TARGETS)


def test_auto_resolves_after_m_passing_runs_and_tells_who_was_notified(store, clock):
    eng = IncidentEngine(store, targets=TARGETS, resolve_after=2, clock=clock)
    [ch] = eng.process_run("triage", run(store), [flips()])
    assert eng.process_run("triage", run(store), [passing()]) == []
    assert eng.process_run("triage", run(store), [flips()])[0].action == "updated"   # streak broken
    assert eng.process_run("triage", run(store), [passing()]) == []
    clock.advance(60)
    [res] = eng.process_run("triage", run(store), [passing()])
    assert res.action == "resolved" and res.notified == TARGETS
    inc = eng.get(ch.incident_id)
    assert inc["state"] == "resolved" and inc["resolved_at"] == clock.now
    last = inc["events"][-1]
    assert (last["action"], last["actor"], last["detail"]) == ("resolved", "sentinel",
                                                               {"note": "passed 2 consecutive run(s)"})
    assert [d["event"] for d in inc["deliveries"]] == ["opened"] * 2 + ["resolved"] * 2


def test_failure_within_reopen_window_reopens_the_same_incident(store, clock):
    eng = IncidentEngine(store, targets=TARGETS, reopen_window=3600, clock=clock)
    [first] = eng.process_run("triage", run(store), [flips()])
    eng.resolve(first.incident_id, "alice")
    clock.advance(1800)
    [again] = eng.process_run("triage", run(store), [flips()])
    assert again.action == "reopened" and again.incident_id == first.incident_id and again.notified == TARGETS
    inc = eng.get(first.incident_id)
    assert inc["state"] == "open" and inc["resolved_at"] is None and inc["occurrences"] == 2
    assert [(e["action"], e["from_state"], e["to_state"]) for e in inc["events"]][-1] == ("reopened", "resolved", "open")
    # outside the window: a new incident
    eng.resolve(first.incident_id, "alice")
    clock.advance(3601)
    [new] = eng.process_run("triage", run(store), [flips()])
    assert new.action == "opened" and new.incident_id != first.incident_id


def test_runbook_per_check_wins(store):
    eng = IncidentEngine(store, targets=TARGETS, runbook_url="https://rb/default",
                         runbooks={"decision_flips": "https://rb/flips"})
    eng.process_run("triage", run(store), [flips(), CheckResult("latency_p95", "overall", "fail", 2.0, 50,
                                                                "p95 ratio = 2 (>= fail level 1.5)", 1.0, 1.5)])
    assert {i["check"]: i["runbook_url"] for i in eng.list()} == {"decision_flips": "https://rb/flips",
                                                                    "latency_p95": "https://rb/default"}


def test_silence_holds_new_and_open_incidents_and_expiry_brings_them_back(store, clock):
    from sentinel.incidents.matchers import parse_matcher

    eng = IncidentEngine(store, targets=TARGETS, clock=clock)
    [lat] = eng.process_run("triage", run(store), [CheckResult("latency_p95", "overall", "fail", 2.0, 50, "p95", 1.0, 1.5)])
    s = eng.add_silence([parse_matcher("pair=triage"), parse_matcher("check=~latency.*|decision_flips")],
                        author="alice", reason="retraining the candidate", duration=3600)
    assert s["silenced"] == [lat.incident_id] and s["active"] and s["author"] == "alice"
    [fl] = eng.process_run("triage", run(store), [flips()])          # opens silenced: nobody paged
    assert fl.state == "silenced" and fl.notified == ()
    assert {i["state"] for i in eng.list()} == {"silenced"}
    rows_before = len(outbox_rows(store))
    assert rows_before == len(TARGETS)                               # only latency's opening, from before
    ev = eng.get(lat.incident_id)["events"][-1]
    assert (ev["action"], ev["actor"], ev["detail"]["note"]) == ("silenced", "alice", "retraining the candidate")
    # another pair is not covered
    [other] = eng.process_run("other", run(store, "other"), [flips()])
    assert other.state == "open"
    clock.advance(1800)
    assert eng.tick()["unsilenced"] == 0
    clock.advance(1801)                                              # the silence has expired
    assert eng.tick()["unsilenced"] == 2
    assert {i["state"] for i in eng.list(pair="triage")} == {"open"}
    new_rows = outbox_rows(store)[rows_before + len(TARGETS):]      # after other's opening
    assert sorted(r["payload"]["event"] for r in new_rows) == ["unsilenced"] * 4
    assert eng.silences() == [] and len(eng.silences(active_only=False)) == 1


def test_expire_silence_and_silence_input_errors(store, clock):
    from sentinel.incidents.matchers import parse_matcher

    eng = IncidentEngine(store, targets=TARGETS, clock=clock)
    [ch] = eng.process_run("triage", run(store), [flips()])
    s = eng.add_silence([parse_matcher("severity=high")], author="bob", reason="known", duration=600)
    assert eng.get(ch.incident_id)["state"] == "silenced"
    eng.expire_silence(s["id"], "bob")
    assert eng.get(ch.incident_id)["state"] == "open"
    with pytest.raises(StateError, match="already expired"):
        eng.expire_silence(s["id"], "bob")
    with pytest.raises(ValueError, match="reason"):
        eng.add_silence([parse_matcher("pair=x")], author="bob", reason=" ", duration=60)
    with pytest.raises(ValueError, match="matcher"):
        eng.add_silence([], author="bob", reason="r", duration=60)
    with pytest.raises(ValueError, match="positive duration"):
        eng.add_silence([parse_matcher("pair=x")], author="bob", reason="r", duration=-5)
    for bad, why in [("pair", "expected NAME=VALUE"), ("model=x", "unknown label 'model'"), ("check=~(", "invalid regex")]:
        with pytest.raises(ValueError, match=why):
            parse_matcher(bad)


def test_rows_stored_with_run_ids_in_their_evidence_read_the_same(store, engine):
    # Rows written before run_ids moved out of the evidence (today's stores) carry a copy of
    # them in the JSON; reads give the same incident either way, from the audit events.
    r1, r2 = run(store), run(store)
    [ch] = engine.process_run("triage", r1, [flips()], report_path="reports/1.html")
    engine.process_run("triage", r2, [flips(slice_="region=eu")], report_path="reports/2.html")
    new = engine.get(ch.incident_id)
    with store.engine.connect() as conn:
        stored = conn.execute(select(t.incidents.c.evidence).where(t.incidents.c.id == ch.incident_id)).scalar_one()
    assert sorted(stored) == ["report", "result", "slices"]              # one copy of each fact
    with store.engine.begin() as conn:
        conn.execute(update(t.incidents).where(t.incidents.c.id == ch.incident_id)
                     .values(evidence={**stored, "run_ids": [r1, r2]}))
    old = engine.get(ch.incident_id)
    assert old == new and engine.list() == [{k: v for k, v in new.items()
                                            if k not in ("events", "deliveries", "escalation")}]
    assert old["run_ids"] == [r1, r2] and old["report"] == "reports/2.html" and old["slices"] == ["region=eu"]
    assert (old["first_run_id"], old["last_run_id"]) == (r1, r2) and "run_ids" not in old["evidence"]

"""The rollout gate (sentinel/gate.py) on real stored runs, on both store backends, and the
kafka_guard action reading the same verdict through the real incident engine and outbox."""
from __future__ import annotations

import random

import pytest

from sentinel.checks.base import CheckResult
from sentinel.errors import NotFoundError
from sentinel.gate import GateError, gate_verdict, judge
from sentinel.incidents import IncidentEngine
from sentinel.notifiers import OutboxDispatcher
from sentinel.notifiers.kafka_guard import KafkaGuardNotifier

SHA = "ab" * 32
OTHER = "cd" * 32


class Cfg:
    pairs = {"triage": object()}


def flips(status, value=0.01, n=500, slice_="overall", message=None, check="decision_flips"):
    msg = message or (f"flip rate: {n} samples, need 100" if status == "insufficient_data"
                      else f"flip rate = {value} (n={n})")
    return CheckResult(check, slice_, status, value, n, msg, 0.02, 0.05, type="decision_flips")


def latency(status, value=0.8):
    return CheckResult("latency_p95", "overall", status, value, 200, f"latency ratio = {value}", 1.0, 1.5,
                       type="latency_p95")


def stored_run(store, sha, status, results=(), n=500, error=None, pair="triage"):
    """A run of candidate file ``sha`` stored the way the revalidation stores one."""
    rid = store.create_run(pair, "t", {"pair": pair, "models": {"baseline": {"sha256": "00" * 32},
                                                                "candidate": {"sha256": sha}}})
    if status != "running":
        store.finish_run(rid, status=status, n_samples=n, record=None, results=[r.to_row() for r in results],
                         error=error)
    return rid


def verdict(store, sha=SHA, **kw):
    return gate_verdict(store, Cfg(), "triage", sha, **kw)


def test_no_run_of_the_file_is_inconclusive_naming_the_configured_candidate(store):
    stored_run(store, OTHER, "pass", [flips("pass")])
    v = verdict(store, configured=OTHER)
    assert (v.verdict, v.ok, v.runs, v.n) == ("inconclusive", False, [], 0)
    assert v.reason == f"no finished run of candidate {SHA[:12]} of pair 'triage' yet; the pair is configured with candidate {OTHER[:12]}"


def test_the_latest_run_of_that_file_decides_not_another_files(store):
    first = stored_run(store, SHA, "fail", [flips("fail", 0.2)])
    second = stored_run(store, SHA, "pass", [flips("pass", 0.01, n=800), latency("pass")], n=800)
    stored_run(store, OTHER, "fail", [flips("fail", 0.3)])       # another file's failure: not this one's
    v = verdict(store)
    assert (v.verdict, v.ok, v.n, v.run, v.runs) == ("pass", True, 800, second, [second, first])
    assert v.checks["decision_flips"]["status"] == "pass" and v.checks["latency_p95"]["value"] == 0.8
    assert v.at is not None and v.to_dict("triage", SHA)["ok"] is True


def test_a_failing_slice_fails_the_gate_and_says_which(store):
    stored_run(store, SHA, "fail", [flips("pass", 0.01), flips("fail", 0.12, 300, "class=malignant",
                                                                  "missed malignant rate = 0.12 (>= fail level 0.03, n=300)")])
    v = verdict(store)
    assert v.verdict == "fail" and not v.ok
    assert v.reason.endswith("decision_flips failed on class=malignant: missed malignant rate = 0.12 (>= fail level 0.03, n=300)")


def test_a_window_below_min_samples_is_inconclusive_with_the_checks_own_words(store):
    stored_run(store, SHA, "insufficient_data", [flips("insufficient_data", None, 40), latency("pass")], n=40)
    v = verdict(store)
    assert (v.verdict, v.n) == ("inconclusive", 40)
    assert "decision_flips has not judged: insufficient_data: flip rate: 40 samples, need 100" in v.reason


def test_error_runs_never_pass_and_never_clear_a_failure(store):
    stored_run(store, SHA, "pass", [flips("pass")])
    stored_run(store, SHA, "error", error="RuntimeError: onnxruntime refused the file")
    v = verdict(store)
    assert v.verdict == "inconclusive" and "ended in error (RuntimeError: onnxruntime refused the file)" in v.reason
    stored_run(store, SHA, "fail", [flips("fail", 0.2)])
    stored_run(store, SHA, "error", error="boom")
    assert verdict(store).verdict == "fail"
    assert verdict(store, OTHER).verdict == "inconclusive"
    stored_run(store, OTHER, "error", error="boom")
    assert "every run of this candidate ended in error; run" in verdict(store, OTHER).reason


def test_running_and_abandoned_runs_are_not_judgements(store):
    done = stored_run(store, SHA, "warn", [flips("warn", 0.03)])
    stored_run(store, SHA, "running")
    stored_run(store, SHA, "abandoned")
    v = verdict(store)
    assert (v.verdict, v.run, v.runs) == ("pass", done, [done]) and "warnings: decision_flips" in v.reason


def test_required_checks_can_be_named(store):
    stored_run(store, SHA, "pass", [flips("pass"), latency("pass")])
    assert verdict(store, require=["latency_p95"]).verdict == "pass"
    v = verdict(store, require=["critical_recall"])
    assert v.verdict == "inconclusive" and v.reason.endswith("no result of critical_recall to judge")


def test_bad_questions_are_one_clear_error(store):
    with pytest.raises(GateError, match=r"candidate must be the candidate file's sha256 \(64 hex digits\), got 'abc'"):
        verdict(store, "abc")
    with pytest.raises(NotFoundError):
        gate_verdict(store, Cfg(), "nope", SHA)
    assert verdict(store, SHA.upper()).verdict == "inconclusive"      # hex case does not matter


def test_judge_fail_beats_missing_data():
    v = judge([flips("insufficient_data", None, 10).to_row(), latency("fail", 2.0).to_row()])
    assert v.verdict == "fail" and v.reason.startswith("latency_p95 failed on overall")


class RecordingGuard(KafkaGuardNotifier):
    """The real guard's decision and message; what it would produce is kept instead of sent
    (the Kafka path is tests/test_notifiers.py's)."""

    def __init__(self):
        super().__init__("guard", bootstrap_servers=["127.0.0.1:1"], topic="control", action="route_to_baseline")
        self.decided = []

    def send(self, payload, *, idempotency_key):
        self.decided.append(self.control_message(payload, idempotency_key))


@pytest.mark.parametrize("status, gate, guard", [("fail", "fail", True), ("warn", "pass", None)])
def test_kafka_guard_acts_exactly_when_the_gate_fails(store, clock, status, gate, guard):
    results = [flips(status, 0.2 if status == "fail" else 0.03), latency("pass")]
    rid = stored_run(store, SHA, status, results)
    guard_target = RecordingGuard()
    engine = IncidentEngine(store, targets=["guard"], open_on=("warn", "fail"), clock=clock)
    [change] = engine.process_run("triage", rid, results)
    OutboxDispatcher(store, {"guard": guard_target}, clock=clock, rng=random.Random(1)).dispatch_due()
    assert verdict(store).verdict == gate
    [msg] = guard_target.decided
    assert (msg and msg["active"]) == guard
    if msg:
        assert msg["incident_id"] == change.incident_id and msg["event"] == "opened"


def test_an_unresolved_incident_of_the_file_holds_it_back_until_resolved(store, clock):
    engine = IncidentEngine(store, targets=[], clock=clock)
    failing = [flips("fail", 0.2)]
    bad = stored_run(store, SHA, "fail", failing)
    [change] = engine.process_run("triage", bad, failing)
    stored_run(store, SHA, "pass", [flips("pass")])
    assert verdict(store).verdict == "pass"                          # runs alone: the newer run passed
    v = verdict(store, incidents=engine)
    assert v.verdict == "fail" and v.reason.startswith(f"incident #{change.incident_id} (decision_flips) is open: run {bad}")
    engine.ack(change.incident_id, "alice")
    assert "is acknowledged" in verdict(store, incidents=engine).reason
    assert verdict(store, OTHER, incidents=engine).verdict == "inconclusive"   # another file is not held by it
    engine.resolve(change.incident_id, "alice")
    assert verdict(store, incidents=engine).verdict == "pass"

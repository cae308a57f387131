"""Escalation policies: tiers on stored timers (injected clock), repeat loops, ack stops, resolution
tells everyone notified, policy validation errors, and a daemon process killed mid-escalation that
escalates on time after a restart."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml
from sqlalchemy import select

from sentinel.checks.base import CheckResult
from sentinel.cli import main
from sentinel.errors import ConfigError
from sentinel.incidents import IncidentEngine
from sentinel.incidents.escalation import load_policies, parse_policies
from sentinel.storage import tables as t
from sentinel.storage.repository import as_utc, open_store

TARGETS = ["slack", "pager", "lead", "audit"]
POLICY = {"policies": [
    {"name": "critical", "match": ["severity=critical"],
     "tiers": [{"targets": ["slack", "pager"], "delay": "10m"}, {"targets": ["lead"], "delay": "20m"}], "repeat": 1},
    {"name": "default", "match": ["pair=triage"],
     "tiers": [{"targets": ["slack"], "delay": "15m"}, {"targets": ["pager"]}]},
]}


def fail(critical=False):
    return CheckResult("decision_flips", "overall", "fail", 0.2, 500, "flip rate = 0.2 (>= fail level 0.05)",
                       0.02, 0.05, critical=critical)


def engine(store, clock, policy=POLICY):
    return IncidentEngine(store, targets=TARGETS, policies=parse_policies(policy, source="p.yaml", targets=TARGETS),
                          clock=clock)


def sent_to(store, incident_id):
    """(event, tier, target) for every outbox row of the incident, in order."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.outbox).where(t.outbox.c.incident_id == incident_id).order_by(t.outbox.c.id))
        return [(r.payload["event"], (r.payload.get("escalation") or {}).get("tier"), r.target) for r in rows]


def test_tiers_escalate_on_their_delays_and_repeat(store, clock):
    eng = engine(store, clock)
    [ch] = eng.process_run("triage", store.create_run("triage", "t", {}), [fail(critical=True)])
    assert ch.notified == ("slack", "pager")
    clock.advance(599)
    assert eng.tick()["escalated"] == 0
    clock.advance(1)                                            # 10 min: tier 2
    assert eng.tick()["escalated"] == 1
    clock.advance(20 * 60)                                      # 30 min: repeat, tier 1 again
    assert eng.tick()["escalated"] == 1
    clock.advance(10 * 60)                                      # 40 min: repeat, tier 2
    assert eng.tick()["escalated"] == 1
    clock.advance(24 * 3600)                                    # the repeat is used up
    assert eng.tick()["escalated"] == 0
    assert sent_to(store, ch.incident_id) == [
        ("opened", 1, "slack"), ("opened", 1, "pager"), ("escalated", 2, "lead"),
        ("escalated", 1, "slack"), ("escalated", 1, "pager"), ("escalated", 2, "lead")]
    inc = eng.get(ch.incident_id)
    assert [e["detail"].get("tier") for e in inc["events"] if e["action"] == "escalated"] == [2, 1, 2]
    assert inc["escalation"]["status"] == "done" and inc["escalation"]["next_at"] is None
    eng.resolve(ch.incident_id, "alice")
    assert sorted(x[2] for x in sent_to(store, ch.incident_id) if x[0] == "resolved") == ["lead", "pager", "slack"]


def test_ack_stops_escalation_and_is_announced_to_everyone_notified(store, clock):
    eng = engine(store, clock)
    [ch] = eng.process_run("triage", store.create_run("triage", "t", {}), [fail()])   # "default" policy
    clock.advance(15 * 60)
    assert eng.tick()["escalated"] == 1                          # pager
    clock.advance(60)
    eng.ack(ch.incident_id, "bob")
    clock.advance(7 * 24 * 3600)
    assert eng.tick()["escalated"] == 0
    eng.resolve(ch.incident_id, "bob")
    assert sent_to(store, ch.incident_id) == [
        ("opened", 1, "slack"), ("escalated", 2, "pager"),
        ("acknowledged", None, "slack"), ("acknowledged", None, "pager"),
        ("resolved", None, "slack"), ("resolved", None, "pager")]


def test_ack_before_the_first_delay_means_no_escalation(store, clock):
    eng = engine(store, clock)
    [ch] = eng.process_run("triage", store.create_run("triage", "t", {}), [fail()])
    eng.ack(ch.incident_id, "bob")
    clock.advance(3600)
    assert eng.tick()["escalated"] == 0
    assert [x[2] for x in sent_to(store, ch.incident_id)] == ["slack", "slack"]   # opened, acknowledged


def test_unmatched_incident_goes_to_every_target_at_once(store, clock):
    eng = engine(store, clock)
    [ch] = eng.process_run("other", store.create_run("other", "t", {}), [fail()])
    assert ch.notified == tuple(TARGETS)
    clock.advance(86400)
    assert eng.tick()["escalated"] == 0


def test_two_engines_ticking_escalate_each_step_once(store, store_url, tmp_path, clock):
    eng = engine(store, clock)
    [ch] = eng.process_run("triage", store.create_run("triage", "t", {}), [fail(critical=True)])
    other = open_store(store_url, migrate=False)
    twin = engine(other, clock)
    clock.advance(600)
    assert eng.tick()["escalated"] + twin.tick()["escalated"] == 1
    other.dispose()
    assert [x[2] for x in sent_to(store, ch.incident_id)] == ["slack", "pager", "lead"]


@pytest.mark.parametrize("change, expect", [
    (lambda p: p["policies"][0]["tiers"][1].update(targets=["leed"]),
     "policies[0].tiers[1].targets[0]: unknown target 'leed' (did you mean 'lead'?)"),
    (lambda p: p["policies"][0]["tiers"][0].update(delay="-5m"), "policies[0].tiers[0].delay: negative delay '-5m'"),
    (lambda p: p["policies"][1]["tiers"].append({"targets": ["lead"]}),
     "policies[1].tiers[2]: unreachable tier: policies[1].tiers[1] has no delay"),
    (lambda p: p["policies"][1].update(repeat=2), "policies[1].repeat: repeat 2 needs a delay on the last tier"),
    (lambda p: p["policies"][0]["tiers"][0].update(delay="soon"), "policies[0].tiers[0].delay: expected a duration"),
    (lambda p: p["policies"][0].update(tier=[]), "policies.0.tier: unknown key (did you mean 'tiers'?)"),
    (lambda p: p["policies"][1].update(name="critical"), "policies[1].name: duplicate policy name 'critical'"),
    (lambda p: p["policies"][0]["match"].append("team=ml"), "unknown label 'team'"),
])
def test_policy_errors_are_one_line_naming_file_and_key(tmp_path, capsys, change, expect):
    cfg_path = tmp_path / "sentinel.yaml"
    cfg_path.write_text(yaml.safe_dump({"pairs": {"triage": {"baseline": {"path": "b.pt2"}, "candidate": {"path": "c.onnx"},
                                                             "classes": ["a", "b"]}},
                                        "notifiers": {n: {"url": "http://127.0.0.1:9/"} for n in TARGETS}}))
    policy = yaml.safe_load(yaml.safe_dump(POLICY))
    change(policy)
    (tmp_path / "alerts").mkdir()
    path = tmp_path / "alerts" / "escalation.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    assert main(["validate", str(path), "--config", str(cfg_path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and expect in err[0] and str(path) in err[0], err
    with pytest.raises(ConfigError, match="no policy file matches"):
        load_policies("alerts/missing-*.yaml", base_dir=tmp_path, targets=TARGETS)


RESTART_SCRIPT = textwrap.dedent("""
    import sys, time
    from sentinel.incidents import IncidentEngine
    from sentinel.incidents.escalation import parse_policies
    from sentinel.storage.repository import open_store
    import yaml
    url, policy = sys.argv[1], yaml.safe_load(open(sys.argv[2]))
    eng = IncidentEngine(open_store(url), targets=["slack", "pager", "lead"],
                         policies=parse_policies(policy, source=sys.argv[2], targets=["slack", "pager", "lead"]))
    print("ready", flush=True)
    if len(sys.argv) > 3:
        sys.stdin.readline()          # started early (imports take a second here), ticks when told
    while True:                       # the daemon's timer loop (it ticks every second; faster here)
        eng.tick()
        time.sleep(0.02)
""")


def test_daemon_killed_mid_escalation_escalates_on_time_after_restart(tmp_path, store_url):
    url = store_url
    delay = 1.5
    policy = {"policies": [{"name": "p", "tiers": [{"targets": ["slack"], "delay": delay},
                                                   {"targets": ["pager"], "delay": delay}, {"targets": ["lead"]}]}]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(policy))
    (tmp_path / "tick.py").write_text(RESTART_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}

    def start(*wait):
        p = subprocess.Popen([sys.executable, str(tmp_path / "tick.py"), url, str(tmp_path / "p.yaml"), *wait],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        return p

    store = open_store(url)
    first, second = start(), start("wait")                  # both import at once; the second idles
    for p in (first, second):
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    eng = IncidentEngine(store, targets=["slack", "pager", "lead"],
                         policies=parse_policies(policy, source="p.yaml", targets=None))
    [ch] = eng.process_run("triage", store.create_run("triage", "t", {}), [fail()])
    opened = eng.get(ch.incident_id)["opened_at"]
    time.sleep(delay * 0.4)
    first.send_signal(signal.SIGKILL)                       # killed mid-escalation: tier 2 due in 0.6 * delay
    first.wait(10)
    killed_at = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.3)
    second.stdin.write("go\n")                              # a new process, nothing in memory
    second.stdin.flush()
    restarted_at = dt.datetime.now(dt.timezone.utc)
    try:
        deadline = time.monotonic() + 3 * delay
        while time.monotonic() < deadline:
            events = [e for e in eng.get(ch.incident_id)["events"] if e["action"] == "escalated"]
            if len(events) == 2:
                break
            time.sleep(0.05)
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait(10)
    assert [e["detail"]["tier"] for e in events] == [2, 3]
    late = [(e["at"] - as_utc(dt.datetime.fromisoformat(e["detail"]["due_at"].replace("Z", "+00:00")))).total_seconds()
            for e in events]
    due = [(opened + dt.timedelta(seconds=delay * (i + 1))) for i in range(2)]
    assert [dt.datetime.fromisoformat(e["detail"]["due_at"].replace("Z", "+00:00")) for e in events] == due
    print(f"\nFIGURE restart: opened {opened:%H:%M:%S.%f}, killed after {(killed_at - opened).total_seconds():.2f}s, "
          f"restarted after {(restarted_at - opened).total_seconds():.2f}s; tier 2 due at +{delay:.1f}s escalated "
          f"{late[0]:.3f}s late, tier 3 due at +{2 * delay:.1f}s escalated {late[1]:.3f}s late")
    assert all(0 <= x < 0.5 for x in late), late           # on time: within the loop's tick, not a restart later
    store.dispose()


def test_streaks_silences_and_reopen_on_each_backend(store, clock):
    from sentinel.incidents.matchers import parse_matcher

    eng = IncidentEngine(store, targets=["slack"], open_after=2, resolve_after=1, reopen_window=600, clock=clock)
    run = lambda: store.create_run("triage", "t", {})  # noqa: E731
    ok = CheckResult("decision_flips", "overall", "pass", 0.0, 500, "flip rate = 0")
    assert eng.process_run("triage", run(), [fail()]) == []
    [opened] = eng.process_run("triage", run(), [fail()])
    [resolved] = eng.process_run("triage", run(), [ok])
    assert (opened.action, resolved.action) == ("opened", "resolved")
    eng.add_silence([parse_matcher("check=decision_flips")], author="alice", reason="known", duration=60)
    eng.process_run("triage", run(), [fail()])
    [reopened] = eng.process_run("triage", run(), [fail()])
    assert reopened.action == "reopened" and reopened.state == "silenced" and reopened.notified == ()
    clock.advance(61)
    assert eng.tick()["unsilenced"] == 1 and eng.get(opened.incident_id)["state"] == "open"
    assert [e["action"] for e in eng.get(opened.incident_id)["events"]] == [
        "opened", "resolved", "reopened", "unsilenced"]


def test_daemon_start_with_a_bad_policy_is_a_one_line_config_error(tmp_path):
    from pairs import example_config

    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "escalation.yaml").write_text(yaml.safe_dump(
        {"policies": [{"name": "p", "tiers": [{"targets": ["nobody"]}]}]}))
    cfg = example_config(tmp_path, escalation="alerts/escalation.yaml",
                         notifiers={"hook": {"url": "http://127.0.0.1:9/"}})
    p = subprocess.run([sys.executable, "-m", "sentinel", "run", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=120)
    err = [line for line in p.stderr.splitlines() if line.startswith("sentinel: error:")]
    assert p.returncode == 2 and len(err) == 1, p.stderr[-2000:]
    assert "alerts/escalation.yaml: policies[0].tiers[0].targets[0]: unknown target 'nobody'" in err[0]


def judged(candidate, check="decision_flips"):
    r = CheckResult(check, "overall", "fail", 0.2, 500, "flip rate = 0.2 (>= fail level 0.05)", 0.02, 0.05)
    r.candidate = candidate     # a pair with several candidates: each result names its own
    return r


def test_silences_and_policies_match_the_candidate_of_a_multi_candidate_pair(store, clock):
    from sentinel.incidents.matchers import parse_matcher

    policy = {"policies": [
        {"name": "int8-team", "match": ["candidate=int8"],
         "tiers": [{"targets": ["pager"], "delay": "10m"}, {"targets": ["lead"]}]},
        {"name": "rest", "match": ["candidate!=int8"], "tiers": [{"targets": ["slack"]}]}]}
    eng = engine(store, clock, policy)
    eng.add_silence([parse_matcher("candidate=damaged")], author="alice", reason="known bad build", duration=3600)
    changes = eng.process_run("digits", store.create_run("digits", "t", {}),
                              [judged("int8"), judged("damaged"), judged("pruned50")])
    by = {c.candidate: c for c in changes}
    assert by["damaged"].state == "silenced" and by["damaged"].notified == ()
    assert (by["int8"].state, by["int8"].notified) == ("open", ("pager",))          # its own policy
    assert (by["pruned50"].state, by["pruned50"].notified) == ("open", ("slack",))
    clock.advance(600)
    assert eng.tick()["escalated"] == 1
    assert sent_to(store, by["int8"].incident_id) == [("opened", 1, "pager"), ("escalated", 2, "lead")]
    assert sent_to(store, by["damaged"].incident_id) == []
    assert eng.get(by["int8"].incident_id)["escalation"]["policy"] == "int8-team"
    # a single-candidate pair's incident has no candidate: candidate=damaged never silences it,
    # candidate!=int8 always matches it
    [single] = eng.process_run("triage", store.create_run("triage", "t", {}), [fail()])
    assert (single.candidate, single.state, single.notified) == (None, "open", ("slack",))
    # a silence added later moves the open incidents of the candidates it names, and only those
    s = eng.add_silence([parse_matcher("candidate=~pruned.*")], author="alice", reason="pruning study", duration=60)
    assert s["silenced"] == [by["pruned50"].incident_id] and s["matchers"] == ["candidate=~pruned.*"]
    clock.advance(61)
    assert eng.tick()["unsilenced"] == 1 and eng.get(by["pruned50"].incident_id)["state"] == "open"
    assert eng.get(by["damaged"].incident_id)["state"] == "silenced"       # its silence lasts an hour
    # the candidate failing again after its incident was resolved: still silenced
    eng.resolve(by["damaged"].incident_id, "alice")
    [again] = eng.process_run("digits", store.create_run("digits", "t", {}), [judged("damaged")])
    assert (again.candidate, again.state, again.notified) == ("damaged", "silenced", ())

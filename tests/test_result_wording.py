"""Every sentence built from a check result states the comparison that decided it, and states it
truly: each kind of check's pass, warn and fail results, from each of its tests, rendered through
every path a person reads (incident title, report headline, notification text, CLI print), and
every "value op level" written there is checked against its numbers."""
from __future__ import annotations

import contextlib
import html
import io
import operator
import re

import numpy as np
import pytest
from sqlalchemy import select

from sentinel.checks.base import build_check, evaluate_check
from sentinel.checks.data import ReferenceData, RunData
from sentinel.checks.perf.judge import Comparison
from sentinel.checks.statistical import Finding
from sentinel.checks.statistical import Test as StatTest
from sentinel.config import CheckSpec
from sentinel.incidents import IncidentEngine
from sentinel.notifiers.render import text_body
from sentinel.reports import headline, render_run
from sentinel.revalidation import RunOutcome
from sentinel.storage import tables as t
from sentinel.storage.repository import open_store
from sentinel.verdict import sentence

try:    # the CLI's printing moves to sentinel.printing with the cli/ package (branch a10-cli)
    from sentinel.printing import print_results
except ImportError:
    from sentinel.cli import print_results

NUM = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
# "0.03 >= fail level 0.02", "p_adj 0.001 <= 0.01", "rate = 0.03 (>= fail level 0.05, n=900)"
STATED = re.compile(rf"(?<![\w.])({NUM}) \(?(>=|<=|<|>) (?:(fail|warn) level )?({NUM})(?![\w.])")
OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt}

# the tests each statistical check type runs (by name)
STATISTICAL_TESTS = {
    "decision_flips": ["above level 0.02", "increase over reference"],
    "critical_recall": ["recall loss"],
    "calibration": ["Brier increase"],
    "confidence": ["low-confidence increase"],
    "fairness": ["positive-rate change vs other groups", "TPR change vs other groups"],
    "robustness": ["flip-rate increase"],
    "data_drift": ["ks vs reference", "z vs reference", "chisquare vs reference"],
    "prediction_drift": ["ks vs reference"],
}
LEVELS = (0.02, 0.05)
# effect and raw p-value giving each outcome (one test in the family: p_adj == p)
OUTCOMES = {"fail": (0.07, 1e-6), "warn": (0.03, 1e-6), "pass": (0.01, 1e-6),
            "pass_not_significant": (0.09, 0.4), "fail_at_level": (0.05, 1e-6), "pass_just_below": (0.019999, 1e-6)}


def statistical_results():
    for type_, tests in STATISTICAL_TESTS.items():
        check = build_check(CheckSpec(type=type_, warn=LEVELS[0], fail=LEVELS[1], min_samples=10))
        for name in tests:
            for outcome, (effect, p) in OUTCOMES.items():
                # the finding's own value and levels differ from the test's: the words must follow the test
                f = Finding("overall", 0.031, 500, "measured rate", [StatTest(name, p, effect, *LEVELS)], warn=0.04, fail=0.1)
                [r] = check.decide([f])
                r.type = type_
                yield f"{type_}/{name}/{outcome}", r
        # two tests, the second decides (decision_flips' "increase over reference" with its own levels)
        f = Finding("class=malignant", 0.0308, 900, "missed malignant rate",
                    [StatTest("above level 0.02", 0.3, 0.0308, 0.02, 0.05), StatTest("increase over reference", 1e-9, 0.025, 0.005, 0.02)],
                    warn=0.02, fail=0.05, critical=True)
        [r] = check.decide([f])
        r.type = type_
        yield f"{type_}/second test decides", r


def _comparison(hl, p, ci=(0.9, 1.1), constant=False):
    return Comparison("ok", 500, 500, p_value=p, hl_ratio=hl, p95_ratio=ci[0], p95_ci=ci, p99_ratio=ci[0],
                      p99_ci=ci, spread_ratio=1.0, constant=constant)


PERF_CASES = {"fail": _comparison(1.6, 1e-5), "warn": _comparison(1.2, 1e-5), "pass": _comparison(0.8, 0.9),
              "pass_not_significant": _comparison(1.3, 0.4), "tail_warn": _comparison(1.0, 0.5, ci=(1.7, 2.0)),
              "constant_fail": _comparison(2.0, 0.0, ci=(2.0, 2.0), constant=True),
              "constant_pass": _comparison(0.5, 0.0, ci=(0.5, 0.5), constant=True)}


def perf_results():
    for type_ in ("latency_p95", "perf_history", "latency_served"):
        check = build_check(CheckSpec(type=type_, warn=1.1, fail=1.5, min_samples=10))
        for outcome, cmp in PERF_CASES.items():
            r = check.verdict("overall", cmp, 500, "candidate latency", {}, tails=True)
            yield f"{type_}/{outcome}", r
        for outcome, value in (("fail", 1.6), ("warn", 1.2), ("pass", 1.0), ("pass_near", 1.0999999)):
            yield f"{type_}/threshold/{outcome}", check.judge("memory", value, 5, "peak memory ratio", min_samples=1)


def real_decision_flips():
    """The case that read "missed malignant rate 0.0308 >= 0.05": the rate is below its fail level,
    the increase over the reference window is what failed."""
    rng = np.random.default_rng(0)
    n = 4000
    b = np.tile([[0.2, 0.8]], (n, 1))                 # baseline: malignant everywhere
    c = b.copy()
    flipped = rng.choice(n, size=int(0.03 * n), replace=False)
    c[flipped] = [0.8, 0.2]                            # candidate misses 3% of them
    ref = ReferenceData({"kind": "test"}, np.zeros((n, 1), np.float32), b.copy(), b.copy(), [{}] * n)
    data = RunData("triage", ["benign", "malignant"], ["malignant"], b, c, None, [{}] * n, {},
                   inputs=np.zeros((n, 1), np.float32), reference=ref)
    check = build_check(CheckSpec(type="decision_flips", warn=0.02, fail=0.05, min_samples=100,
                                  params={"increase_warn": 0.005, "increase_fail": 0.02}))
    return {r.slice: r for r in evaluate_check(check, data)}


ALL = list(statistical_results()) + list(perf_results())


def stated(text):
    """Every "a op [fail|warn level] b" the text states, each checked true as written."""
    found = STATED.findall(text)
    for a, op, _level, b in found:
        assert OPS[op](float(a), float(b)), f"false statement {a} {op} {b} in: {text}"
    return found


def assert_true_words(r, text):
    d = r.decision
    assert d is not None and d.holds(), (r, d)
    found = stated(text)
    said = [(float(a), op, float(b)) for a, op, _, b in found]
    for a, op, b in d.comparisons():       # the deciding test's own comparisons are the ones stated
        assert any(o == op and x == pytest.approx(a, rel=1e-3, abs=1e-9) and y == pytest.approx(b, rel=1e-3)
                   for x, o, y in said), (d, text)
    assert found, text
    levels = {level for _, op, level, _ in found if op == ">=" and level}
    if r.status == "fail":
        assert "fail" in levels or d.op is None, text
    elif r.status == "warn":
        assert levels == {"warn"}, text
    else:
        assert not levels, text


@pytest.mark.parametrize("case", [c for c, _ in ALL])
def test_every_result_states_its_deciding_comparison_truly_in_message_report_and_cli(case, capsys):
    r = dict(ALL)[case]
    assert r.status in ("pass", "warn", "fail")
    assert_true_words(r, r.message)
    row = {**r.to_row(), "check": r.check}
    assert_true_words(r, headline(row))
    page = render_run({"id": 1, "pair": "p", "status": r.status, "trigger": "t", "started_at": "now",
                       "n_samples": r.n, "results": [row]})
    assert html.escape(sentence(r.decision, with_measure=False)) in page       # the results table
    if r.status != "pass":                                                      # what needs attention
        assert html.escape(headline(row)) in page
    print_results(RunOutcome(1, "p", r.status, r.n, [r], None, {}))
    assert_true_words(r, capsys.readouterr().out)


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/s.db")
    yield s
    s.dispose()


def test_every_warn_and_fail_titles_its_incident_and_notification_by_the_deciding_test(store):
    engine = IncidentEngine(store, targets=("ops",), open_on=("warn", "fail"), group_slices=False)
    alarms = [(case, r) for case, r in ALL if r.status in ("warn", "fail")]
    assert len(alarms) > 40
    for i, (case, r) in enumerate(alarms):
        r.check, r.slice = f"c{i}", "overall"     # one incident each
        [change] = engine.process_run("p", store.create_run("p", "schedule", {}), [r])
        inc = engine.get(change.incident_id)
        assert_true_words(r, inc["title"])
        with store.engine.connect() as conn:
            payload = conn.execute(select(t.outbox.c.payload).where(t.outbox.c.incident_id == inc["id"])).scalar_one()
        assert_true_words(r, text_body(payload, "http://sentinel"))


def test_the_increase_over_reference_failure_is_titled_by_that_test_not_by_the_rate(store):
    r = real_decision_flips()["class=malignant"]
    assert r.status == "fail" and r.value == pytest.approx(0.03) and r.value < r.fail        # the rate stays below 0.05
    assert r.decision.test == "increase over reference" and r.decision.level == 0.02
    assert r.type == "decision_flips"
    engine = IncidentEngine(store, targets=("ops",))
    [change] = engine.process_run("triage", store.create_run("triage", "schedule", {}), [r])
    title = engine.get(change.incident_id)["title"]
    assert "increase over reference: 0.03 >= fail level 0.02" in title, title
    assert ">= 0.05" not in title and ">= fail level 0.05" not in title
    assert_true_words(r, title)


def test_a_renamed_check_keeps_its_type_in_the_stored_row():
    check = build_check(CheckSpec(type="latency_p95", name="speed", warn=1.1, fail=1.5, min_samples=1))
    data = RunData("p", ["a", "b"], [], np.zeros((0, 2)), np.zeros((0, 2)), None, [], {})
    [r] = evaluate_check(check, data)
    assert r.check == "speed" and r.type == "latency_p95"
    assert r.to_row()["evidence"]["check_type"] == "latency_p95"

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
from sentinel.words import describe, parse_number

from sentinel.printing import print_incident, print_results

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


def real_results():
    """Every registered check type (but scenario, which wraps these, and the perf-history pair,
    covered above) evaluated on one window where the candidate degrades: real evidence, so the
    "rose from ... to ..." sentences are built from the same numbers the checks stored."""
    rng = np.random.default_rng(3)
    n = 1200
    x = rng.standard_normal((n, 3)).astype(np.float32)
    logit = 2.0 * x[:, 0]
    pb = 1 / (1 + np.exp(-logit))
    b = np.stack([1 - pb, pb], axis=1)
    shift = np.where(np.arange(n) % 2 == 0, 1.2, 0.0)          # the candidate leans benign on half the rows
    pc = 1 / (1 + np.exp(-(logit - shift)))
    c = np.stack([1 - pc, pc], axis=1)
    labels = (rng.random(n) < pb).astype(int)
    attrs = [{"region": "eu" if i % 3 else "us"} for i in range(n)]
    xr = rng.standard_normal((n, 3)).astype(np.float32)
    br = 1 / (1 + np.exp(-2.0 * xr[:, 0]))
    ref = ReferenceData({"kind": "test"}, xr, np.stack([1 - br, br], 1), np.stack([1 - br, br], 1), attrs)

    def predict(rows):
        z = 2.0 * np.asarray(rows, dtype=float).reshape(len(rows), -1)[:, 0]
        p, q = 1 / (1 + np.exp(-z)), 1 / (1 + np.exp(-(z - 1.2)))
        return np.stack([1 - p, p], 1), np.stack([1 - q, q], 1)
    data = RunData("triage", ["benign", "malignant"], ["malignant"], b, c, labels, attrs,
                   {"baseline": rng.lognormal(-7, 0.1, 400), "candidate": rng.lognormal(-6.6, 0.1, 400)},
                   inputs=x, reference=ref, predict=predict)
    out = []
    for type_ in ("decision_flips", "critical_recall", "calibration", "confidence", "fairness", "robustness",
                  "data_drift", "prediction_drift", "latency_p95"):
        params = {"slice_by": ["region"]} if type_ not in ("latency_p95",) else {}
        check = build_check(CheckSpec(type=type_, min_samples=20, params=params))
        for r in evaluate_check(check, data):
            if r.status in ("pass", "warn", "fail"):
                out.append((f"real/{type_}/{r.slice}/{r.status}", r))
    return out


ALL = list(statistical_results()) + list(perf_results()) + real_results()

NUMU = r"×?[+-]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?:%| points| s)?"
LEVEL = re.compile(rf"(?:loss )?(?P<v>{NUMU})(?: of \d+)?\)?, (?P<w>at or above|below) the (?P<name>fail|warn) level of (?P<l>{NUMU})")
SPAN = re.compile(rf"(?P<dir>rose|fell) from (?P<a>{NUMU})(?: \(reference window\))? to (?P<b>{NUMU})(?: of \d+)? "
                  rf"\((?P<loss>loss )?(?P<c>{NUMU})\)")
SIG = re.compile(r"; (?P<sig>significant|not significant) \((?P<pname>[^=()]+) = (?P<p>[^ ]+) (?P<op>≤|<|>|≥) (?P<a>[^ )]+)\)")
SIG_OPS = {"≤": operator.le, "<": operator.lt, ">": operator.gt, "≥": operator.ge}


def _tol(written):
    """Half a unit in the last written place (as a fraction for % and points)."""
    m = re.search(r"\.(\d+)", written)
    d = len(m.group(1)) if m else 0
    scale = 100 if written.endswith(("%", "points")) else 1
    return 0.5 * 10 ** -d / scale


def parse_and_check(text):
    """Every comparison ``text`` states, parsed back and checked true as written; returns them."""
    levels = [(m["w"], m["name"], parse_number(m["v"]), parse_number(m["l"]), m["v"]) for m in LEVEL.finditer(text)]
    for w, _name, v, lv, _ in levels:
        assert (v >= lv) if w == "at or above" else (v < lv), f"false: {v} {w} {lv} in: {text}"
    for m in SPAN.finditer(text):
        a, b, c = parse_number(m["a"]), parse_number(m["b"]), parse_number(m["c"])
        change = (a - b) if m["loss"] else (b - a)
        assert abs(change - c) <= _tol(m["a"]) + _tol(m["b"]) + _tol(m["c"]) + 1e-12, f"change != {c}: {text}"
        assert (b >= a) if m["dir"] == "rose" else (b <= a), f"wrong direction in: {text}"
    sigs = list(SIG.finditer(text))
    for m in sigs:
        p, alpha = float(m["p"]), float(m["a"])
        assert SIG_OPS[m["op"]](p, alpha), f"false: {p} {m['op']} {alpha} in: {text}"
        assert (m["sig"] == "significant") == (m["op"] in ("≤", "<")), text
    return levels, sigs


def assert_true_words(r, text):
    """``text`` contains ``r``'s sentence; every comparison in it is true; the sentence states the
    deciding test's own value, level and direction, with the level its status names."""
    d = r.decision
    assert d is not None and d.holds(), (r, d)
    said = describe(r.to_row(), with_where=False)
    assert said in text or html.escape(said) in text, (said, text)
    levels, sigs = parse_and_check(said)
    parse_and_check(html.unescape(text))
    if d.op is not None:
        [(w, name, v, lv, written)] = levels
        assert w == ("at or above" if d.op == ">=" else "below") and name == d.level_name, said
        assert v == pytest.approx(d.value, abs=_tol(written) * 1.01) and lv == pytest.approx(d.level, rel=1e-3), said
    else:
        assert not levels, said
    if r.status in ("warn", "fail"):
        assert levels[0][:2] == ("at or above", r.status), said
        assert not d.p_op or [m["sig"] for m in sigs] == ["significant"], said
    else:
        assert all(w == "below" for w, *_ in levels), said
        assert "above level" not in said, said              # a test's name, read as a claim


@pytest.mark.parametrize("case", [c for c, _ in ALL])
def test_every_result_states_its_deciding_comparison_truly_in_message_report_and_cli(case, capsys):
    r = dict(ALL)[case]
    assert r.status in ("pass", "warn", "fail")
    for a, op, _level, b in STATED.findall(r.message):      # the check's own message (verdict.sentence)
        assert OPS[op](float(a), float(b)), r.message
    row = {**r.to_row(), "check": r.check}
    assert_true_words(r, headline(row))
    page = render_run({"id": 1, "pair": "p", "status": r.status, "trigger": "t", "started_at": "now",
                       "n_samples": r.n, "results": [row]})
    assert_true_words(r, page)
    print_results(RunOutcome(1, "p", r.status, r.n, [r], None, {}))
    assert_true_words(r, capsys.readouterr().out)


def test_real_results_cover_every_outcome_and_speak_in_from_to_sentences():
    real = dict(real_results())
    kinds = {case.split("/")[1] for case in real}
    assert kinds == {"decision_flips", "critical_recall", "calibration", "confidence", "fairness", "robustness",
                     "data_drift", "prediction_drift", "latency_p95"}
    statuses = {r.status for r in real.values()}
    assert statuses == {"pass", "warn", "fail"} or statuses >= {"pass", "fail"}, statuses
    spans = [describe(r.to_row()) for r in real.values() if SPAN.search(describe(r.to_row()))]
    assert len(spans) >= 4, spans          # recall, confidence, robustness, calibration at least


def test_a_benign_flip_is_not_called_a_missed_benign():
    real = dict(real_results())
    benign = [r for case, r in real.items() if "decision_flips/class=benign" in case]
    assert benign
    for r in benign:
        said = describe(r.to_row())
        assert "missed benign" not in said and "benign→other flip rate" in said, said


def notifier_bodies(payload):
    """What each notifier that writes for people would send (built, not sent)."""
    import json

    from sentinel.notifiers.alertmanager import AlertmanagerNotifier
    from sentinel.notifiers.pagerduty import PagerDutyNotifier
    from sentinel.notifiers.slack import SlackNotifier
    from sentinel.notifiers.smtp import SmtpNotifier

    url = "http://sentinel"
    yield json.dumps(SlackNotifier("s", "http://slack", sentinel_url=url).message(payload), ensure_ascii=False)
    yield json.dumps(PagerDutyNotifier("p", "R" * 32, sentinel_url=url).event(payload), ensure_ascii=False)
    yield json.dumps(AlertmanagerNotifier("a", "http://am", sentinel_url=url).alerts(payload), ensure_ascii=False)
    mail = SmtpNotifier("m", host="localhost", sender="s@example.org", to=["o@example.org"], sentinel_url=url)
    yield mail.message(payload, "key").get_content()


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
        for body in notifier_bodies(payload):
            assert_true_words(r, body)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            print_incident(inc)
        assert_true_words(r, out.getvalue())


def test_the_increase_over_reference_failure_is_titled_by_that_test_not_by_the_rate(store):
    r = real_decision_flips()["class=malignant"]
    assert r.status == "fail" and r.value == pytest.approx(0.03) and r.value < r.fail        # the rate stays below 0.05
    assert r.decision.test == "increase over reference" and r.decision.level == 0.02
    assert r.type == "decision_flips"
    engine = IncidentEngine(store, targets=("ops",))
    [change] = engine.process_run("triage", store.create_run("triage", "schedule", {}), [r])
    title = engine.get(change.incident_id)["title"]
    assert ("missed malignant rate rose from 0.0% (reference window) to 3.0% of 4000 (+3.0 points), "
            "at or above the fail level of +2.0 points; significant (p_adj = ") in title, title
    assert "5.0%" not in title and "0.05" not in title          # not the rate's own fail level
    assert_true_words(r, title)


def test_a_renamed_check_keeps_its_type_in_the_stored_row():
    check = build_check(CheckSpec(type="latency_p95", name="speed", warn=1.1, fail=1.5, min_samples=1))
    data = RunData("p", ["a", "b"], [], np.zeros((0, 2)), np.zeros((0, 2)), None, [], {})
    [r] = evaluate_check(check, data)
    assert r.check == "speed" and r.type == "latency_p95"
    assert r.to_row()["evidence"]["check_type"] == "latency_p95"

"""Multilabel outputs (an independent probability per label, e.g. moderation flags): a decision
per label at a threshold, flips counted per label, critical labels judged on what the candidate
missed, and the checks that need one class per row saying they do not apply."""
import numpy as np
import pytest

from sentinel.checks.base import ReferenceData, RunData, build_check
from sentinel.config import CheckSpec

LABELS = ["spam", "harassment", "self_harm"]


def scores(seed, n, *, drop=0.0, label=2, shift=0.0):
    """Baseline per-label probabilities from a logistic model; the candidate equals it except that
    ``drop`` of the rows where the baseline flags ``label`` lose that flag."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 3)) * 2 - np.array([1.0, 1.5, 2.0]) + shift
    pb = 1 / (1 + np.exp(-z))
    pc = pb.copy()
    lose = (pb[:, label] >= 0.5) & (rng.random(n) < drop)
    pc[lose, label] = 0.3
    attrs = [{"region": r} for r in rng.choice(["eu", "us"], n)]
    return pb, pc, attrs


def ml_data(seed=0, n=3000, ref=True, predict=None, **change):
    pb, pc, attrs = scores(seed, n, **change)
    reference = None
    if ref:
        rb, rc, ra = scores(seed + 100, n)
        reference = ReferenceData({"kind": "test"}, None, rb, rc, ra, None)
    return RunData("mod", LABELS, ["self_harm"], pb, pc, np.zeros(n, dtype=int), attrs, {}, reference=reference,
                   output_kind="multilabel", predict=predict, inputs=np.zeros((n, 3), dtype=np.float32), seed=seed)


def check(type_, **spec):
    return build_check(CheckSpec(type=type_, **spec))


def by_slice(results):
    return {r.slice: r for r in results}


def test_flips_are_decided_per_label_and_the_missed_critical_label_fails():
    res = by_slice(check("decision_flips", warn=0.02, fail=0.05, params={
        "critical_warn": 0.01, "critical_fail": 0.03, "slice_by": ["region"]}).evaluate(ml_data(drop=0.2)))
    sh = res["class=self_harm"]
    assert sh.status == "fail" and sh.critical and 0.15 < sh.value < 0.25
    assert res["class=spam"].status == "pass" and res["class=spam"].value == 0.0
    ov = res["overall"].evidence
    assert ov["output_kind"] == "multilabel" and ov["threshold"] == 0.5 and "flip_matrix" not in ov
    assert ov["label_flips"]["spam"] == 0 and ov["label_flips"]["self_harm"] == ov["by_class"]["self_harm"]["missed"]
    assert ov["by_class"]["self_harm"]["added"] == 0
    assert {"region=eu", "region=us"} <= set(res)


def test_an_unchanged_multilabel_candidate_passes():
    res = check("decision_flips", warn=0.02, fail=0.05).evaluate(ml_data())
    assert {r.status for r in res} == {"pass"} and res[0].value == 0.0


def test_the_threshold_decides_each_label():
    d = ml_data(n=400, ref=False)
    d.baseline = np.full((400, 3), 0.6)
    d.candidate = np.full((400, 3), 0.6)
    d.candidate[:, 1] = 0.45
    at_half = by_slice(check("decision_flips").evaluate(d))
    assert at_half["overall"].value == 1.0 and at_half["class=harassment"].value == 1.0
    at_04 = by_slice(check("decision_flips", params={"threshold": 0.4}).evaluate(d))
    assert at_04["overall"].value == 0.0
    with pytest.raises(ValueError, match="threshold: must be between 0 and 1"):
        check("decision_flips", params={"threshold": 1.5})


def test_label_checks_say_they_do_not_apply_to_multilabel_outputs():
    for type_ in ("calibration", "critical_recall"):
        [r] = check(type_).evaluate(ml_data(n=300))
        assert r.status == "insufficient_data" and "not applicable to multilabel outputs" in r.message


def test_confidence_on_multilabel_is_the_least_certain_label():
    d = ml_data(n=1000, ref=False)
    d.candidate = np.clip(d.baseline * 0.4 + 0.3, 0, 1)      # every label pulled towards 0.5
    r = by_slice(check("confidence", warn=0.02, fail=0.05).evaluate(d))["overall"]
    assert r.status == "fail"
    low_b = (2 * np.abs(d.baseline - 0.5)).min(axis=1) < 0.2
    assert r.evidence["low_confidence_share"]["baseline"] == pytest.approx(low_b.mean())


def test_fairness_and_prediction_drift_use_every_label():
    d = ml_data(n=2000, shift=1.0)
    res = by_slice(check("prediction_drift", warn=0.1, fail=0.25).evaluate(d))
    assert {"output=p(spam)", "output=p(harassment)", "output=p(self_harm)"} <= set(res)
    assert res["output=p(spam)"].status == "fail"
    fair = check("fairness", params={"groups": ["region"]}).evaluate(ml_data(n=1000, drop=0.3))
    assert fair[0].evidence["positive_class"] == "self_harm" and fair[0].status != "error"


def test_robustness_flips_a_row_when_any_label_flips():
    w = np.array([[1.5, 0.0, 0.0], [0.0, 1.5, 0.0], [0.0, 0.0, 1.5]])

    def predict(x):
        z = np.asarray(x, dtype=float) @ w
        pb = 1 / (1 + np.exp(-z))
        pc = 1 / (1 + np.exp(-(z + 0.8 * np.sin(x[:, :1] * 300.0))))     # a brittle candidate
        return pb, pc
    x = np.random.default_rng(0).standard_normal((1500, 3)).astype(np.float32)
    pb, pc = predict(x)
    d = RunData("mod", LABELS, [], pb, pc, None, [{}] * 1500, {}, inputs=x, predict=predict, output_kind="multilabel")
    res = by_slice(check("robustness", warn=0.02, fail=0.05, params={"noise_scales": [0.05], "dropout": []}).evaluate(d))
    assert res["noise=0.05"].status == "fail"

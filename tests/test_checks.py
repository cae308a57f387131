"""Every check of the catalogue on data with a known answer: a change that must be caught and a
non-change that must pass, plus the statistics they stand on (family control, minimum effect,
exact tests that keep their false-alarm rate)."""
import numpy as np
import pytest

from sentinel.checks.base import CheckParamError, ReferenceData, RunData, build_check
from sentinel.checks.stats import adjust, group_shift, rate_increase
from sentinel.config import CheckSpec

FEATURES = 8
W = np.random.default_rng(5).standard_normal(FEATURES)
W *= 2.5 / np.linalg.norm(W)
CLASSES = ["benign", "malignant"]


def both(p1):
    return np.stack([1 - p1, p1], axis=1)


def window(seed, n, *, flips=0.005, temp=1.0, shift=0.0, gap=0.0, miss=0.0):
    """A calibrated logistic baseline (labels drawn from it) and a candidate derived from it."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, FEATURES))
    x[:, 3] += shift
    z = x @ W
    pb = 1 / (1 + np.exp(-z))
    y = (rng.random(n) < pb).astype(int)
    pc = 1 / (1 + np.exp(-(z * temp)))
    flip = rng.random(n) < flips
    pc[flip] = 1 - pc[flip]
    region = rng.choice(["eu", "us", "apac"], size=n)
    lose = ((region == "eu") & (pc > 0.5) & (rng.random(n) < gap)) | ((y == 1) & (pc > 0.5) & (rng.random(n) < miss))
    pc[lose] = 1 - pc[lose]
    return x.astype(np.float32), both(pb), both(pc), y, [{"region": r} for r in region]


def run_data(seed=1, n=2000, ref=True, labels=True, predict=None, **change):
    x, b, c, y, a = window(seed, n, **change)
    reference = None
    if ref:
        xr, br, cr, yr, ar = window(seed + 1000, n)
        reference = ReferenceData({"kind": "test"}, xr, br, cr, ar, yr)
    return RunData("p", CLASSES, ["malignant"], b, c, y if labels else None, a, {}, inputs=x,
                   seed=seed, reference=reference, predict=predict)


def check(type_, **spec):
    return build_check(CheckSpec(type=type_, **spec))


def statuses(results, slice_=None):
    return {r.slice: r.status for r in results if slice_ is None or r.slice == slice_}


def alarmed(results):
    return [r for r in results if r.status in ("warn", "fail")]


# -- statistics ------------------------------------------------------------------------------


def test_holm_and_bh_adjustments_match_their_definitions():
    p = [0.01, 0.04, 0.03, 0.5]
    assert np.allclose(adjust(p, "holm"), [0.04, 0.09, 0.09, 0.5])
    assert np.allclose(adjust(p, "bh"), [0.04, 0.16 / 3, 0.16 / 3, 0.5])
    # weights move budget: the heavy test needs half the evidence it needed before
    assert adjust([0.001, 0.02, 0.03, 0.5], "holm", [3, 1, 1, 1])[0] == pytest.approx(0.002)


def test_exact_tests_keep_their_false_alarm_rate():
    rng = np.random.default_rng(0)
    trials = 4000
    inc = sum(rate_increase(rng.binomial(2000, 0.01), 2000, rng.binomial(2000, 0.01), 2000) <= 0.01
              for _ in range(trials)) / trials
    shift = sum(group_shift(rng.choice([-1, 0, 1], 300, p=[0.02, 0.96, 0.02]), rng.random(300) < 0.3) <= 0.01
                for _ in range(1000)) / 1000
    assert inc <= 0.01 + 2 * np.sqrt(0.01 * 0.99 / trials) and shift <= 0.02


# -- decision flips ----------------------------------------------------------------------------


def test_decision_flips_catch_an_increase_over_the_reference_and_pass_without_one():
    spec = dict(warn=0.02, fail=0.05, params={"slice_by": ["region"]})
    same = check("decision_flips", **spec).evaluate(run_data(flips=0.005))
    assert not alarmed(same)
    worse = check("decision_flips", **spec).evaluate(run_data(flips=0.03))
    overall = next(r for r in worse if r.slice == "overall")
    assert overall.status in ("warn", "fail")
    test = next(t for t in overall.evidence["tests"] if t["name"] == "increase over reference")
    assert test["p_adjusted"] <= 0.01 and overall.evidence["family"] == "holm"
    lo, hi = overall.evidence["ci95"]
    assert lo < overall.value < hi
    assert {"region=eu", "region=us", "region=apac", "class=benign", "class=malignant"} <= set(statuses(worse))


def test_decision_flips_by_direction_flag_the_missed_critical_class():
    # the candidate turns 20% of truly malignant rows benign: missed, not added
    res = check("decision_flips", warn=0.02, fail=0.05,
                params={"critical_warn": 0.01, "critical_fail": 0.03}).evaluate(run_data(flips=0.0, miss=0.2, ref=False))
    mal = next(r for r in res if r.slice == "class=malignant")
    assert mal.status == "fail" and mal.critical
    assert mal.evidence["missed"] > 50 and mal.evidence["added"] == 0
    assert next(r for r in res if r.slice == "overall").evidence["by_class"]["malignant"]["missed"] == mal.evidence["missed"]


def test_without_a_reference_levels_are_crossed_only_when_the_data_show_it():
    # 3 flips in 100 rows is above the 2% level as a point estimate but not significantly
    x, b, c, y, a = window(3, 100, flips=0.0)
    c[:3] = c[:3, ::-1]
    data = RunData("p", CLASSES, [], b, c, None, a, {}, inputs=x)
    res = check("decision_flips", warn=0.02, fail=0.05, min_samples=50).evaluate(data)
    assert statuses(res, "overall") == {"overall": "pass"}
    c[:40] = c[:40, ::-1] if False else np.stack([b[:40, 1], b[:40, 0]], 1)
    assert statuses(check("decision_flips", warn=0.02, fail=0.05, min_samples=50).evaluate(data), "overall") == {
        "overall": "fail"}


def test_a_real_but_tiny_change_stays_a_pass_thanks_to_the_minimum_effect():
    data = run_data(n=20000, flips=0.008)         # +0.3 pp over the reference's 0.5%: significant, tiny
    res = check("decision_flips", warn=0.05, fail=0.1, params={"increase_warn": 0.01, "increase_fail": 0.03}
                ).evaluate(data)
    overall = next(r for r in res if r.slice == "overall")
    assert overall.status == "pass" and "below the minimum effect" in overall.message


# -- critical recall ----------------------------------------------------------------------------


def test_critical_recall_catches_lost_positives_and_says_so_without_labels():
    spec = dict(warn=0.02, fail=0.05, min_samples=30)
    assert statuses(check("critical_recall", **spec).evaluate(run_data(ref=False, flips=0.0, miss=0.15))) == {
        "class=malignant": "fail"}
    assert not alarmed(check("critical_recall", **spec).evaluate(run_data(ref=False)))
    [r] = check("critical_recall", **spec).evaluate(run_data(ref=False, labels=False))
    assert r.status == "insufficient_data" and r.value is None and "no labels" in r.message


# -- calibration and confidence ------------------------------------------------------------------


@pytest.mark.parametrize("temp", [0.4, 2.5])
def test_calibration_catches_sharpened_and_flattened_probabilities(temp):
    res = check("calibration", warn=0.005, fail=0.02).evaluate(run_data(ref=False, flips=0.0, temp=temp))
    [overall] = [r for r in res if r.slice == "overall"]
    assert overall.status in ("warn", "fail")
    rel = overall.evidence["reliability"]["candidate"]
    assert len(rel["accuracy"]) == 10 and sum(rel["count"]) == 2000
    assert overall.evidence["ece"]["candidate"] > overall.evidence["ece"]["baseline"]


def test_calibration_passes_an_unchanged_candidate_and_needs_labels():
    assert not alarmed(check("calibration", warn=0.005, fail=0.02).evaluate(run_data(ref=False, flips=0.0)))
    [r] = check("calibration").evaluate(run_data(ref=False, labels=False))
    assert r.status == "insufficient_data" and "no labels" in r.message


def test_confidence_catches_more_low_confidence_decisions():
    res = check("confidence", warn=0.02, fail=0.05).evaluate(run_data(ref=False, flips=0.0, temp=0.4))
    overall = next(r for r in res if r.slice == "overall")
    assert overall.status == "fail"
    assert sum(overall.evidence["top_probability"]["candidate"]["hist"]) == 2000
    assert not alarmed(check("confidence", warn=0.02, fail=0.05).evaluate(run_data(ref=False, flips=0.0)))


# -- fairness -----------------------------------------------------------------------------------


def test_fairness_catches_a_gap_opening_in_one_group_only():
    res = check("fairness", warn=0.03, fail=0.08, params={"groups": ["region"]}).evaluate(
        run_data(ref=False, flips=0.0, gap=0.2))
    st = statuses(res)
    assert st["region=eu"] in ("warn", "fail") and st["region"] == st["region=eu"]
    summary = next(r for r in res if r.slice == "region")
    assert set(summary.evidence["groups"]) == {"eu", "us", "apac"} and "tpr" in summary.evidence["groups"]["eu"]
    assert summary.evidence["gaps"]["positive_rate"]["candidate"] > summary.evidence["gaps"]["positive_rate"]["baseline"]
    # the same change everywhere is not a fairness problem
    even = check("fairness", warn=0.03, fail=0.08, params={"groups": ["region"]}).evaluate(
        run_data(ref=False, flips=0.0, miss=0.2))
    assert not [r for r in alarmed(even) if r.slice.startswith("region")]


# -- robustness ---------------------------------------------------------------------------------


def _predict(brittle):
    def predict(x):
        z = x.reshape(len(x), -1).astype(float) @ W
        pc = z + (np.sin(x[:, 0] * 400.0) * 0.8 if brittle else 0.0)   # noise-sensitive candidate
        return both(1 / (1 + np.exp(-z))), both(1 / (1 + np.exp(-pc)))
    return predict


@pytest.mark.parametrize("brittle", [True, False])
def test_robustness_flip_rate_under_seeded_perturbations(brittle):
    x = np.random.default_rng(4).standard_normal((1500, FEATURES)).astype(np.float32)
    b, c = _predict(brittle)(x)
    data = RunData("p", CLASSES, [], b, c, None, [{}] * len(x), {}, inputs=x, seed=3,
                   predict=_predict(brittle))
    chk = check("robustness", warn=0.02, fail=0.05, params={"noise_scales": [0.05], "dropout": [0.1]})
    res = chk.evaluate(data)
    assert {r.slice for r in res} == {"noise=0.05", "dropout=0.1"}
    assert (res[0].status == "fail") is brittle
    assert [r.value for r in chk.evaluate(data)] == [r.value for r in res]    # seeded: a replay is identical


def test_robustness_without_models_is_an_error_not_a_pass():
    [r] = check("robustness").evaluate(run_data(ref=False))
    assert r.status == "error" and "models" in r.message


# -- drift --------------------------------------------------------------------------------------


def test_data_drift_catches_a_shift_in_one_feature_and_records_the_method():
    res = check("data_drift", warn=0.1, fail=0.25).evaluate(run_data(n=1000, shift=0.5))
    st = statuses(res)
    assert st["feature=x3"] == "fail" and st["overall"] == "fail"
    assert [s for s, v in st.items() if v != "pass"] == ["overall", "feature=x3"]
    x3 = next(r for r in res if r.slice == "feature=x3")
    assert x3.evidence["method"] == "ks" and x3.evidence["p_value_from"] == "ks"
    assert next(r for r in res if r.slice == "overall").evidence["methods"]["x0"] == "ks"


def test_data_drift_passes_without_a_shift_and_waits_for_a_reference():
    assert not alarmed(check("data_drift", warn=0.1, fail=0.25).evaluate(run_data(n=1000)))
    [r] = check("data_drift").evaluate(run_data(n=300, ref=False))
    assert r.status == "insufficient_data" and "no reference" in r.message


def test_data_drift_two_valued_columns_use_a_two_sample_proportion_test():
    data = run_data(n=800)
    data.inputs[:, 0] = (np.arange(800) % 2).astype(np.float32)
    data.reference.inputs[:, 0] = (np.arange(800) % 5 == 0).astype(np.float32)     # 50% vs 20% ones
    res = check("data_drift", warn=0.1, fail=0.25).evaluate(data)
    x0 = next(r for r in res if r.slice == "feature=x0")
    assert x0.evidence["method"] == "z" and x0.evidence["column_type"] == "cat" and x0.status == "fail"


def test_distance_methods_get_permutation_p_values():
    data = run_data(n=300, shift=0.8)
    res = check("data_drift", warn=0.1, fail=0.25, params={"methods": {"x3": "wasserstein"}, "columns": ["x2", "x3"]}
                ).evaluate(data)
    x3 = next(r for r in res if r.slice == "feature=x3")
    # enough permutations that the smallest p-value survives Holm over 2 tests at 1%: 2 * 2 / 0.01
    assert x3.evidence["p_value_from"] == "permutation of wasserstein (400)" and x3.status == "fail"
    assert {r.slice for r in res} == {"overall", "feature=x2", "feature=x3"}


def test_native_ks_and_z_scores_equal_evidentlys_own_stattests():
    """ks and z are scored without importing Evidently (sentinel.checks.drift.NATIVE_SCORES): the
    p-values must be Evidently's, bit for bit, or replays of older runs would differ."""
    import pandas as pd

    from sentinel.checks.drift import _evidently, ks_p_value, z_p_value
    get_stattest, ct = _evidently()
    rng = np.random.default_rng(4)
    for k in range(6):
        ref, cur = rng.normal(size=500 + 37 * k), rng.normal(0.05 * k, 1, size=800)
        want = get_stattest("ks", ct.Numerical)(pd.Series(ref), pd.Series(cur), ct.Numerical, None).drift_score
        assert ks_p_value(ref, cur) == want
        ref2, cur2 = (rng.random(400) < 0.3 + 0.02 * k).astype(float) * 3 + 1, (rng.random(700) < 0.3).astype(float) * 3 + 1
        want = get_stattest("z", ct.Categorical)(pd.Series(ref2), pd.Series(cur2), ct.Categorical, None).drift_score
        assert z_p_value(ref2, cur2) == want
    same = np.ones(50)
    assert z_p_value(same, same) == 1.0


def test_prediction_drift_is_black_box_shift_detection_on_the_candidate_outputs():
    res = check("prediction_drift", warn=0.1, fail=0.25, params={"slice_by": ["region"]}).evaluate(
        run_data(n=1500, shift=1.5))
    st = statuses(res)
    assert st["output=p(malignant)"] == "fail" and "output=p(malignant),region=eu" in st
    assert not alarmed(check("prediction_drift", warn=0.1, fail=0.25).evaluate(run_data(n=1500)))


# -- configuration of checks ----------------------------------------------------------------------


def test_unknown_params_are_rejected_with_a_suggestion():
    with pytest.raises(CheckParamError, match=r"params.noise_scale: unknown param .*did you mean 'noise_scales'"):
        check("robustness", params={"noise_scale": [0.1]})
    with pytest.raises(CheckParamError, match="false_alarm_rate: must be between 0 and 1"):
        check("calibration", params={"false_alarm_rate": 5})


@pytest.mark.parametrize("n", [0, 3])
def test_a_tiny_window_is_insufficient_data_for_every_check_never_an_exception(n):
    x, b, c, y, a = window(1, n)
    xr, br, cr, yr, ar = window(2, 50)
    data = RunData("p", CLASSES, ["malignant"], b.reshape(n, 2), c.reshape(n, 2), y if n else None, a, {},
                   inputs=x.reshape(n, FEATURES), reference=ReferenceData({}, xr, br, cr, ar, yr),
                   predict=_predict(False))
    for type_ in ("decision_flips", "critical_recall", "calibration", "confidence", "fairness", "robustness",
                  "data_drift", "prediction_drift"):
        res = check(type_, params={"groups": ["region"]} if type_ == "fairness" else {"slice_by": ["region"]}
                    ).evaluate(data)
        assert res and {r.status for r in res} == {"insufficient_data"}, (type_, res)

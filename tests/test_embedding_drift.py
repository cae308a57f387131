"""embedding_drift: kernel MMD with a seeded permutation test keeps its stated false-alarm rate
on same-distribution draws, catches a moved or spread representation, and says clearly when
there is nothing to compare."""
import numpy as np
import pytest

from sentinel.checks.base import CheckParamError, ReferenceData, RunData, build_check
from sentinel.checks.embedding import mmd_test
from sentinel.config import CheckSpec

CLASSES = ["a", "b"]
DIM = 24


def draws(rng, n, *, shift=0.0, scale=1.0):
    # embeddings with structure: a low-rank part plus noise, like a real encoder's output
    basis = np.random.default_rng(99).standard_normal((4, DIM))
    return rng.standard_normal((n, 4)) @ basis * scale + 0.3 * rng.standard_normal((n, DIM)) + shift


def data(rng, n=200, *, cand_shift=0.0, cand_scale=1.0, seed=0, ref=True, embeddings=True, region=False):
    p = np.tile([0.5, 0.5], (n, 1))
    attrs = [{"region": "eu" if i % 2 else "us"} for i in range(n)] if region else [{}] * n
    emb = {"baseline": draws(rng, n), "candidate": draws(rng, n, shift=cand_shift, scale=cand_scale)}
    reference = None
    if ref:
        reference = ReferenceData({"kind": "test"}, None, p, p, attrs, None,
                                  embeddings={"baseline": draws(rng, n), "candidate": draws(rng, n)})
    return RunData("p", CLASSES, [], p, p, None, attrs, {}, seed=seed, reference=reference,
                   embeddings=emb if embeddings else None)


def check(**spec):
    return build_check(CheckSpec(type="embedding_drift", **spec))


def test_mmd_permutation_p_values_keep_their_false_alarm_rate():
    rng = np.random.default_rng(0)
    trials, alpha = 300, 0.05
    hits = sum(mmd_test(draws(rng, 40), draws(rng, 40), 99, rng)[1] <= alpha for _ in range(trials))
    # at most alpha, up to two standard errors of the estimate
    assert hits / trials <= alpha + 2 * np.sqrt(alpha * (1 - alpha) / trials)


def test_the_check_keeps_its_false_alarm_rate_over_roles_and_slices():
    rng = np.random.default_rng(1)
    trials = 120
    chk = check(warn=1e-9, fail=1e-9, min_samples=10, params={"false_alarm_rate": 0.05, "slice_by": ["region"]})
    alarms = 0
    for t in range(trials):
        res = chk.evaluate(data(rng, 60, seed=t, region=True))
        alarms += any(r.status in ("warn", "fail") for r in res)
    # any alarm in the run (2 roles x 3 slices, Holm) at most 5% of runs, up to two standard errors
    assert alarms / trials <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / trials)


@pytest.mark.parametrize("change", [{"cand_shift": 0.3}, {"cand_scale": 1.6}])
def test_a_moved_or_spread_candidate_representation_is_caught_and_the_baseline_is_not(change):
    res = {r.slice: r for r in check(min_samples=50).evaluate(data(np.random.default_rng(2), 400, **change))}
    assert set(res) == {"role=baseline", "role=candidate"}
    assert res["role=candidate"].status in ("warn", "fail") and res["role=baseline"].status == "pass"
    assert res["role=candidate"].value >= 0.1
    ev = res["role=candidate"].evidence
    assert ev["n_current"] == 400 and ev["dim"] == DIM and ev["permutations"] >= 400 and ev["bandwidth"] > 0
    assert res["role=candidate"].value == pytest.approx(np.sqrt(ev["mmd2"]))


def test_same_distribution_passes_and_a_replay_is_identical():
    d = data(np.random.default_rng(3), 300)
    a, b = check(min_samples=50).evaluate(d), check(min_samples=50).evaluate(d)
    assert {r.status for r in a} == {"pass"}
    assert [r.evidence["tests"][0]["p_value"] for r in a] == [r.evidence["tests"][0]["p_value"] for r in b]


def test_nothing_to_compare_is_insufficient_data_saying_why():
    rng = np.random.default_rng(4)
    [r] = check().evaluate(data(rng, embeddings=False))
    assert r.status == "insufficient_data" and "embedding_output" in r.message
    [r] = check().evaluate(data(rng, ref=False))
    assert r.status == "insufficient_data" and "no reference" in r.message
    d = data(rng)
    d.reference.embeddings = None
    [r] = check().evaluate(d)
    assert r.status == "insufficient_data" and "reference window has no embeddings" in r.message
    small = check(min_samples=100).evaluate(data(rng, 30))
    assert {r.status for r in small} == {"insufficient_data"}


def test_a_changed_embedding_width_is_an_error_for_that_role():
    d = data(np.random.default_rng(5), 200)
    d.embeddings["candidate"] = d.embeddings["candidate"][:, :10]
    res = {r.slice: r for r in check(min_samples=50).evaluate(d)}
    assert res["role=candidate"].status == "error" and "[10]" in res["role=candidate"].message
    assert res["role=baseline"].status == "pass"


def test_params_are_checked():
    with pytest.raises(CheckParamError, match="unknown param .*did you mean 'max_rows'"):
        check(params={"max_row": 10})
    with pytest.raises(CheckParamError, match="roles: must be a non-empty list of baseline and candidate"):
        check(params={"roles": ["teacher"]})

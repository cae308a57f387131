"""The detection benchmark's reading of a check's stored evidence (benchmarks/detection.py)."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import detection  # noqa: E402
from sentinel.checks.base import CheckResult  # noqa: E402


def _result(status, *tests, rate=0.01):
    ev = {"tests": [{"name": name, "p_value": p, "p_adjusted": pa} for name, p, pa in tests],
          "false_alarm_rate": rate}
    return CheckResult("c", "overall", status, 0.0, 100, "", evidence=ev)


def test_outcome_counts_a_significant_but_small_change_as_a_rejection_not_an_alarm():
    out = detection._outcome([_result("pass", ("t", 0.001, 0.004)), _result("pass", ("t", 0.2, 0.6))])
    assert out == {"alarm": False, "reject": True, "raw": {"t": [1, 2]}}


def test_outcome_uses_the_checks_own_rule_p_adjusted_at_most_the_rate():
    assert detection._outcome([_result("pass", ("t", 0.01, 0.01))])["reject"]
    assert not detection._outcome([_result("pass", ("t", 0.011, 0.0100001))])["reject"]
    # the rate is the result's own, not the benchmark's target
    assert not detection._outcome([_result("pass", ("t", 0.004, 0.004), rate=0.001)])["reject"]


def test_outcome_ignores_results_without_tests():
    summary = CheckResult("c", "overall", "warn", 1.0, 100, "")
    assert detection._outcome([summary]) == {"alarm": True, "reject": False, "raw": {}}


def test_trial_reads_real_checks():
    out = detection.trial("no change, roles swapped on half the rows", 500, 0)
    assert set(out) == {"decision_flips", "critical_recall", "calibration", "confidence", "fairness"}
    for o in out.values():
        assert o["reject"] or not o["alarm"]
        assert all(0 <= k <= m for k, m in o["raw"].values())
    assert out["calibration"]["raw"]["Brier increase"][1] >= 1


def test_swap_exchanges_roles_on_about_half_the_rows():
    x0, b0, c0, y0, _ = detection._window(np.random.default_rng(0), 20000)
    x1, b1, c1, y1, _ = detection._window(np.random.default_rng(0), 20000, swap=True)
    assert np.array_equal(x0, x1) and np.array_equal(y0, y1)
    same = np.isclose(b1, b0).all(axis=1) & np.isclose(c1, c0).all(axis=1)
    swapped = np.isclose(b1, c0).all(axis=1) & np.isclose(c1, b0).all(axis=1)
    assert (same | swapped).all()
    differ = ~np.isclose(b0, c0).all(axis=1)
    assert 0.45 < swapped[differ].mean() < 0.55

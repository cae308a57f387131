"""The report's first section: a responder sees each failing check once, the critical class before
the fold, and every other failing slice one click away."""
from sentinel.reports import render_run


def result(check, slice_, status, critical=False):
    return {"check": check, "slice": slice_, "status": status, "value": 0.3, "warn": 0.02, "fail": 0.05, "n": 500,
            "message": f"{check} on {slice_} is {status}", "evidence": {"critical": critical}}


def test_attention_groups_by_check_and_keeps_critical_slices_visible():
    results = [result("data_drift", f"feature=x{i}", "fail") for i in range(30)]
    results += [result("decision_flips", "region=eu", "fail"), result("decision_flips", "region=us", "fail"),
                result("decision_flips", "class=benign", "warn"),
                result("decision_flips", "class=malignant", "fail", critical=True),
                result("decision_flips", "overall", "fail"), result("calibration", "overall", "pass")]
    html = render_run({"id": 7, "pair": "triage", "status": "fail", "trigger": "cli", "started_at": "t",
                       "finished_at": "t", "n_samples": 500, "results": results, "record": {}})
    attention = html.split("What needs attention", 1)[1].split("<h2>", 1)[0]
    assert attention.count("<b>decision_flips</b>") == 1 and "(fail, 5 slices)" in attention
    flips = attention.split("<b>decision_flips</b>", 1)[1].split("<b>data_drift</b>")[0]
    visible, folded = flips.split("<details>", 1)
    assert visible.index("overall") < visible.index("class=malignant")   # critical class before the fold
    assert "class=benign" in folded and "2 more slices" in folded
    assert "27 more slices" in attention and "calibration" not in attention   # passing checks stay out

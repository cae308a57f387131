"""The whole catalogue from the shipped suite, through `sentinel revalidate` and through the
daemon's Revalidator: a healthy window passes and becomes the reference, traffic that moves is
caught, failed runs are never a reference, replay reproduces, the report holds it all."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from sentinel.cli import main
from sentinel.config import load_config
from sentinel.examples.traffic import drifted_traffic, ordinary_traffic

from pairs import example_config, traffic_lines

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = {"decision_flips", "critical_recall", "calibration", "confidence", "fairness", "robustness",
             "data_drift", "prediction_drift", "scenario:routine/decision_flips",
             "scenario:routine/critical_recall", "scenario:edge_cases/decision_flips",
             "scenario:adversarial/decision_flips", "scenario:adversarial/critical_recall"}


def messages(kind, seed, n=600):
    x, y = (ordinary_traffic if kind == "ordinary" else drifted_traffic)(np.random.default_rng(seed), n)
    lines = traffic_lines(x, prefix=f"{kind}{seed}-")
    for m, label in zip(lines, y):
        m["label"] = ["malignant", "benign"][int(label)]
    return lines


def write(tmp_path, kind, seed):
    path = tmp_path / f"{kind}-{seed}.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in messages(kind, seed)) + "\n")
    return path


def revalidate(cfg, traffic, capsys):
    code = main(["revalidate", "--config", str(cfg), "--input", str(traffic), "--json"])
    [run] = json.loads(capsys.readouterr().out)
    return code, run, {(r["check"], r["slice"]): r for r in run["results"]}


PERF = ("latency_p95", "perf_history", "latency_served")


@pytest.fixture
def cfg(tmp_path):
    """The shipped suite without its performance checks: timing on a shared test machine is not a
    known answer (tests/test_perf.py covers those checks)."""
    shutil.copytree(REPO / "checks", tmp_path / "checks")
    suite = tmp_path / "checks" / "triage.yaml"
    raw = yaml.safe_load(suite.read_text())
    assert {c["type"] for c in raw["checks"]} >= set(PERF)
    raw["checks"] = [c for c in raw["checks"] if c["type"] not in PERF]
    suite.write_text(yaml.safe_dump(raw, sort_keys=False))
    return example_config(tmp_path, suites=["checks/*.yaml"])


def test_revalidate_runs_the_catalogue_and_catches_traffic_that_moved(tmp_path, cfg, capsys):
    code, first, res = revalidate(cfg, write(tmp_path, "ordinary", 1), capsys)
    assert code == 0 and {c for c, _ in res} == CATALOGUE
    assert res[("data_drift", "overall")]["status"] == "insufficient_data"       # nothing to compare with yet
    assert not [k for k, r in res.items() if r["status"] in ("warn", "fail", "error")], first

    code, second, res = revalidate(cfg, write(tmp_path, "drifted", 2), capsys)
    assert code == 1
    for key in [("decision_flips", "overall"), ("data_drift", "overall"), ("prediction_drift", "output=p(malignant)")]:
        assert res[key]["status"] == "fail", res[key]
    assert res[("scenario:adversarial/decision_flips", "class=malignant")]["status"] == "pass"   # scenarios unchanged
    drift = res[("data_drift", "overall")]["evidence"]
    assert drift["reference"]["kind"] == "runs" and drift["reference"]["run_ids"] == [first["run_id"]]
    assert set(drift["methods"].values()) == {"ks"}

    # a failed run is not a reference: the next window is compared with the first one again
    code, third, res = revalidate(cfg, write(tmp_path, "ordinary", 3), capsys)
    assert code == 0, [(k, r["status"], r["message"]) for k, r in res.items() if r["status"] in ("fail", "error")]
    assert res[("data_drift", "overall")]["evidence"]["reference"]["run_ids"] == [first["run_id"]]

    # the report: safety section and Evidently's drift report in one offline file
    report = Path(second["report"]).read_text()
    for part in ("What needs attention", "Per-slice table", "Flip matrix", "Reliability curves", "<svg",
                 "Evidently: distributions", "<iframe", "p_adj", "Recommended action", "Reproducibility record"):
        assert part in report, part
    assert "https://cdn" not in report.split("<iframe")[0]

    # same samples, same reference, same verdicts (perturbations and permutations are seeded)
    assert main(["replay", "--config", str(cfg), str(second["run_id"])]) == 0
    capsys.readouterr()
    Path(second["report"]).unlink()
    assert main(["report", "--config", str(cfg), str(second["run_id"])]) == 0
    assert "<iframe" in Path(capsys.readouterr().out.strip()).read_text()


def test_the_daemons_revalidator_runs_the_catalogue_on_stored_samples_with_a_pinned_reference(tmp_path, cfg):
    import hashlib

    from sentinel.metrics import Metrics
    from sentinel.reports import write_run_report
    from sentinel.revalidation import Revalidator, load_pair
    from sentinel.sampling import Sampler
    from sentinel.storage import open_store
    from sentinel.storage.repository import SampleIn, utcnow

    ref = tmp_path / "checks" / "triage" / "pinned.jsonl"
    ref.write_text("\n".join(json.dumps(m) for m in messages("ordinary", 9, n=800)) + "\n")
    suite = tmp_path / "checks" / "triage.yaml"
    raw = yaml.safe_load(suite.read_text())
    raw["reference"] = {"kind": "pinned", "file": "triage/pinned.jsonl",
                        "sha256": hashlib.sha256(ref.read_bytes()).hexdigest()}
    suite.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(cfg)
    store = open_store(config.store.url)
    sampler = Sampler(1.0, 100000, 0)
    rows = [SampleIn(pair="triage", msg_id=m["id"], ts=utcnow(), topic="traffic", partition=0, offset=i,
                     sample_key=sampler.key("triage", m["id"]), inputs=m["inputs"], attributes=m["attributes"],
                     label=m["label"]) for i, m in enumerate(messages("drifted", 4, n=500))]
    store.ingest(rows, [], [], window=100000, rate=1.0)
    pairs = {"triage": load_pair(config, "triage")}
    reval = Revalidator(config, store, pairs, metrics=Metrics(),
                        report_writer=lambda run, lp, data=None: write_run_report(run, tmp_path / "reports", data))
    out = reval.run("triage")
    assert out.status == "fail" and out.n_samples == 500
    checks = {r.check for r in out.results}
    assert checks == CATALOGUE
    assert out.record["reference"] == {"kind": "pinned", "file": str(ref), "sha256": hashlib.sha256(ref.read_bytes()).hexdigest()}
    assert out.record["suites"][0]["suite"] == "triage-safety"
    assert next(r for r in out.results if (r.check, r.slice) == ("prediction_drift", "output=p(malignant)")).status == "fail"
    assert "<iframe" in Path(out.report_path).read_text()

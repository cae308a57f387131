"""Suite files (checks/*.yaml): the shipped one is valid, and every mistake in one is a single
line naming the suite file and the key, from `sentinel validate` and `sentinel revalidate`."""
import shutil
from pathlib import Path

import pytest
import yaml

from sentinel.cli import main

from pairs import example_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def suite_dir(tmp_path):
    shutil.copytree(REPO / "checks", tmp_path / "checks")
    return tmp_path / "checks"


def edit(path, change):
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def one_error_line(capsys):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def test_the_shipped_suite_is_valid(capsys):
    assert main(["validate", str(REPO / "checks" / "triage.yaml")]) == 0
    assert "suite triage-safety version 1" in capsys.readouterr().out


CASES = {
    "misspelt_key": (lambda r: r.update(chekcs=r.pop("checks")), "chekcs: unknown key (did you mean 'checks'?)"),
    "unknown_type": (lambda r: r["checks"][0].update(type="decision_flip"), "checks.0.type: check 'decision_flip': unknown"),
    "unknown_param": (lambda r: r["checks"][5]["params"].update(noise_scale=[0.1]),
                      "checks.5.params.noise_scale: unknown param for check type 'robustness' (did you mean 'noise_scales'?)"),
    "bad_level": (lambda r: r["checks"][0].update(warn="two percent"), "checks.0.warn: Input should be a valid number"),
    "bad_family": (lambda r: r["defaults"].update(family="bonferroni"), "defaults.family: Input should be 'holm' or 'bh'"),
    "duplicate_name": (lambda r: r["checks"].append({"type": "decision_flips"}),
                       "checks.11.name: check name 'decision_flips' is already used by"),
    "unknown_pair": (lambda r: r.update(pairs=["triage", "radiology"]), "pairs: unknown pair(s) ['radiology']"),
    "pinned_without_file": (lambda r: r.update(reference={"kind": "pinned"}),
                            "reference: a pinned reference needs file and sha256"),
    "scenario_kind": (lambda r: r["scenarios"][0].update(kind="nightmare"), "scenarios.0.kind: Input should be"),
    "scenario_inner_param": (lambda r: r["scenarios"][1]["checks"][0]["params"].update(critical_wran=0.1),
                             "scenarios.1.checks.0.params.critical_wran: unknown param"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_suite_mistakes_are_one_line_naming_file_and_key(tmp_path, suite_dir, capsys, case):
    change, expect = CASES[case]
    edit(suite_dir / "triage.yaml", change)
    cfg = example_config(tmp_path, suites=["checks/*.yaml"])
    assert main(["validate", "--no-models", str(cfg)]) == 2
    line = one_error_line(capsys)
    assert str(suite_dir / "triage.yaml") in line and expect in line, line


def test_an_altered_scenario_data_set_is_refused(tmp_path, suite_dir, capsys):
    with open(suite_dir / "triage" / "edge_cases.jsonl", "a") as fh:
        fh.write('{"id": "sneaked-in", "inputs": [' + ", ".join(["1.0"] * 30) + "]}\n")
    cfg = example_config(tmp_path, suites=["checks/*.yaml"])
    assert main(["revalidate", "--config", str(cfg)]) == 2
    line = one_error_line(capsys)
    assert "triage.yaml: scenarios.1.sha256: edge_cases.jsonl has sha256" in line and "the data set changed" in line


def test_a_suite_glob_that_matches_nothing_names_the_config_key(tmp_path, capsys):
    cfg = example_config(tmp_path, suites=["nowhere/*.yaml"])
    assert main(["validate", "--no-models", str(cfg)]) == 2
    line = one_error_line(capsys)
    assert f"{cfg}: suites.0: 'nowhere/*.yaml' matches no file" in line

"""The run report a responder opens from a notification: the headline first (status, what failed
in the words of the deciding test, severity, incident number, traffic time range, since which run
it has been failing, what to do), the plots inline (flip matrix, latency distributions, values
over the last runs), the reproducibility record folded after them, no microsecond timestamps, and
Evidently's section showing distributions without verdicts that could contradict Sentinel's."""
import json
import re
from pathlib import Path

import numpy as np

from sentinel.cli import main
from sentinel.examples.traffic import ordinary_traffic

from pairs import example_config, traffic_lines

CHECKS = [{"type": "decision_flips", "warn": 0.02, "fail": 0.05, "min_samples": 50},
          {"type": "data_drift", "min_samples": 50},
          {"type": "latency_p95", "warn": 1.0, "fail": 1.5, "min_samples": 5}]


def revalidate(cfg, tmp_path, seed, capsys):
    x, _ = ordinary_traffic(np.random.default_rng(seed), 300)
    path = tmp_path / f"t{seed}.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in traffic_lines(x, prefix=f"s{seed}-")) + "\n")
    main(["revalidate", "--config", str(cfg), "--input", str(path), "--json"])
    [out] = json.loads(capsys.readouterr().out)      # one entry per pair
    return out


def test_the_report_leads_with_what_failed_how_badly_since_when_and_what_to_do(tmp_path, capsys):
    healthy = example_config(tmp_path, checks=CHECKS, perf={"enabled": False})
    first = revalidate(healthy, tmp_path, 1, capsys)            # accepted: the next runs' reference window
    damaged = example_config(tmp_path, checks=CHECKS, perf={"enabled": False}, candidate="damaged.int8.onnx")
    second = revalidate(damaged, tmp_path, 2, capsys)
    third = revalidate(damaged, tmp_path, 3, capsys)
    assert first["status"] != "fail" and second["status"] == third["status"] == "fail"
    page = Path(third["report"]).read_text()
    head = page.split("<h2>", 1)[0]
    assert f"Run {third['run_id']} · triage · <span" in head and "FAIL" in head
    lede = re.search(r"<p class='lede'>(.*?)</p>", head).group(1)
    assert "<b>decision_flips</b> failed on" in lede and "at or above the fail level of" in lede, lede
    facts = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", head))
    assert facts["Severity"] in ("<b>critical</b>", "<b>high</b>")
    assert re.search(r"/incidents/\d+'>#\d+</a> \(open\)", facts["Incident"]), facts
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC to \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", facts["Traffic"])
    assert facts["Failing since"] == f"run {second['run_id']}"
    assert "Hold the candidate" in facts["Recommended action"]
    shown = page.split("<iframe")[0].split("<details><summary>Reproducibility")[0]   # the record is raw data
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", shown)          # no microseconds where people read
    # plots inline, before the folded record; the record after them, folded
    for part in ("flip matrix", "Latency distribution", f"Checks over the last 3 runs"):
        assert part in page, part
    assert page.index("<svg") < page.index("<details><summary>Reproducibility record")
    assert page.index("Reproducibility record") > page.index("Check results") and "<details><summary>Reproducibility" in page
    # Evidently: the drift columns only, distributions without verdicts, no latency
    doc = page.split("srcdoc=\"", 1)[1]
    assert "Evidently: distributions" in page and "no drift verdicts of its own" in page
    assert "drift detected" not in doc.lower() and "latency ms" not in doc and "Drift" not in doc
    assert "https://cdn" not in page.split("<iframe")[0]


def test_evidently_is_drawn_from_a_stated_subsample_in_a_child_process(tmp_path, capsys, monkeypatch):
    """Evidently's section is built on at most EVIDENTLY_MAX_ROWS rows of each window (seeded),
    and the report says how many of how many; Sentinel's drift check used every row."""
    import sentinel.reports as reports
    monkeypatch.setattr(reports, "EVIDENTLY_MAX_ROWS", 120)
    cfg = example_config(tmp_path, checks=CHECKS, perf={"enabled": False})
    revalidate(cfg, tmp_path, 1, capsys)
    second = revalidate(cfg, tmp_path, 2, capsys)
    drift = [r for r in second["results"] if r["check"] == "data_drift" and r["slice"] != "overall"]
    assert drift and all(r["evidence"]["n_current"] == 300 and r["evidence"]["n_reference"] == 300 for r in drift)
    page = Path(second["report"]).read_text()
    assert ("drawn from 120 of 300 rows of this window and 120 of 300 of the reference "
            "(at most 120 of each: a subsample seeded 0)") in page
    assert "srcdoc=" in page


def test_the_revalidating_process_never_imports_evidently(tmp_path):
    """The drift checks score ks/z themselves and the report's Evidently section comes from a
    short-lived child: `sentinel revalidate` ends with a full report and Evidently never loaded."""
    import subprocess
    import sys
    cfg = example_config(tmp_path, checks=CHECKS, perf={"enabled": False})
    for seed in (1, 2):
        x, _ = ordinary_traffic(np.random.default_rng(seed), 300)
        path = tmp_path / f"t{seed}.jsonl"
        path.write_text("\n".join(json.dumps(m) for m in traffic_lines(x, prefix=f"s{seed}-")) + "\n")
        code = ("import sys; from sentinel.cli import main; rc = main(['revalidate', '--config', sys.argv[1], "
                "'--input', sys.argv[2]]); print('EVIDENTLY', 'evidently' in sys.modules)")
        proc = subprocess.run([sys.executable, "-c", code, str(cfg), str(path)], capture_output=True, text=True)
        assert "EVIDENTLY False" in proc.stdout, proc.stdout + proc.stderr
    report = sorted((tmp_path).rglob("run-2-*.html"))[0].read_text()
    assert "Evidently: distributions" in report and "srcdoc=" in report


def test_evidentlys_section_builds_one_figure_per_column_and_shows_the_same_page(monkeypatch):
    """Evidently 0.7 builds the same distribution figure once per statistic of a column (seven)
    and shows one; Sentinel builds it once per column. The page is the same, widget ids aside:
    if an Evidently upgrade showed each statistic's own figure, the pages would differ."""
    import contextlib

    from evidently.metrics import column_statistics

    import sentinel.checks.drift as drift

    rng = np.random.default_rng(3)
    ref = {f"x{i}": rng.normal(size=400) for i in range(4)}
    cur = {f"x{i}": rng.normal(0.3, 1.2, size=400) for i in range(4)}
    built, calls = column_statistics.distribution, []

    def counted(title, current, reference):
        calls.append(title)
        return built(title, current, reference)

    monkeypatch.setattr(column_statistics, "distribution", counted)
    shared = drift.evidently_summary_html(ref, cur)
    assert len(calls) == 4, calls                  # one figure per column
    assert column_statistics.distribution is counted   # Evidently's own function is back afterwards
    monkeypatch.setattr(drift, "_one_distribution_per_column", contextlib.nullcontext)
    every = drift.evidently_summary_html(ref, cur)
    assert len(calls) == 4 + 4 * 7                 # Evidently's way: seven per column
    ids = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
    assert ids.sub("-", shared) == ids.sub("-", every)
    assert all(f"\"header\": \"x{i}\"" in shared for i in range(4))   # a panel per column


def _spied(monkeypatch):
    """Events of the runs: Evidently processes started, columns handed over, checks evaluated."""
    import sentinel.reports as reports
    import sentinel.revalidation as revalidation

    events = []
    started, send, check = reports.EvidentlyProcess.__init__, reports.EvidentlyProcess.send, revalidation.evaluate_check

    def init(self):
        events.append("process")
        started(self)

    def handed(self, reference, current):
        events.append(("send", tuple(current)))
        send(self, reference, current)

    def evaluated(c, data):
        events.append(("check", c.type))
        return check(c, data)

    monkeypatch.setattr(reports.EvidentlyProcess, "__init__", init)
    monkeypatch.setattr(reports.EvidentlyProcess, "send", handed)
    monkeypatch.setattr(revalidation, "evaluate_check", evaluated)
    return events


def test_evidentlys_section_is_built_beside_the_checks_in_the_process_started_with_the_run(tmp_path, capsys, monkeypatch):
    """The columns go to Evidently's process before the first check runs (it builds the section
    on the other core meanwhile), in the one process the run started, and the report has it."""
    cfg = example_config(tmp_path, checks=CHECKS, perf={"enabled": False})
    revalidate(cfg, tmp_path, 1, capsys)
    events = _spied(monkeypatch)
    second = revalidate(cfg, tmp_path, 2, capsys)
    assert events[0] == "process" and events.count("process") == 1, events
    assert events[1][0] == "send" and events[2] == ("check", "decision_flips"), events
    tested = {r["evidence"]["column"] for r in second["results"] if r["check"] == "data_drift" and r["slice"] != "overall"}
    assert set(events[1][1]) == tested and len(tested) == 30
    page = Path(second["report"]).read_text()
    assert "drawn from 300 of 300 rows of this window" in page and "srcdoc=" in page


def test_a_section_begun_on_other_columns_than_the_checks_tested_is_built_again(tmp_path, capsys, monkeypatch):
    """If the columns the checks tested are not those the early section was given, the report's
    section is built on the tested ones (a second process), never the early one shown."""
    import sentinel.checks.drift as drift
    cfg = example_config(tmp_path, checks=CHECKS, perf={"enabled": False})
    revalidate(cfg, tmp_path, 1, capsys)
    events = _spied(monkeypatch)
    monkeypatch.setattr(drift, "tested_columns", lambda checks, data: ["x0"])
    second = revalidate(cfg, tmp_path, 2, capsys)
    sends = [e for e in events if e[0] == "send"]
    assert sends[0] == ("send", ("x0",)) and len(sends[1][1]) == 30 and events.count("process") == 2, events
    page = Path(second["report"]).read_text()
    assert "drawn from 300 of 300 rows" in page and page.count("&quot;header&quot;: &quot;x29&quot;") == 1


def test_a_run_that_fails_after_its_section_began_leaves_no_process_or_data_behind(tmp_path, capsys, monkeypatch):
    """The section begun before the checks holds the run's data and a process: a run that ends
    without its report (a check raised) ends both, instead of keeping them until the next run."""
    import pytest

    import sentinel.reports as reports
    import sentinel.revalidation as revalidation
    from sentinel.app import build
    from sentinel.config import load_config
    from sentinel.revalidation import read_input_file

    cfg = example_config(tmp_path, checks=CHECKS, perf={"enabled": False})
    revalidate(cfg, tmp_path, 1, capsys)
    app = build(load_config(cfg))
    begun = []
    begin = reports.begin_evidently
    monkeypatch.setattr(reports, "begin_evidently", lambda data, tested: (begin(data, tested), begun.append(reports._early[0][3])))

    def broken(check, data):
        raise RuntimeError("a check that breaks")

    monkeypatch.setattr(revalidation, "evaluate_check", broken)
    x, _ = ordinary_traffic(np.random.default_rng(2), 300)
    path = tmp_path / "t2.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in traffic_lines(x, prefix="s2-")) + "\n")
    by_pair, source, _ = read_input_file(str(path), {"triage": app.pairs["triage"].shape})
    with pytest.raises(RuntimeError, match="a check that breaks"):
        app.revalidator.run("triage", trigger="cli", samples=by_pair["triage"], source=source)
    assert len(begun) == 1 and reports._early == []
    assert begun[0].proc.poll() is not None            # ended, not left waiting

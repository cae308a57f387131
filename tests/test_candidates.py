"""Several candidates, one baseline (issue 14 part 2): the committed digits pair with its int8
candidate and its damaged one, real models, real stores."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from sentinel.checks.result import CheckResult
from sentinel.config import ConfigError, load_config, parse_config
from sentinel.examples import digits
from sentinel.gate import gate_verdict
from sentinel.incidents.engine import IncidentEngine
from sentinel.incidents.lifecycle import fingerprint
from sentinel.revalidation import Revalidator, load_pair, read_input_file
from sentinel.storage import open_store

from stores import store_url  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
PAIR = digits.example_dir()
CHECKS = [{"type": "decision_flips", "warn": 0.02, "fail": 0.05, "min_samples": 100},
          {"type": "calibration", "warn": 0.005, "fail": 0.02, "min_samples": 100},
          {"type": "latency_p95", "warn": 1.0, "fail": 1.5, "min_samples": 20}]


def model(name: str) -> dict:
    return {"path": str(PAIR / name), "runtime": "onnxruntime", "threads": 1, "output_name": "probabilities"}


def digits_config(tmp_path: Path, candidates: dict, *, store: str | None = None, perf: bool = False) -> Path:
    cfg = {"store": {"url": store or f"sqlite:///{tmp_path}/s.db"},
           "pairs": {"digits": {"baseline": {"path": str(PAIR / "baseline.pt2"), "runtime": "torch", "threads": 1},
                                "candidates": {n: model(f) for n, f in candidates.items()},
                                "classes": digits.CLASSES, "batch_size": 128, "modality": "image"}},
           "checks": CHECKS, "perf": {"enabled": perf, "budget_seconds": 0.5, "warmup_seconds": 0.05},
           "reports_dir": str(tmp_path / "reports"), "api": {"enabled": False}}
    path = tmp_path / "sentinel.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def traffic(tmp_path: Path, n: int, seed: int, name: str = "t.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(m) + "\n" for m in digits.traffic_messages(np.random.default_rng(seed), n,
                                                                                    prefix=f"s{seed}")))
    return path


class Counting:
    """A real runner, counting the rows of every multi-row call (window and reference inference;
    batch-1 timing calls are left out)."""

    def __init__(self, runner):
        self.runner, self.rows, self.calls = runner, 0, 0

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def run(self, batch):
        n = len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)
        if n > 1:
            self.rows, self.calls = self.rows + n, self.calls + 1
        return self.runner.run(batch)


# -- config ----------------------------------------------------------------------------------

def test_candidates_config_is_validated_with_the_key_named():
    base = {"path": "b.onnx"}

    def pair(**kw):
        return {"pairs": {"p": {"baseline": base, "classes": ["a", "b"], **kw}}}
    for raw, words in ((pair(), "neither is set"), (pair(candidate=base, candidates={"a": base}), "both are set"),
                       (pair(candidates={"int-8": base}), "'int-8' is not a simple identifier"),
                       (pair(candidates={}), "candidates is empty")):
        with pytest.raises(ConfigError) as err:
            parse_config(raw, source="f.yaml", environ={})
        assert words in str(err.value) and "pairs.p" in str(err.value)
    cfg = parse_config(pair(candidates={"int8": base, "pruned50": {"path": "p.onnx"}}), environ={})
    assert list(cfg.pairs["p"].candidate_specs()) == ["int8", "pruned50"]
    single = parse_config(pair(candidate=base), environ={})
    assert "candidates" not in single.pairs["p"].model_dump()     # a single pair dumps (and hashes) as before


def test_an_unknown_candidate_file_is_named_by_its_key(tmp_path):
    cfg = load_config(digits_config(tmp_path, {"int8": "candidate.int8.onnx", "gone": "nope.onnx"}))
    with pytest.raises(ConfigError, match=r"pairs\.digits\.candidates\.gone\.path: model file not found"):
        load_pair(cfg, "digits")


# -- one run, baseline once, results per candidate -------------------------------------------

def test_one_run_covers_every_candidate_and_the_baseline_runs_once_per_window(tmp_path):
    cfg = load_config(digits_config(tmp_path, {"int8": "candidate.int8.onnx", "damaged": "damaged.int8.onnx"}))
    loaded = load_pair(cfg, "digits")
    loaded.baseline = counting = Counting(loaded.baseline)
    store = open_store(cfg.store.url)
    reval = Revalidator(cfg, store, {"digits": loaded})
    first, source, _ = read_input_file(str(traffic(tmp_path, 600, 1)), {"digits": loaded.shape})
    outcome = reval.run("digits", trigger="test", samples=first["digits"], source=source)
    assert counting.rows == 600 and counting.calls == 5          # 600 rows in batches of 128, once
    assert {r.candidate for r in outcome.results} == {"int8", "damaged"}
    flips = {r.candidate: r for r in outcome.results if r.check == "decision_flips" and r.slice == "overall"}
    assert flips["int8"].status == "pass" and flips["damaged"].status == "fail"
    assert flips["damaged"].value > 0.1 > flips["int8"].value
    stored = store.get_run(outcome.run_id)
    assert {(r["candidate"], r["check"]) for r in stored["results"]} == {
        (c, k) for c in ("int8", "damaged") for k in ("decision_flips", "calibration", "latency_p95")}
    assert set(stored["record"]["models"]["candidates"]) == {"int8", "damaged"}
    assert stored["record"]["baseline_runs"] == {"batches": 5, "reused": 5}
    # a second window with the first as reference: the baseline runs once on each
    counting.rows = counting.calls = 0
    second, _, _ = read_input_file(str(traffic(tmp_path, 300, 2, "u.jsonl")), {"digits": loaded.shape})
    reval.evaluate_data(loaded, second["digits"], reference_runs=[outcome.run_id])
    assert counting.rows == 300 + 600


def test_the_tradeoff_table_is_in_the_record(tmp_path):
    cfg = load_config(digits_config(tmp_path, {"int8": "candidate.int8.onnx", "damaged": "damaged.int8.onnx"},
                                    perf=True))
    loaded = load_pair(cfg, "digits")
    given, source, _ = read_input_file(str(traffic(tmp_path, 400, 3)), {"digits": loaded.shape})
    store = open_store(cfg.store.url)
    outcome = Revalidator(cfg, store, {"digits": loaded}).run(
        "digits", trigger="test", samples=given["digits"], source=source)
    table = outcome.record["tradeoff"]
    rows = {r["candidate"]: r for r in table["candidates"]}
    assert [r["candidate"] for r in table["candidates"]] == ["int8", "damaged"]
    assert rows["int8"]["safety_pass"] and not rows["damaged"]["safety_pass"]
    assert "decision_flips" in rows["damaged"]["failed_checks"]
    # the damaged candidate's failing flips are diagnosed on its own flips (no float twin here:
    # at the output level); the passing int8 is not diagnosed
    diagnosed = outcome.record["diagnosis"]["candidates"]
    assert list(diagnosed) == ["damaged"] and diagnosed["damaged"]["result"]["candidate"] == "damaged"
    assert diagnosed["damaged"]["result"]["mode"] == "outputs"
    assert diagnosed["damaged"]["result"]["rows"]["flipped"] == min(round(rows["damaged"]["flip_rate"] * 400), 500)
    assert rows["int8"]["model_bytes"] == (PAIR / "candidate.int8.onnx").stat().st_size
    assert rows["damaged"]["flip_rate"] > 0.1 and rows["int8"]["flip_rate"] < 0.02
    for r in rows.values():
        assert r["latency_ratio"] > 0 and r["peak_memory_bytes"] > 0
        assert r["energy"]["status"] in ("measured", "unavailable")
        assert r["energy"].get("reason") or r["energy"].get("joules_per_1000") is not None
        perf = outcome.record["candidates"][r["candidate"]]["perf"]
        assert perf["model_bytes"]["candidate"] == r["model_bytes"]
    assert "perf" not in outcome.record      # each candidate's is under candidates.<name>.perf
    # the report and the console's run page show the table and the plot, no script
    from types import SimpleNamespace

    from sentinel.console import views
    from sentinel.reports import render_run

    stored = store.get_run(outcome.run_id)
    page = render_run(stored)
    for html in (page, "".join(views.run(SimpleNamespace(store=store, cfg=cfg), outcome.run_id)["plots"])):
        assert "id='tradeoff'>Candidates compared</h" in html and "<script" not in html
        assert "aria-label='candidates'" in html and "<title>damaged: " in html
        assert "FAIL: " in html and f"{rows['int8']['flip_rate']:.1%} flips" in html
    assert "damaged:decision_flips" in page


# -- incidents --------------------------------------------------------------------------------

def test_two_failing_candidates_are_two_incidents_naming_them(tmp_path, capsys):
    cfg = load_config(digits_config(tmp_path, {"damaged": "damaged.int8.onnx", "damaged_too": "damaged.int8.onnx",
                                               "int8": "candidate.int8.onnx"}))
    store = open_store(cfg.store.url)
    loaded = load_pair(cfg, "digits")
    given, source, _ = read_input_file(str(traffic(tmp_path, 400, 4)), {"digits": loaded.shape})
    engine = IncidentEngine.from_config(cfg, store)
    from prometheus_client import CollectorRegistry

    from sentinel.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    outcome = Revalidator(cfg, store, {"digits": loaded}, incidents=engine, metrics=metrics).run(
        "digits", trigger="test", samples=given["digits"], source=source)
    assert metrics.registry.get_sample_value("sentinel_runs_total", {"pair": "digits", "status": "fail"}) == 1
    flips = [engine.get(c.incident_id) for c in outcome.incidents if c.check == "decision_flips"]
    assert sorted(c.candidate for c in outcome.incidents if c.check == "decision_flips") == ["damaged", "damaged_too"]
    assert len({i["fingerprint"] for i in flips}) == 2
    from sentinel.incidents.payload import build_payload
    from sentinel.notifiers.render import text_body
    from sentinel.printing import print_incident

    for inc in flips:
        who = inc["evidence"]["candidate"]
        assert inc["title"].startswith(f"digits, candidate {who}: decision_flips failed on overall")
        payload = build_payload("opened", inc, inc["opened_at"], actor=None)
        assert payload["incident"]["candidate"] == who and f"Candidate: {who}" in text_body(payload, None)
        print_incident(inc)     # what `sentinel incidents show` prints
        assert f"pair digits  candidate {who}  check decision_flips" in capsys.readouterr().out
    assert all(c.candidate != "int8" for c in outcome.incidents)


def test_single_candidate_results_and_fingerprints_are_unchanged():
    import hashlib

    r = CheckResult("decision_flips", "overall", "pass", 0.0, 10, "ok")
    assert "candidate" not in r.to_row()
    assert fingerprint("triage", "decision_flips") == hashlib.sha256(b"triage\x1fdecision_flips\x1f*").hexdigest()[:32]
    assert fingerprint("p", "c", "*", "int8") != fingerprint("p", "c", "*", "damaged")


# -- migration --------------------------------------------------------------------------------

def test_migration_0008_adds_and_removes_the_candidate_column(store_url):  # noqa: F811
    from sqlalchemy import inspect

    from sentinel.storage.repository import make_engine
    from test_storage import migrate_to

    engine = make_engine(store_url)
    for _ in migrate_to(engine, "0007"):
        pass
    assert "candidate" not in {c["name"] for c in inspect(engine).get_columns("check_results")}
    for conn in migrate_to(engine, "0008"):
        conn.exec_driver_sql("INSERT INTO runs (pair, trigger, status, started_at, record, n_samples) VALUES "
                             "('p', 't', 'pass', '2026-12-01 00:00:00', '{}', 0)")
        conn.exec_driver_sql("INSERT INTO check_results (run_id, \"check\", slice, status, n, message, evidence, "
                             "candidate) SELECT id, 'c', 'overall', 'pass', 1, 'm', '{}', 'int8' FROM runs")
    assert "candidate" in {c["name"] for c in inspect(engine).get_columns("check_results")}
    for _ in migrate_to(engine, "0007", downgrade=True):
        pass
    assert "candidate" not in {c["name"] for c in inspect(engine).get_columns("check_results")}
    with engine.connect() as conn:       # the results themselves are kept
        assert conn.exec_driver_sql("SELECT count(*) FROM check_results").scalar_one() == 1
    engine.dispose()


# -- gate -------------------------------------------------------------------------------------

def test_the_gate_judges_only_the_asked_candidate(tmp_path, store_url):  # noqa: F811
    cfg = load_config(digits_config(tmp_path, {"int8": "candidate.int8.onnx", "damaged": "damaged.int8.onnx"},
                                    store=store_url))
    store = open_store(cfg.store.url)
    loaded = load_pair(cfg, "digits")
    given, source, _ = read_input_file(str(traffic(tmp_path, 400, 5)), {"digits": loaded.shape})
    engine = IncidentEngine.from_config(cfg, store)
    run = Revalidator(cfg, store, {"digits": loaded}, incidents=engine).run(
        "digits", trigger="test", samples=given["digits"], source=source)
    good = gate_verdict(store, cfg, "digits", loaded.candidates["int8"].sha256, incidents=engine)
    bad = gate_verdict(store, cfg, "digits", loaded.candidates["damaged"].sha256, incidents=engine)
    assert (good.verdict, good.run) == ("pass", run.run_id)
    assert set(good.checks) == {"decision_flips", "calibration", "latency_p95"}
    assert bad.verdict == "fail" and "decision_flips" in bad.reason
    other = gate_verdict(store, cfg, "digits", "0" * 64)
    assert other.verdict == "inconclusive"
    # the HTTP endpoint says the same (what Argo Rollouts and Flagger read)
    from types import SimpleNamespace

    from sentinel.api_gate import answer
    from sentinel.console import views

    app = SimpleNamespace(store=store, cfg=cfg, pairs={"digits": loaded}, incidents=engine)
    for name, ok in (("int8", True), ("damaged", False)):
        resp = answer(app, {"pair": "digits", "candidate": loaded.candidates[name].sha256})
        body = json.loads(resp.body)
        assert body["ok"] is ok and body["candidate"] == loaded.candidates[name].sha256
    # the console's pair page lists each candidate file
    models = views.pair(app, "digits")["models"]
    assert models["candidate int8"]["sha256"] == loaded.candidates["int8"].sha256 and "candidates" not in models


# -- sentinel compare -------------------------------------------------------------------------

def test_compare_on_the_digits_example_names_int8_and_rejects_the_damaged_one(tmp_path, monkeypatch, capsys):
    from sentinel.cli import main

    monkeypatch.setenv("SENTINEL_STORE__URL", f"sqlite:///{tmp_path}/c.db")
    monkeypatch.setenv("SENTINEL_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("SENTINEL_PERF__BUDGET_SECONDS", "0.5")
    monkeypatch.setenv("SENTINEL_PERF__ACCEPTED_MODELS_DIR", str(tmp_path / "accepted"))   # not into deploy/
    data = traffic(tmp_path, 1000, 0)
    code = main(["compare", "--config", str(ROOT / "deploy/sentinel.digits.compare.yaml"), "--input", str(data)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().splitlines()[-1].startswith("chosen: int8 (smallest model file")
    damaged = next(line for line in out.splitlines() if line.strip().startswith("damaged"))
    assert "FAIL: " in damaged and "decision_flips" in damaged
    code = main(["compare", "--config", str(ROOT / "deploy/sentinel.digits.compare.yaml"), "--input", str(data),
                 "--prefer", "fastest", "--json"])
    got = json.loads(capsys.readouterr().out)
    assert code == 0 and got["chosen"] == "int8" and got["prefer"] == "fastest"
    assert [r["candidate"] for r in got["tradeoff"]["candidates"]] == ["int8", "damaged"]


def test_compare_exits_1_when_no_candidate_passes_and_2_on_errors(tmp_path, capsys):
    from sentinel.cli import main

    cfg = digits_config(tmp_path, {"damaged": "damaged.int8.onnx", "damaged_too": "damaged.int8.onnx"})
    data = traffic(tmp_path, 400, 6)
    assert main(["compare", "--config", str(cfg), "--input", str(data)]) == 1
    captured = capsys.readouterr()
    assert "chosen: none (no candidate passes every safety check)" in captured.err
    assert main(["compare", "--config", str(cfg), "--input", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read input file" in capsys.readouterr().err
    assert main(["compare", "--config", str(cfg), "--input", str(data), "--pair", "nope"]) == 2
    assert "no pair 'nope'" in capsys.readouterr().err
    raw = yaml.safe_load(cfg.read_text())
    raw["pairs"]["digits"]["candidate"] = raw["pairs"]["digits"].pop("candidates")["damaged"]
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["compare", "--config", str(cfg), "--input", str(data), "--pair", "digits"]) == 2
    assert "pairs.digits: has one candidate" in capsys.readouterr().err


def test_a_stored_window_of_a_multi_candidate_pair_and_a_single_pair_beside_it(tmp_path):
    """The daemon's path (the window claimed from the store), and a single-candidate pair's run
    record and results exactly as before: no candidate, no trade-off, models.candidate."""
    import datetime as dt

    from sentinel.sampling import Sampler
    from sentinel.storage.repository import SampleIn

    path = digits_config(tmp_path, {"int8": "candidate.int8.onnx", "damaged": "damaged.int8.onnx"})
    raw = yaml.safe_load(path.read_text())
    raw["pairs"]["single"] = {**raw["pairs"]["digits"], "candidate": model("candidate.int8.onnx")}
    del raw["pairs"]["single"]["candidates"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(path)
    store = open_store(cfg.store.url)
    x, _ = digits.ordinary_traffic(np.random.default_rng(8), 300)
    now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    for pair in ("digits", "single"):
        store.ingest([SampleIn(pair=pair, msg_id=f"m{i}", ts=now, topic="t", partition=0, offset=i,
                               sample_key=Sampler().key(pair, f"m{i}"), inputs={"image": img.astype(np.float32)},
                               attributes={}) for i, img in enumerate(x)], [], [], window=1000, rate=1.0)
    reval = Revalidator(cfg, store, {p: load_pair(cfg, p) for p in ("digits", "single")})
    multi, single = reval.run("digits"), reval.run("single")
    assert multi.n_samples == single.n_samples == 300
    assert {r.candidate for r in multi.results} == {"int8", "damaged"} and "tradeoff" in multi.record
    assert {r.candidate for r in single.results} == {None}
    assert "tradeoff" not in single.record and "candidates" not in single.record
    assert set(single.record["models"]) == {"baseline", "candidate"}
    assert all("candidate" not in r.to_row() for r in single.results)
    ours = [r for r in multi.results if r.candidate == "int8"]
    assert [(r.check, r.slice, r.status, r.value) for r in ours] == [
        (r.check, r.slice, r.status, r.value) for r in single.results if r.type != "latency_p95"
    ] + [(r.check, r.slice, r.status, r.value) for r in ours if r.type == "latency_p95"]


def test_each_candidate_keeps_its_own_check_gauges_also_after_a_restart(tmp_path):
    """A pair with several candidates: sentinel_check_status/value per CANDIDATE:CHECK (as the
    report labels them), so the last candidate's value does not hide the first's, and the
    SentinelCheckFailing alert names the candidate; the same series come back from the store."""
    from prometheus_client import generate_latest

    from sentinel.metrics import Metrics
    from sentinel.storage.summaries import metrics_state

    path = digits_config(tmp_path, {"int8": "candidate.int8.onnx", "damaged": "damaged.int8.onnx"})
    cfg = load_config(path)
    store = open_store(cfg.store.url)
    metrics = Metrics()
    reval = Revalidator(cfg, store, {"digits": load_pair(cfg, "digits")}, metrics=metrics)
    by_pair, source, _ = read_input_file(str(traffic(tmp_path, 600, 3)), {"digits": reval.pairs["digits"].shape})
    out = reval.run("digits", samples=by_pair["digits"], source=source)
    flips = {r.candidate: r for r in out.results if r.type == "decision_flips" and r.slice == "overall"}
    assert flips["damaged"].status == "fail" and flips["int8"].status == "pass"
    text = generate_latest(metrics.registry).decode()
    for name, r in flips.items():
        assert (f'sentinel_check_status{{check="{name}:{r.check}",pair="digits",slice="overall"}} '
                f'{4.0 if name == "damaged" else 0.0}') in text
    restored = Metrics()
    restored.restore(metrics_state(store))
    again = generate_latest(restored.registry).decode()
    assert f'sentinel_check_status{{check="damaged:{flips["damaged"].check}",pair="digits",slice="overall"}} 4.0' in again
    assert f'sentinel_check_status{{check="int8:{flips["int8"].check}",pair="digits",slice="overall"}} 0.0' in again


# -- performance history, per candidate -------------------------------------------------------

def test_each_candidate_is_timed_against_its_own_accepted_history(tmp_path):
    """perf_history of a pair with several candidates: each candidate's accepted timings are its
    own history (never another candidate's), and its accepted file is kept for later runs."""
    from sentinel.perf.accepted import AcceptedModels, candidate_sha_of
    from sentinel.perf.history import perf_history

    path = digits_config(tmp_path, {"int8": "candidate.int8.onnx", "damaged": "damaged.int8.onnx"}, perf=True)
    raw = yaml.safe_load(path.read_text())
    raw["checks"] = CHECKS + [{"type": "perf_history", "warn": 1.05, "fail": 1.08, "min_samples": 20}]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(path)
    loaded = load_pair(cfg, "digits")
    store = open_store(cfg.store.url)
    reval = Revalidator(cfg, store, {"digits": loaded})
    sha = {name: r.sha256 for name, r in loaded.candidates.items()}
    assert sha["int8"] != sha["damaged"]

    def run(seed):
        given, source, _ = read_input_file(str(traffic(tmp_path, 400, seed, f"{seed}.jsonl")), {"digits": loaded.shape})
        return reval.run("digits", trigger="test", samples=given["digits"], source=source)

    def judged(outcome, name):
        got = [r for r in outcome.results if r.candidate == name and r.type == "perf_history"
               and r.slice.startswith("latency")]
        assert got
        return got

    first = run(5)
    for name in sha:
        assert all(r.status == "insufficient_data" and "no accepted history" in r.message for r in judged(first, name))
        assert first.record["candidates"][name]["perf"]["accepted"] is True
        [h] = perf_history(store, "digits", 10, name)              # its own record, naming its own file
        assert h["run_id"] == first.run_id and candidate_sha_of(h) == sha[name]
        assert AcceptedModels(cfg.resolve_path(cfg.perf.accepted_models_dir)).find(sha[name]) is not None
    assert perf_history(store, "digits", 10) == []                # no single-candidate record to mix in
    second = run(6)
    for name in sha:
        for r in judged(second, name):
            ref = r.evidence["reference"]
            assert (ref["kind"], ref["sha256"], ref["run_id"]) == ("identical", sha[name], first.run_id), r.message
            assert r.evidence["history_runs"] == 1 and r.status != "insufficient_data", r.message
        assert len(perf_history(store, "digits", 10, name)) == 2
    # "damaged" rebuilt (here: another file under that name): timed interleaved against the
    # accepted damaged file, while int8 is still judged against its own
    raw["pairs"]["digits"]["candidates"]["damaged"] = model("candidate.int8.onnx")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(path)
    loaded = load_pair(cfg, "digits")
    reval = Revalidator(cfg, store, {"digits": loaded})
    third = run(7)
    for r in judged(third, "damaged"):
        assert (r.evidence["reference"]["kind"], r.evidence["reference"]["sha256"]) == ("accepted_model", sha["damaged"])
        assert "timed interleaved" in r.message and r.status != "insufficient_data", r.message
    assert {r.evidence["reference"]["kind"] for r in judged(third, "int8")} == {"identical"}
    from sentinel.errors import StateError
    from sentinel.perf.accepted import accept_run
    with pytest.raises(StateError, match="judged several candidates: each one's performance joins its own history"):
        accept_run(store, second.run_id, actor="carol", reason="slower by design", kept=None)

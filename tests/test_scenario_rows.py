"""Scenario suites and pinned reference data sets with typed inputs: lines as flat arrays, as
named tensors and as raw text, checked against the models' signature with the line named when
one does not fit; and the RunData/ReferenceData builders for rows."""
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from sentinel.checks.base import RunData, build_check
from sentinel.checks.data import model_inputs, run_data, sample_rows, samples_reference
from sentinel.checks.scenarios import DataSetError, model_rows, pinned_reference, read_rows
from sentinel.config import CheckSpec
from sentinel.tensors import Signature

from typed import TEXT_SIG, TextNet, encode_texts, messages, text_predict

CLASSES = ["routine", "billing", "urgent"]


def write(tmp_path, lines, name="set.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(obj) + "\n" for obj in lines))
    return p, hashlib.sha256(p.read_bytes()).hexdigest()


def text_lines():
    texts = messages(3, 40)
    out = [{"id": f"t{i}", "text": t, "label": "urgent" if i % 2 else "routine"} for i, t in enumerate(texts[:20])]
    for i, r in enumerate(encode_texts(texts[20:])):
        out.append({"id": f"n{i}", "inputs": {k: v.tolist() for k, v in r.items()}, "attributes": {"lang": "en"}})
    return out


def test_read_rows_keeps_texts_named_tensors_and_the_file_hash(tmp_path):
    p, digest = write(tmp_path, text_lines())
    rows = read_rows(p, digest)
    assert rows.sha256 == digest and rows.inputs is None and len(rows.ids) == 40
    assert rows.texts[0] is not None and rows.rows[0] is None
    assert rows.texts[25] is None and rows.rows[25]["input_ids"].dtype.kind == "i"
    mrows = model_rows(rows, TEXT_SIG, encode_texts)
    assert all(r["input_ids"].dtype == np.int64 for r in mrows) and len(mrows) == 40
    assert mrows[0]["input_ids"].tolist() == encode_texts([rows.texts[0]])[0]["input_ids"].tolist()


def test_a_text_scenario_runs_through_the_models_and_records_the_data_set(tmp_path):
    p, digest = write(tmp_path, text_lines())
    sc = build_check(CheckSpec(type="scenario", name="scenario:text", min_samples=1, params={
        "file": str(p), "sha256": digest, "kind": "edge_cases",
        "checks": [{"type": "decision_flips", "min_samples": 10}, {"type": "robustness", "min_samples": 10}]}))
    net = TextNet()
    data = RunData("p", CLASSES, ["urgent"], np.zeros((0, 3)), np.zeros((0, 3)), None, [], {},
                   predict=text_predict(net, 0.0), signature=TEXT_SIG, rows=[], modality="text",
                   encode_texts=encode_texts)
    res = sc.evaluate(data)
    flips = next(r for r in res if r.check == "scenario:text/decision_flips" and r.slice == "overall")
    assert flips.n == 40 and flips.value == 0.0 and flips.evidence["scenario"]["sha256"] == digest
    assert {r.slice for r in res if r.check == "scenario:text/robustness"} == {
        "token_dropout=0.1", "token_swap=0.1", "typo=0.05"}
    typo = next(r for r in res if r.slice == "typo=0.05")
    assert typo.n == 20       # only the lines that came as text get typos


@pytest.mark.parametrize("line, problem", [
    ({"inputs": {"input_ids": [2, 5, 3]}}, "line 2: missing input 'attention_mask'"),
    ({"inputs": {"input_ids": [2, 5, 3], "attention_mask": [1, 1, 1], "extra": [1]}}, "line 2: unknown input 'extra'"),
    ({"inputs": {"input_ids": [[2, 5, 3]], "attention_mask": [1, 1, 1]}}, "line 2: input 'input_ids' has 2 dimension"),
    ({"inputs": {"input_ids": [2, 5.5, 3], "attention_mask": [1, 1, 1]}}, "line 2: input 'input_ids' is int64"),
    ({"inputs": [0.1, 0.2]}, "line 2: a flat 'inputs' array fits a model with one fixed-shape input"),
])
def test_lines_that_do_not_fit_the_models_name_the_line(tmp_path, line, problem):
    p, digest = write(tmp_path, [{"text": "my order is late"}, line])
    rows = read_rows(p, digest)
    with pytest.raises(DataSetError, match=problem):
        model_rows(rows, TEXT_SIG, encode_texts)
    sc = build_check(CheckSpec(type="scenario", name="s", params={"file": str(p), "sha256": digest, "checks": []}))
    data = RunData("p", CLASSES, [], np.zeros((0, 3)), np.zeros((0, 3)), None, [], {},
                   predict=text_predict(TextNet(), 0.0), signature=TEXT_SIG, rows=[], modality="text",
                   encode_texts=encode_texts)
    [r] = sc.evaluate(data)
    assert r.status == "error" and problem.split(": ", 1)[1] in r.message


@pytest.mark.parametrize("line, problem", [
    ('{"inputs": {"x": [1, [2]]}}', "line 1: input 'x' is not a non-empty array of finite numbers"),
    ('{"inputs": {"x": ["a"]}}', "line 1: input 'x' is not a non-empty array of finite numbers"),
    ('{"text": 5}', "line 1: 'text' must be a string"),
    ('{"text": "hi", "inputs": [1]}', "line 1: give 'inputs' or 'text', not both"),
    ('{"id": 1}', "line 1: a message needs 'inputs'"),
    ('[1, 2]', "line 1: not a message"),
    ('{"inputs": [1, "x"]}', "line 1: 'inputs' is not a flat array of finite numbers"),
    ('{"inputs": [1, NaN]}', "line 1: 'inputs' is not a flat array of finite numbers"),
    ('{"inputs": {"x": [Infinity]}}', "line 1: input 'x' is not a non-empty array of finite numbers"),
    ('{"inputs": ' + "[" * 5000 + "]" * 5000 + "}", "line 1: arrays nest too deep"),
    ('{"inputs": [1', "line 1: not JSON"),
])
def test_malformed_lines_are_refused_when_read(tmp_path, line, problem):
    p = tmp_path / "bad.jsonl"
    p.write_text(line + "\n")
    with pytest.raises(DataSetError, match=problem):
        read_rows(p, hashlib.sha256(p.read_bytes()).hexdigest())


def test_text_lines_need_a_tokenizer(tmp_path):
    p, digest = write(tmp_path, [{"text": "hello"}])
    with pytest.raises(DataSetError, match="'text' needs a pair with a tokenizer"):
        model_rows(read_rows(p, digest), TEXT_SIG, None)


def test_flat_lines_fit_a_single_input_model_and_a_pinned_reference_keeps_its_rows(tmp_path):
    p, digest = write(tmp_path, [{"inputs": [0.1 * i, 1.0, 2.0, 3.0], "label": "a"} for i in range(5)])
    rows = read_rows(p, digest)
    assert rows.inputs.shape == (5, 4)
    sig = Signature.single((2, 2), name="image")
    mrows = model_rows(rows, sig, None)
    assert mrows[1]["image"].shape == (2, 2) and mrows[1]["image"].dtype == np.float32

    def predict(x):
        assert isinstance(x, np.ndarray) and x.shape == (5, 2, 2)
        p1 = 1 / (1 + np.exp(-np.asarray(x).reshape(len(x), -1).sum(1)))
        both = np.stack([1 - p1, p1], axis=1)
        return both, both
    ref = pinned_reference(rows, ["a", "b"], predict, signature=sig)
    assert ref.source == {"kind": "pinned", "file": str(p), "sha256": digest}
    assert ref.n == 5 and ref.inputs.shape == (5, 2, 2) and len(ref.rows) == 5 and ref.labels.tolist() == [0] * 5
    legacy = pinned_reference(rows, ["a", "b"], predict, input_shape=(2, 2))
    assert legacy.rows is None and legacy.inputs.shape == (5, 2, 2)


def test_a_pinned_text_reference_runs_the_models_on_rows(tmp_path):
    p, digest = write(tmp_path, text_lines())
    ref = pinned_reference(read_rows(p, digest), CLASSES, text_predict(TextNet(), 0.0), signature=TEXT_SIG,
                           encode_texts=encode_texts)
    assert ref.inputs is None and ref.n == 40 and ref.texts[0] is not None and ref.texts[30] is None


# -- builders of RunData / ReferenceData from samples ------------------------------------------------


@dataclass
class Sample:
    inputs: object
    label: str | None = None
    attributes: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    text: str | None = None


@dataclass
class Shape:
    features: list | None = None


@dataclass
class Pair:
    name: str = "p"
    classes: list = field(default_factory=lambda: list(CLASSES))
    critical_classes: list = field(default_factory=lambda: ["urgent"])
    shape: Shape = field(default_factory=Shape)


def test_legacy_flat_samples_and_one_input_rows_give_the_same_stacked_inputs():
    flat = [Sample([1.0, 2.0, 3.0]), Sample([4.0, 5.0, 6.0])]
    typed = [Sample({"input": np.array([1.0, 2.0, 3.0], dtype=np.float32)}),
             Sample({"input": np.array([4.0, 5.0, 6.0], dtype=np.float32)})]
    assert np.array_equal(model_inputs(flat, (3,)), model_inputs(typed, (3,)))
    sig = Signature.single((3,), name="features")
    assert [r["features"].tolist() for r in sample_rows(flat, sig)] == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match="one input per row"):
        model_inputs([Sample({"a": np.zeros(1), "b": np.zeros(1)})], (1,))


def test_run_data_and_samples_reference_keep_rows_and_texts():
    texts = messages(8, 30)
    samples = [Sample(r, label="urgent", text=t, attributes={"lang": "en"}) for r, t in zip(encode_texts(texts), texts)]
    predict = text_predict(TextNet(), 0.0)
    pb, pc = predict(sample_rows(samples, TEXT_SIG))
    data = run_data(Pair(), samples, None, pb, pc, served_field="served_latency_ms", latency={}, signature=TEXT_SIG,
                    modality="text", texts=texts, predict=predict)
    assert len(data.rows) == 30 and data.rows[0]["input_ids"].dtype == np.int64 and data.labels.tolist() == [2] * 30
    ref = samples_reference({"kind": "runs"}, samples, None, CLASSES, predict, signature=TEXT_SIG)
    assert ref.inputs is None and ref.texts == texts and np.allclose(ref.baseline, pb)

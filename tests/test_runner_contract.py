"""One contract for every runner, run over each model kind (one float input; two int64 inputs of
variable length; an NCHW CNN) x runtime (torch.export, onnxruntime), on tiny real models built
by sentinel.testing.models: signatures read from the files, outputs, casting, batching
equivalence, hashes, refusals; plus the quantized, logits and multilabel output kinds."""
from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sentinel.runners import QUANTIZED_SUM_TOLERANCE, ModelLoadError, PairedRunner, Runner, RunnerOutput, load_runner
from sentinel.runners.batches import probe_batch
from sentinel.runners.paired import pair_differences
from sentinel.tensors import Signature, TensorSpec, collate
from sentinel.testing import models
from test_runners import _Payload, _rewrite_pt2

KINDS = models.KINDS
RUNTIMES = ("torch", "onnxruntime")
EXPECTED = {
    "mlp": [("features", "float32", (30,))],
    "text": [("input_ids", "int64", (None,)), ("attention_mask", "int64", (None,))],
    "cnn": [("pixels", "float32", (1, 8, 8))],
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, models.TinyModel]:
    root = tmp_path_factory.mktemp("models")
    return {kind: models.build(kind, root) for kind in KINDS}


@pytest.fixture(scope="module")
def heads(tmp_path_factory) -> dict[str, models.TinyModel]:
    """The CNN with a logits and a sigmoid head (same weights: same seed), and the text model
    returning a dict of named outputs."""
    root = tmp_path_factory.mktemp("heads")
    return {"logits": models.build("cnn", root, head="logits", quantize=False),
            "sigmoid": models.build("cnn", root, head="sigmoid", quantize=False),
            "named": models.build("text", root, named_outputs=True, quantize=False)}


_cache: dict[tuple[str, str], Runner] = {}


@pytest.fixture(params=[(k, r) for k in KINDS for r in RUNTIMES], ids=lambda p: f"{p[0]}-{p[1]}")
def case(request, built) -> tuple[str, Runner]:
    kind, runtime = request.param
    if (kind, runtime) not in _cache:
        _cache[(kind, runtime)] = load_runner(built[kind].path(runtime), runtime=runtime, role="baseline", threads=1)
    return kind, _cache[(kind, runtime)]


def alone(runner: Runner, rows: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Each row run on its own, as a batch of one."""
    return np.concatenate([runner.predict_proba({k: v[None] for k, v in row.items()}) for row in rows])


# -- signature, outputs, hashes -------------------------------------------------------------------


def test_signature_is_read_from_the_model_file(case):
    kind, runner = case
    assert isinstance(runner, Runner)
    got = [(s.name, s.dtype, s.shape) for s in runner.signature.inputs]
    assert got == EXPECTED[kind]
    assert runner.input_shape == (None if kind == "text" else EXPECTED[kind][0][2])
    assert runner.n_outputs == models.N_CLASSES[kind]


def test_outputs_are_float64_probabilities_per_row(case):
    kind, runner = case
    batch = collate(models.rows(kind, 17, seed=3), runner.signature)
    out = runner.run(batch)
    assert isinstance(out, RunnerOutput) and out.embedding is None
    assert out.proba.shape == (17, runner.n_outputs) and out.proba.dtype == np.float64
    np.testing.assert_allclose(out.proba.sum(axis=1), 1.0, atol=1e-9)   # renormalised
    assert ((out.proba >= 0) & (out.proba <= 1)).all()
    assert 0 <= out.deviation < 1e-5                                     # a float model: rounding only
    np.testing.assert_array_equal(runner.predict_proba(batch), out.proba)
    assert out.proba.std(axis=0).max() > 1e-3                            # the rows are told apart
    empty = runner.run({k: v[:0] for k, v in batch.items()})
    assert empty.proba.shape == (0, runner.n_outputs)


def test_sha256_names_the_file(case):
    _, runner = case
    assert runner.sha256 == hashlib.sha256(runner.path.read_bytes()).hexdigest()


def test_both_runtimes_agree_on_the_same_network(built):
    for kind in KINDS:
        batch = collate(models.rows(kind, 9, seed=5), Signature(tuple(TensorSpec(n, d, s) for n, d, s in EXPECTED[kind])))
        torch_p = load_runner(built[kind].pt2, runtime="torch", role="baseline").predict_proba(batch)
        onnx_p = load_runner(built[kind].onnx, runtime="onnxruntime", role="candidate").predict_proba(batch)
        np.testing.assert_allclose(torch_p, onnx_p, atol=1e-5)


# -- casting and refusals -------------------------------------------------------------------------


def test_inputs_are_cast_to_their_declared_dtype(case):
    kind, runner = case
    batch = collate(models.rows(kind, 6, seed=4), runner.signature)
    as_float64 = {k: v.astype(np.float64) for k, v in batch.items()}   # whole-number ids as floats too
    np.testing.assert_allclose(runner.predict_proba(as_float64), runner.predict_proba(batch), atol=1e-6)
    if kind == "text":
        as_float64["input_ids"][0, 0] = 3.5
        with pytest.raises(ValueError, match=r"input 'input_ids' is int64: values must be whole numbers"):
            runner.predict_proba(as_float64)


def test_wrong_names_ranks_and_dimensions_are_refused_naming_them(case):
    kind, runner = case
    batch = collate(models.rows(kind, 4), runner.signature)
    first = runner.signature.names[0]
    with pytest.raises(ValueError, match=rf"unknown input 'bogus' \(the model takes {', '.join(runner.signature.names)}\)"):
        runner.predict_proba({**batch, "bogus": batch[first]})
    with pytest.raises(ValueError, match=rf"missing input '{runner.signature.names[-1]}'"):
        runner.predict_proba({k: v for k, v in batch.items() if k != runner.signature.names[-1]})
    with pytest.raises(ValueError, match=rf"input '{first}' has {batch[first].ndim + 1} dimension\(s\), the model expects {batch[first].ndim}"):
        runner.predict_proba({**batch, first: batch[first][..., None]})
    if kind == "text":   # dynamic lengths: any length goes, but ids and mask must agree
        with pytest.raises(ValueError, match=r"the model failed on a batch of input_ids \[4, \d+\], attention_mask \[4, \d+\]"):
            runner.predict_proba({**batch, "attention_mask": batch["attention_mask"][:, :-1]})
        return
    wrong = batch[first][:, :-1] if kind == "mlp" else batch[first][:, :, :7]
    dim, want = (1, 30) if kind == "mlp" else (2, 8)
    with pytest.raises(ValueError, match=rf"input '{first}' dimension {dim} is {want - 1}, the model expects {want}"):
        runner.predict_proba({first: wrong})
    with pytest.raises(ValueError, match=rf"input '{first}' has values beyond the range of float32"):
        runner.predict_proba({first: np.full(batch[first].shape, 1e300)})


def test_a_pickled_payload_in_any_archive_is_not_unpickled(built, tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    for kind in KINDS:
        src = built[kind].pt2
        evil = _rewrite_pt2(src, tmp_path / f"evil-{kind}.pt2", replace={"data/sample_inputs/model.pt": buf.getvalue()})
        with pytest.raises(ModelLoadError, match="refusing to unpickle"):
            load_runner(evil, runtime="torch", role="baseline")
        objects = _rewrite_pt2(src, tmp_path / f"obj-{kind}.pt2", add={f"{src.stem}/data/constants/custom_obj_0": b"\x80\x04N."})
        with pytest.raises(ModelLoadError, match="contains pickled Python objects"):
            load_runner(objects, runtime="torch", role="baseline")
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


# -- batching: padding and buckets -----------------------------------------------------------------


@pytest.mark.parametrize("batching", ["bucket", "pad"])
def test_each_row_batched_equals_the_row_alone(case, batching):
    kind, runner = case
    rows = models.rows(kind, 37, seed=11)
    out = PairedRunner(runner, runner, batching=batching).run(rows, batch_size=8)
    expected = alone(runner, rows)
    np.testing.assert_allclose(out.baseline, expected, atol=1e-5)
    np.testing.assert_allclose(out.candidate, expected, atol=1e-5)
    assert out.batch_sizes.tolist() == [8, 8, 8, 8, 5]
    if kind == "text":   # the batches really were padded: lengths 1..12 in every batch of 8 rows
        assert len({len(r["input_ids"]) for r in rows[:8]}) > 2


def test_buckets_group_similar_lengths_and_return_the_original_order(built):
    runner = load_runner(built["text"].onnx, runtime="onnxruntime", role="baseline", embedding_output="embedding")
    seen: list[int] = []

    class Spy:   # a real runner that records each batch's padded length
        def __getattr__(self, name):
            return getattr(runner, name)

        def run(self, batch):
            seen.append(batch["input_ids"].shape[1])
            return runner.run(batch)

    rows = models.rows("text", 40, seed=2)
    bucketed = PairedRunner(Spy(), runner, batching="bucket").run(rows, batch_size=10)
    padded_to = list(seen)
    seen.clear()
    PairedRunner(Spy(), runner, batching="pad").run(rows, batch_size=10)
    lengths = sorted(len(r["input_ids"]) for r in rows)
    assert padded_to == [lengths[9], lengths[19], lengths[29], lengths[39]]   # each bucket's longest row
    assert sum(seen) > sum(padded_to)                                       # plain padding pads more
    np.testing.assert_allclose(bucketed.baseline, alone(runner, rows), atol=1e-5)
    one_by_one = np.concatenate([runner.run({k: v[None] for k, v in r.items()}).embedding for r in rows])
    np.testing.assert_allclose(bucketed.embeddings["baseline"], one_by_one, atol=1e-5)


def test_rows_are_checked_and_cast_before_they_are_batched(built):
    runner = load_runner(built["text"].pt2, runtime="torch", role="baseline")
    paired = PairedRunner(runner, runner)
    rows = models.rows("text", 5)
    floats = [{k: v.astype(np.float64) for k, v in r.items()} for r in rows]
    np.testing.assert_allclose(paired.run(floats, 2).baseline, paired.run(rows, 2).baseline, atol=1e-9)
    floats[3]["input_ids"] = floats[3]["input_ids"] + 0.25
    with pytest.raises(ValueError, match=r"row 3: input 'input_ids' is int64: values must be whole numbers"):
        paired.run(floats, 2)
    with pytest.raises(ValueError, match=r"row 1 lacks input 'attention_mask'"):
        paired.run([rows[0], {"input_ids": rows[1]["input_ids"]}], 2)
    with pytest.raises(ValueError, match=r"row 0: input 'input_ids' has 2 dimension"):
        paired.run([{"input_ids": np.ones((2, 3), np.int64), "attention_mask": np.ones(3, np.int64)}], 2)


def test_pads_come_from_the_signature_given(built):
    runner = load_runner(built["text"].onnx, runtime="onnxruntime", role="baseline")
    rows = models.rows("text", 12, seed=8)
    padded = runner.signature.with_pads({"input_ids": 7})
    out = PairedRunner(runner, runner, signature=padded, batching="pad").run(rows, 6)
    np.testing.assert_allclose(out.baseline, alone(runner, rows), atol=1e-5)   # masked pads change nothing
    unmasked = runner.signature.with_pads({"attention_mask": 1})   # pads counted as tokens: outputs move
    moved = PairedRunner(runner, runner, signature=unmasked, batching="pad").run(rows, 6)
    assert np.abs(moved.baseline - out.baseline).max() > 1e-3


# -- pairs -----------------------------------------------------------------------------------------


def test_a_pair_must_take_the_same_inputs(built):
    text = load_runner(built["text"].pt2, runtime="torch", role="baseline")
    mlp = load_runner(built["mlp"].onnx, runtime="onnxruntime", role="candidate")
    with pytest.raises(ValueError, match=r"do not fit together \(input 'attention_mask' is taken by the first model only; "
                                         r"input 'features' is taken by the second model only"):
        PairedRunner(text, mlp)
    cnn = load_runner(built["cnn"].onnx, runtime="onnxruntime", role="candidate")
    assert pair_differences(mlp.signature, cnn.signature) == [
        "input 'features' has shape features float32[30] in the first model, features float32[1, 8, 8] in the second"]
    with pytest.raises(ValueError, match="batching must be one of bucket, pad"):
        PairedRunner(text, text, batching="sorted")


def test_a_torch_baseline_and_its_int8_candidate_run_as_a_pair(built):
    for kind in KINDS:
        base = load_runner(built[kind].pt2, runtime="torch", role="baseline")
        cand = load_runner(built[kind].int8, runtime="onnxruntime", role="candidate")
        rows = models.rows(kind, 30, seed=6)
        out = PairedRunner(base, cand).run(rows, 8)
        np.testing.assert_allclose(out.baseline, alone(base, rows), atol=1e-5)
        assert 0 < np.abs(out.candidate - out.baseline).max() < 0.2   # quantized: close, not equal
        assert out.embeddings == {"baseline": None, "candidate": None}


# -- output kinds ----------------------------------------------------------------------------------


def test_a_quantized_softmax_is_accepted_renormalised_and_its_deviation_reported(built):
    cand = load_runner(built["cnn"].int8, runtime="onnxruntime", role="candidate")
    rows = models.rows("cnn", 64, seed=9)
    batch = collate(rows, cand.signature)
    raw = ort.InferenceSession(str(built["cnn"].int8)).run(None, batch)[0]
    raw_dev = np.abs(raw.sum(axis=1) - 1).max()
    assert raw_dev > 1e-3   # the QDQ softmax output is itself quantized: rows do not sum to 1
    out = cand.run(batch)
    assert out.deviation == pytest.approx(raw_dev, rel=1e-5) and out.deviation <= QUANTIZED_SUM_TOLERANCE
    np.testing.assert_allclose(out.proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(out.proba, raw / raw.sum(axis=1, keepdims=True), atol=1e-6)
    base = load_runner(built["cnn"].pt2, runtime="torch", role="baseline")
    paired = PairedRunner(base, cand).run(rows, 16)
    assert paired.deviation["candidate"] == pytest.approx(raw_dev, rel=1e-5)
    assert paired.deviation["baseline"] < 1e-5


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_logits_model_configured_as_probabilities_is_still_refused(built, heads, runtime):
    path = heads["logits"].path(runtime)
    logits = load_runner(path, runtime=runtime, role="candidate", output="logits")
    batch = collate(models.rows("cnn", 8), logits.signature)
    with pytest.raises(ValueError, match=r"does not look like probabilities.*configure output='logits'"):
        load_runner(path, runtime=runtime, role="candidate").predict_proba(batch)
    # same weights (same seed) as the softmax model: the runner's softmax gives its outputs
    softmax_model = load_runner(built["cnn"].path(runtime), runtime=runtime, role="baseline")
    np.testing.assert_allclose(logits.predict_proba(batch), softmax_model.predict_proba(batch), atol=1e-6)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_multilabel_kinds_give_an_independent_probability_per_label(heads, runtime):
    sig_path, logit_path = heads["sigmoid"].path(runtime), heads["logits"].path(runtime)
    rows = models.rows("cnn", 20, seed=12)
    multilabel = load_runner(sig_path, runtime=runtime, role="baseline", output="multilabel")
    batch = collate(rows, multilabel.signature)
    out = multilabel.run(batch)
    assert out.proba.shape == (20, 10) and out.deviation == 0.0
    assert ((out.proba >= 0) & (out.proba <= 1)).all()
    assert np.abs(out.proba.sum(axis=1) - 1).max() > 0.5   # not renormalised into one label
    from_logits = load_runner(logit_path, runtime=runtime, role="candidate", output="multilabel_logits").predict_proba(batch)
    np.testing.assert_allclose(from_logits, out.proba, atol=1e-6)   # same weights: sigmoid applied by the runner
    with pytest.raises(ValueError, match=r"does not look like per-label probabilities.*output='multilabel_logits'"):
        load_runner(logit_path, runtime=runtime, role="candidate", output="multilabel").predict_proba(batch)
    np.testing.assert_allclose(PairedRunner(multilabel, multilabel).run(rows, 7).baseline, out.proba, atol=1e-6)


# -- named outputs and embeddings ------------------------------------------------------------------


def test_embedding_output_is_addressed_per_runtime_and_agrees(built, heads):
    rows = models.rows("text", 10, seed=13)
    by_index = load_runner(built["text"].pt2, runtime="torch", role="baseline", embedding_output="1")
    by_name = load_runner(built["text"].onnx, runtime="onnxruntime", role="candidate", embedding_output="embedding")
    by_key = load_runner(heads["named"].pt2, runtime="torch", role="baseline", embedding_output="embedding",
                         output_name="probabilities")
    batch = collate(rows, by_index.signature)
    embeddings = [r.run(batch).embedding for r in (by_index, by_name, by_key)]
    for emb in embeddings:
        assert emb.shape == (10, 16) and emb.dtype == np.float64
        np.testing.assert_allclose(emb, embeddings[0], atol=1e-5)
    assert by_index.embedding_dim == 16
    out = PairedRunner(by_index, by_name).run(rows, 4)
    np.testing.assert_allclose(out.embeddings["baseline"], out.embeddings["candidate"], atol=1e-5)
    assert out.embeddings["baseline"].shape == (10, 16)
    assert PairedRunner(by_index, by_name).run(rows[:0], 4).embeddings["candidate"].shape == (0, 16)


def test_unknown_output_names_are_refused_listing_the_outputs(built, heads):
    with pytest.raises(ModelLoadError, match=r"embedding_output 'pooled' is not an output of the model \(outputs: 'probabilities', 'embedding'"):
        load_runner(built["text"].onnx, runtime="onnxruntime", role="c", embedding_output="pooled")
    with pytest.raises(ModelLoadError, match=r"output_name 'scores' is not an output of the model \(outputs: 'probabilities', 'embedding'"):
        load_runner(heads["named"].pt2, runtime="torch", role="b", output_name="scores")
    with pytest.raises(ModelLoadError, match=r"output_name '5' is not an output"):
        load_runner(built["text"].pt2, runtime="torch", role="b", output_name="5")


def test_the_probe_batch_fits_every_signature():
    sig = Signature((TensorSpec("input_ids", "int64", (None,)), TensorSpec("attention_mask", "bool", (None,)),
                     TensorSpec("pixel_values", "float16", (3, None, 4)), TensorSpec("token_type_ids", "int32", (None,))))
    probe = probe_batch(sig)
    assert {k: (v.dtype.name, v.shape) for k, v in probe.items()} == {
        "input_ids": ("int64", (2, 8)), "attention_mask": ("bool", (2, 8)),
        "pixel_values": ("float16", (2, 3, 8, 4)), "token_type_ids": ("int32", (2, 8))}
    assert probe["attention_mask"].all() and not probe["input_ids"].any() and not probe["token_type_ids"].any()

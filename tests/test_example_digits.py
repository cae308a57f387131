"""The committed digits example pair (CNN on sklearn's 8x8 digits, NCHW): reproducible from its
script, described by its meta.json, and its traffic does what the demo and the suites rely on
(the int8 candidate agrees with the baseline, the damaged one does not)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sentinel.examples import digits
from sentinel.runners import sha256_file

ROOT = Path(__file__).resolve().parents[1]
PAIR = digits.example_dir()
META = json.loads((PAIR / "meta.json").read_text())


def onnx_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def models():
    base = torch.export.load(str(PAIR / "baseline.pt2"))
    return base, onnx_session(PAIR / "candidate.int8.onnx"), onnx_session(PAIR / "damaged.int8.onnx")


def predict(models, x: np.ndarray) -> tuple[np.ndarray, ...]:
    base, cand, dmg = models
    with torch.inference_mode():
        p_base, emb = (t.numpy() for t in base.module()(torch.from_numpy(x)))
    return p_base, emb, cand.run(None, {"image": x})[0], dmg.run(None, {"image": x})[0]


def flip_rate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) != b.argmax(1)))


def test_the_models_take_nchw_images_and_name_their_outputs(models):
    base, cand, _ = models
    assert base.graph_signature.user_inputs == ("image",)
    assert base.graph_signature.user_outputs == ("probabilities", "embedding")
    assert [(i.name, i.type, i.shape) for i in cand.get_inputs()] == [("image", "tensor(float)", ["batch", 1, 8, 8])]
    assert [o.name for o in cand.get_outputs()] == ["probabilities", "embedding"]


#: how far the int8 models' held-out accuracy may move from meta.json's on another kind of x86 CPU:
#: onnxruntime picks its int8 kernels by the vector units it finds (u8s8 products summed in 16 bits
#: on AVX2 saturate where VNNI's 32-bit sums do not), so a few borderline rows change. On an
#: AVX2-only AMD EPYC: candidate 97.8% (440 of 450, stated 98.0%), damaged 80.0% (stated 82.2%).
#: The same bound as test_script_reproduces_the_committed_pair's for a pair rebuilt on another CPU.
INT8_ACCURACY_ACROSS_CPUS = 0.03


def test_meta_matches_the_files_and_the_stated_accuracy(models):
    for name, digest in META["sha256"].items():
        assert sha256_file(PAIR / name) == digest, name
    ref = digits.load_reference()
    x, y = ref.x[ref.test], ref.y[ref.test]
    p_base, emb, p_cand, p_dmg = predict(models, x)
    assert emb.shape == (len(x), META["embedding_dim"])
    # the float baseline as stated on any CPU; the int8 models within their kernels' spread
    assert float(np.mean(p_base.argmax(1) == y)) == pytest.approx(META["accuracy"]["baseline"]["test"], abs=1e-9)
    for role, p in (("candidate", p_cand), ("damaged", p_dmg)):
        got = float(np.mean(p.argmax(1) == y))
        assert got == pytest.approx(META["accuracy"][role]["test"], abs=INT8_ACCURACY_ACROSS_CPUS), role
    assert float(np.mean(p_cand.argmax(1) == y)) >= 0.95
    assert META["accuracy"]["candidate"]["test"] >= 0.95
    assert sum(p.stat().st_size for p in PAIR.iterdir()) < 500_000


def test_quantized_softmax_rows_sum_to_about_one(models):
    """The candidate's softmax is itself 8-bit: rows are close to, not exactly, 1 (issue 11 item 5)."""
    x, _ = digits.ordinary_traffic(np.random.default_rng(3), 500)
    _, _, p_cand, _ = predict(models, x)
    deviation = np.abs(p_cand.sum(1) - 1)
    assert deviation.max() < 0.03 and deviation.max() > 1e-4


def test_good_candidate_agrees_and_damaged_one_does_not(models):
    for seed in range(3):
        x, _ = digits.ordinary_traffic(np.random.default_rng(seed), 2000)
        p_base, _, p_cand, p_dmg = predict(models, x)
        assert flip_rate(p_base, p_cand) <= 0.01, seed
        assert flip_rate(p_base, p_dmg) >= 0.10, seed


def test_traffic_messages_are_named_nchw_tensors_and_deterministic():
    a = digits.traffic_messages(np.random.default_rng(4), 5, start=10)
    assert a == digits.traffic_messages(np.random.default_rng(4), 5, start=10)
    assert [m["id"] for m in a] == [f"img-{i}" for i in range(10, 15)]
    img = np.array(a[0]["inputs"]["image"])
    assert img.shape == (1, 8, 8) and 0.0 <= img.min() and img.max() <= 1.0
    assert {m["label"] for m in a} <= set(META["classes"])
    x, _ = digits.drifted_traffic(np.random.default_rng(4), 200)
    assert x.mean() < digits.ordinary_traffic(np.random.default_rng(4), 200)[0].mean()   # the dimmer camera


def build_digits(out: Path) -> dict:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_digits_example.py"), "--out", str(out),
                    "--seed", str(META["seed"])], check=True, cwd=ROOT, capture_output=True, timeout=280)
    return json.loads((out / "meta.json").read_text())


def test_script_reproduces_the_committed_pair(tmp_path, models):
    """On the kind of CPU the pair was made on, the script gives it back byte for byte. Training
    on another kind (other vector units, so other float kernels) can end a few last bits apart:
    then the script must still be deterministic (two runs, the same bytes) and the rebuilt pair
    must behave as the committed one does."""
    meta = build_digits(tmp_path / "a")
    if meta["sha256"] == META["sha256"]:
        assert meta["accuracy"] == META["accuracy"] and meta["flip_rate_vs_baseline"] == META["flip_rate_vs_baseline"]
        x = digits.load_reference().x
        again = torch.export.load(str(tmp_path / "a" / "baseline.pt2")).module()
        with torch.inference_mode():
            np.testing.assert_allclose(again(torch.from_numpy(x))[0].numpy(), predict(models, x)[0], atol=1e-6)
        return
    assert meta["sha256"]["reference.npz"] == META["sha256"]["reference.npz"]   # data: byte for byte anywhere
    assert build_digits(tmp_path / "b")["sha256"] == meta["sha256"], "the script is not deterministic"
    for role in ("baseline", "candidate", "damaged"):
        assert abs(meta["accuracy"][role]["test"] - META["accuracy"][role]["test"]) <= 0.03, role
    for role, splits in META["flip_rate_vs_baseline"].items():
        for split, rate in splits.items():
            assert abs(meta["flip_rate_vs_baseline"][role][split] - rate) <= max(0.01, rate / 2), (role, split)

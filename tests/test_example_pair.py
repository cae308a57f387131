"""The committed example pair: reproducible from its script, and its traffic does what the
demo relies on (candidate agrees on ordinary traffic, disagrees on drifted traffic, the
damaged model disagrees everywhere)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sentinel.examples import traffic
from sentinel.runners import load_runner, sha256_file

ROOT = Path(__file__).resolve().parents[1]
PAIR = traffic.load_example_pair_dir()
META = json.loads((PAIR / "meta.json").read_text())
SEEDS = range(5)
ROWS = 2000


def flip_rate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(axis=1) != b.argmax(axis=1)))


@pytest.fixture(scope="module")
def runners():
    base = load_runner(PAIR / "baseline.pt2", runtime="torch", role="baseline", threads=1)
    cand = load_runner(PAIR / "candidate.int8.onnx", runtime="onnxruntime", role="candidate", threads=1)
    dmg = load_runner(PAIR / "damaged.int8.onnx", runtime="onnxruntime", role="candidate", threads=1)
    return base, cand, dmg


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pair")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_example_pair.py"), "--out", str(out), "--seed", str(META["seed"])],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    return out


def test_script_reproduces_committed_pair(rebuilt, runners):
    base, cand, _ = runners
    x = traffic.load_reference().x
    for name, committed in (("baseline.pt2", base), ("candidate.int8.onnx", cand)):
        runtime = "torch" if name.endswith(".pt2") else "onnxruntime"
        again = load_runner(rebuilt / name, runtime=runtime, role="baseline")
        np.testing.assert_allclose(again.predict_proba(x), committed.predict_proba(x), atol=1e-6)
    meta = json.loads((rebuilt / "meta.json").read_text())
    assert meta["accuracy"] == META["accuracy"]  # counts of correct rows: exact
    with np.load(rebuilt / "reference.npz") as z:
        np.testing.assert_array_equal(z["x"], x)
        np.testing.assert_allclose(z["anchor_t"], traffic.load_reference().anchor_t, atol=1e-6)


def test_meta_describes_the_artifacts():
    assert META["classes"] == ["malignant", "benign"]
    assert META["critical_classes"] == ["malignant"]
    assert len(META["feature_names"]) == 30 and META["feature_names"][0] == "mean radius"
    assert META["accuracy"]["baseline"]["test"] >= 0.95
    assert META["accuracy"]["candidate"]["test"] >= 0.95
    for name, digest in META["sha256"].items():
        assert sha256_file(PAIR / name) == digest, name
    assert sum(p.stat().st_size for p in PAIR.iterdir()) < 1_000_000


def test_ordinary_traffic_shape_and_determinism():
    x, y = traffic.ordinary_traffic(np.random.default_rng(1), 50)
    assert x.shape == (50, 30) and x.dtype == np.float32 and y.shape == (50,)
    assert set(np.unique(y)) <= {0, 1}
    x2, y2 = traffic.ordinary_traffic(np.random.default_rng(1), 50)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    xd, yd = traffic.drifted_traffic(np.random.default_rng(1), 50)
    assert xd.shape == (50, 30) and xd.dtype == np.float32 and set(np.unique(yd)) <= {0, 1}


@pytest.mark.parametrize("seed", SEEDS)
def test_flip_rates(seed, runners):
    base, cand, dmg = runners
    rng = np.random.default_rng(seed)
    x_ord, _ = traffic.ordinary_traffic(rng, ROWS)
    x_drift, _ = traffic.drifted_traffic(rng, ROWS)
    p_ord = base.predict_proba(x_ord)
    assert flip_rate(p_ord, cand.predict_proba(x_ord)) < 0.02
    assert flip_rate(base.predict_proba(x_drift), cand.predict_proba(x_drift)) > 0.10
    assert flip_rate(p_ord, dmg.predict_proba(x_ord)) > 0.20


def test_ordinary_traffic_is_classified_well(runners):
    base, _, _ = runners
    x, y = traffic.ordinary_traffic(np.random.default_rng(0), ROWS)
    assert np.mean(base.predict_proba(x).argmax(axis=1) == y) > 0.95

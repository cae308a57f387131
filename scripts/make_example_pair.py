#!/usr/bin/env python
"""Build Sentinel's example model pair ("triage") deterministically from a seed.

    python scripts/make_example_pair.py [--out sentinel/examples/triage] [--seed 7]

Writes into ``--out``:

* ``baseline.pt2``        fp32 torch MLP (torch.export archive, dynamic batch)
* ``candidate.int8.onnx`` the same network quantized to int8 (static QDQ, per-tensor)
* ``damaged.int8.onnx``   a deliberately broken int8 model (seeded weight noise) that
                          disagrees with the baseline on a large share of ordinary traffic
* ``reference.npz``       the data set (float32 features, labels) and the boundary anchors
                          used by :func:`sentinel.examples.traffic.drifted_traffic`
* ``meta.json``           classes, feature names, accuracies, flip rates, hashes, versions

Data: scikit-learn's bundled breast-cancer set (569 rows, 30 features; shipped with the
package, nothing is downloaded). Sentinel's class order is ``["malignant", "benign"]``,
which is sklearn's target order (0 = malignant). Needs torch, onnx, onnxruntime and
scikit-learn; the generated traffic later needs only numpy.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

CLASSES = ["malignant", "benign"]
CRITICAL_CLASSES = ["malignant"]
HIDDEN = 32
EPOCHS = 400  # full-batch steps; ~1 s on one core
LEARNING_RATE = 1e-2
N_ANCHORS = 512
# Seeded Gaussian noise added to every weight matrix of the damaged model, relative to the
# matrix's own standard deviation. Large enough to break the model, small enough that it
# still looks like a classifier (not a constant).
DAMAGE_NOISE = 5.0
DAMAGE_MIN_FLIP = 0.3
# Width of the drifted-traffic band around the baseline's decision boundary, as a multiple
# of the median distance (in interpolation steps) between the baseline's and the int8
# candidate's boundaries along each anchor segment.
DRIFT_WIDTH_FACTOR = 1.0
TRAFFIC_SEED = 20240607
TRAFFIC_ROWS = 20_000


def _torch():
    import torch

    return torch


def build_model(mean: np.ndarray, std: np.ndarray):
    """30 -> 32 -> 32 -> 2 MLP with standardisation in front and softmax at the end.

    Baking both in makes the exported artifacts self-contained: producers send raw feature
    values and the models return probabilities, exactly what Sentinel's runners expect.
    """
    torch = _torch()
    nn = torch.nn

    class TriageMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
            self.body = nn.Sequential(
                nn.Linear(mean.shape[0], HIDDEN), nn.ReLU(),
                nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                nn.Linear(HIDDEN, len(CLASSES)),
            )

        def logits(self, x):
            return self.body((x - self.mean) / self.std)

        def forward(self, x):
            return torch.softmax(self.logits(x), dim=-1)

    return TriageMLP()


def train(x_train: np.ndarray, y_train: np.ndarray, seed: int):
    torch = _torch()
    torch.manual_seed(seed)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0) + 1e-6
    model = build_model(mean, std)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    # Full batch: 426 rows fit trivially, and no data-loader shuffling to make reproducible.
    for _ in range(EPOCHS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.logits(xt), yt)
        loss.backward()
        opt.step()
    return model.eval()


def predict(model, x: np.ndarray) -> np.ndarray:
    torch = _torch()
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).double().numpy()


def export_baseline(model, example: np.ndarray, path: Path) -> None:
    torch = _torch()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    ep = torch.export.export(model, (torch.from_numpy(example),), dynamic_shapes=({0: batch},))
    # Stack traces would embed this machine's absolute paths in a committed artifact.
    for node in ep.graph.nodes:
        node.meta.pop("stack_trace", None)
    # Not byte-reproducible even so: torch writes a random serialization id into the zip.
    torch.export.save(ep, str(path))


def export_fp32(model, example: np.ndarray, path: Path) -> None:
    """The float ONNX graph the int8 models are quantized from (``scripts/make_float_reference.py``
    writes the baseline's as ``baseline.fp32.onnx``, the float twin ``sentinel diagnose`` compares
    the candidate with: same exporter, same tensor names)."""
    torch = _torch()
    with warnings.catch_warnings():
        # The legacy (TorchScript-based) exporter is chosen on purpose: it needs only `onnx`,
        # writes a single file and gives a plain Gemm graph that quantizes cleanly.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.from_numpy(example),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["features"],
            output_names=["probabilities"],
            dynamic_axes={"features": {0: "batch"}, "probabilities": {0: "batch"}},
        )


def export_int8(model, x_calib: np.ndarray, path: Path, work: Path, tag: str) -> None:
    """fp32 ONNX -> shape-inferred ONNX -> static int8 QDQ (per-tensor weights).

    Static rather than dynamic quantization: dynamic quantization picks activation ranges
    per batch, which would make a row's prediction depend on the other rows in its batch and
    break the paired, row-by-row comparison. Only the Gemm layers are quantized; the
    standardisation (Sub/Div) and the final Softmax stay fp32, so the inputs keep their
    precision and the outputs remain proper probabilities.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = work / f"{tag}.fp32.onnx"
    pre = work / f"{tag}.pre.onnx"
    export_fp32(model, x_calib[:2], fp32)
    quant_pre_process(str(fp32), str(pre))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{"features": x_calib[i : i + 64]} for i in range(0, len(x_calib), 64)])

        def get_next(self):
            return next(self._batches, None)

    quantize_static(
        str(pre),
        str(path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Gemm", "MatMul"],
        per_channel=False,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def damage(model, seed: int, x: np.ndarray):
    """Copy of ``model`` with seeded Gaussian noise added to every weight matrix.

    Noise draws are repeated (deterministically, from one seeded generator) until the
    damaged model disagrees with ``model`` on at least ``DAMAGE_MIN_FLIP`` of the rows of
    ``x``: the data set is so separable that a single draw is sometimes shrugged off, and
    tests rely on the damage being unmistakable whatever the seed.
    """
    torch = _torch()
    import copy

    reference = predict(model, x)
    gen = torch.Generator().manual_seed(seed + 1)
    for draw in range(1, 51):
        broken = copy.deepcopy(model)
        with torch.no_grad():
            for layer in broken.body:
                if isinstance(layer, torch.nn.Linear):
                    noise = torch.randn(layer.weight.shape, generator=gen) * layer.weight.std() * DAMAGE_NOISE
                    layer.weight.add_(noise)
        if flip_rate(reference, predict(broken, x)) >= DAMAGE_MIN_FLIP:
            return broken, draw
    raise RuntimeError(f"no noise draw damaged the model enough (seed {seed})")


def boundary_anchors(proba_fn, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, n: int):
    """Pairs (malignant row, benign row, t) where the model's decision flips at ``t`` along
    ``x_m + t * (x_b - x_m)``; only segments that cross the boundary exactly once, from a
    malignant call at ``t=0`` to a benign one at ``t=1``, are kept."""
    mal, ben = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    grid = np.linspace(0.0, 1.0, 129)
    out_m, out_b, out_lo = [], [], []
    while sum(map(len, out_m)) < n:
        # Candidate pairs in bulk: one model call for all their grid points.
        i, j = rng.choice(mal, size=n), rng.choice(ben, size=n)
        seg = x[i][:, None, :] + grid[None, :, None] * (x[j] - x[i])[:, None, :]
        margin = proba_fn(seg.reshape(-1, x.shape[1]).astype(np.float32))[:, 0].reshape(n, -1) - 0.5
        changes = np.diff(np.sign(margin), axis=1) != 0
        ok = (margin[:, 0] > 0) & (margin[:, -1] < 0) & (changes.sum(axis=1) == 1)
        out_m.append(i[ok])
        out_b.append(j[ok])
        out_lo.append(grid[np.argmax(changes[ok], axis=1)])
    m, b, lo = (np.concatenate(a)[:n] for a in (out_m, out_b, out_lo))
    return m, b, bisect(proba_fn, x[m], x[b], lo, lo + grid[1])


def bisect(proba_fn, xm: np.ndarray, xb: np.ndarray, lo: np.ndarray, hi: np.ndarray, steps: int = 30) -> np.ndarray:
    """Vectorised bisection for the ``t`` in ``[lo, hi]`` where ``P(malignant)`` crosses 0.5
    along each segment ``xm + t (xb - xm)`` (malignant side at ``lo``)."""
    lo, hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        malignant = proba_fn((xm + mid[:, None] * (xb - xm)).astype(np.float32))[:, 0] > 0.5
        lo = np.where(malignant, mid, lo)
        hi = np.where(malignant, hi, mid)
    return 0.5 * (lo + hi)


def flip_rate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(axis=1) != b.argmax(axis=1)))


def accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(p.argmax(axis=1) == y))


def make_example_pair(out: Path, seed: int = 7) -> dict:
    torch = _torch()
    import onnxruntime
    import sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from sentinel.examples import traffic
    from sentinel.runners import load_runner, sha256_file

    # One thread + deterministic kernels: the same seed gives the same weights, bit for bit.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)

    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.int64)  # 0 = malignant, 1 = benign == CLASSES order
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=seed)

    model = train(x[idx_train], y[idx_train], seed)
    broken, damage_draws = damage(model, seed, x)

    baseline_path = out / "baseline.pt2"
    candidate_path = out / "candidate.int8.onnx"
    damaged_path = out / "damaged.int8.onnx"
    export_baseline(model, x[idx_train[:4]], baseline_path)
    with tempfile.TemporaryDirectory() as work:
        export_int8(model, x[idx_train], candidate_path, Path(work), "candidate")
        export_int8(broken, x[idx_train], damaged_path, Path(work), "damaged")

    # Measure through Sentinel's own runners: that is what the daemon will execute.
    base = load_runner(baseline_path, runtime="torch", role="baseline", threads=1)
    cand = load_runner(candidate_path, runtime="onnxruntime", role="candidate", threads=1)
    dmg = load_runner(damaged_path, runtime="onnxruntime", role="candidate", threads=1)

    rng = np.random.default_rng(seed)
    anchor_m, anchor_b, anchor_t = boundary_anchors(base.predict_proba, x, y, rng, N_ANCHORS)
    # How far the candidate's boundary sits from the baseline's along the same segments sets
    # the width of the drifted band: the band straddles both boundaries, so a sizeable share
    # of drifted rows lands between them, where the two models disagree.
    cand_t = bisect(cand.predict_proba, x[anchor_m], x[anchor_b], np.zeros(len(anchor_t)), np.ones(len(anchor_t)))
    offset = cand_t - anchor_t
    width = float(DRIFT_WIDTH_FACTOR * np.median(np.abs(offset)))

    reference = out / "reference.npz"
    np.savez_compressed(
        reference,
        x=x,
        y=y,
        anchor_malignant=anchor_m.astype(np.int32),
        anchor_benign=anchor_b.astype(np.int32),
        anchor_t=anchor_t.astype(np.float64),
        drift_width=np.float64(width),
    )

    tr_rng = np.random.default_rng(TRAFFIC_SEED)
    ref_data = traffic.load_reference(out)
    x_ord, _ = traffic.ordinary_traffic(tr_rng, TRAFFIC_ROWS, reference=ref_data)
    x_drift, _ = traffic.drifted_traffic(tr_rng, TRAFFIC_ROWS, reference=ref_data)
    p_all, c_all, d_all = base.predict_proba(x), cand.predict_proba(x), dmg.predict_proba(x)
    p_ord, c_ord, d_ord = base.predict_proba(x_ord), cand.predict_proba(x_ord), dmg.predict_proba(x_ord)
    p_drift, c_drift = base.predict_proba(x_drift), cand.predict_proba(x_drift)

    meta = {
        "name": "triage",
        "description": "Breast-cancer triage MLP (30->32->32->2, ReLU); standardisation and softmax are inside "
        "the models, so raw feature values go in and class probabilities come out.",
        "feature_names": [str(f) for f in data.feature_names],
        "classes": CLASSES,
        "critical_classes": CRITICAL_CLASSES,
        "seed": seed,
        "split": {"train_rows": int(len(idx_train)), "test_rows": int(len(idx_test)), "stratified": True},
        "artifacts": {
            "baseline": {"file": baseline_path.name, "runtime": "torch", "output": "probabilities"},
            "candidate": {"file": candidate_path.name, "runtime": "onnxruntime", "output": "probabilities",
                          "quantization": "onnxruntime quantize_static, QDQ, int8 weights per-tensor, uint8 activations, "
                                          "MinMax calibration over the training rows, Gemm layers only"},
            "damaged": {"file": damaged_path.name, "runtime": "onnxruntime", "output": "probabilities",
                        "damage": f"seeded N(0, {DAMAGE_NOISE} * std(W)) noise added to every Linear weight before quantization, "
                                  f"redrawn until >= {DAMAGE_MIN_FLIP:.0%} of the data set flips ({damage_draws} draw(s))"},
            "reference": {"file": reference.name},
        },
        "accuracy": {
            "baseline": {"train": accuracy(p_all[idx_train], y[idx_train]), "test": accuracy(p_all[idx_test], y[idx_test])},
            "candidate": {"train": accuracy(c_all[idx_train], y[idx_train]), "test": accuracy(c_all[idx_test], y[idx_test])},
            "damaged": {"train": accuracy(d_all[idx_train], y[idx_train]), "test": accuracy(d_all[idx_test], y[idx_test])},
        },
        "flip_rate_vs_baseline": {
            "traffic_seed": TRAFFIC_SEED,
            "traffic_rows": TRAFFIC_ROWS,
            "candidate": {"dataset": flip_rate(p_all, c_all), "ordinary": flip_rate(p_ord, c_ord), "drifted": flip_rate(p_drift, c_drift)},
            "damaged": {"dataset": flip_rate(p_all, d_all), "ordinary": flip_rate(p_ord, d_ord)},
        },
        "drift_band": {
            "anchors": int(len(anchor_t)),
            "width": width,
            "median_abs_boundary_offset": float(np.median(np.abs(offset))),
        },
        "sha256": {p.name: sha256_file(p) for p in (baseline_path, candidate_path, damaged_path, reference)},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
        },
        "produced_by": f"python scripts/make_example_pair.py --seed {seed}",
    }
    for r in (base, cand, dmg):
        r.close()
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sentinel" / "examples" / "triage")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    meta = make_example_pair(args.out, args.seed)
    print(json.dumps({"out": str(args.out), "accuracy": meta["accuracy"], "flip_rate_vs_baseline": meta["flip_rate_vs_baseline"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

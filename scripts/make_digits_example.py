#!/usr/bin/env python
"""Build the ``digits`` example pair: a small CNN on scikit-learn's bundled 8x8 digits.

    python scripts/make_digits_example.py [--out sentinel/examples/digits] [--seed 5]

Data: ``sklearn.datasets.load_digits`` (1,797 grey 8x8 images, shipped with scikit-learn,
nothing downloaded), scaled to [0, 1] and laid out NCHW: input ``image`` float32 (n, 1, 8, 8).
No critical class: every misread digit costs the same here, so the pair is watched by overall
decision flips, calibration, image drift and robustness.

Writes into ``--out`` (small files, committed: the tests use them):

* ``baseline.pt2``        fp32 CNN (conv 8 -> conv 16 -> pool -> 64 -> 10), torch.export, dynamic
                          batch; outputs ``(probabilities (n, 10), embedding (n, 64))``
* ``candidate.int8.onnx`` static int8 QDQ (onnxruntime ``quantize_static``, MinMax calibration on
                          the training images, every op quantized: the softmax output is itself
                          8-bit, so its rows sum to about, not exactly, 1)
* ``damaged.int8.onnx``   75% of the first convolution's weights pruned by magnitude, then
                          quantized like the candidate (an over-eager pruning step: it still
                          reads most digits, and misreads about one in six)
* ``reference.npz``       images (float32 (n, 1, 8, 8)), labels, the train/test split
* ``meta.json``           accuracies, flip rates vs the baseline, row-sum deviation, sha256s
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from sentinel.examples.building import accuracy, export_onnx_for_quantization, export_pt2, flip_rate, prune_by_magnitude  # noqa: E402

CLASSES = [str(d) for d in range(10)]
STEPS = 400          # full-batch Adam steps; a few seconds on one core
LEARNING_RATE = 5e-3
DAMAGE_PRUNE = 0.75
TRAFFIC_SEED = 20261202
TRAFFIC_ROWS = 5000
OUTPUTS = ("probabilities", "embedding")


def _torch():
    import torch
    return torch


def build_model():
    torch = _torch()
    nn = torch.nn

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU())
            self.out = nn.Linear(64, len(CLASSES))

        def forward(self, image):
            emb = self.hidden(self.features(image))
            return self.out(emb).softmax(-1), emb

    return DigitsCNN()


def train(x: np.ndarray, y: np.ndarray, seed: int):
    torch = _torch()
    torch.manual_seed(seed)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(STEPS):
        opt.zero_grad()
        proba, _ = model(xt)
        torch.nn.functional.nll_loss(torch.log(proba.clamp_min(1e-12)), yt).backward()
        opt.step()
    return model.eval()


def damage(model):
    """75% of the first convolution's weights (the smallest) set to zero."""
    broken = copy.deepcopy(model)
    prune_by_magnitude(broken.features[0], DAMAGE_PRUNE)
    return broken


def export_baseline(model, example: np.ndarray, path: Path) -> None:
    torch = _torch()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    export_pt2(model, (torch.from_numpy(example),), ({0: batch},), path, OUTPUTS)


def export_int8(model, calib: np.ndarray, path: Path, work: Path) -> None:
    """fp32 ONNX -> static int8 QDQ.

    Static, so a row's outputs do not depend on the rows batched with it; per-tensor uint8
    activations and int8 weights, MinMax ranges from ``calib``."""
    torch = _torch()
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    axes = {"image": {0: "batch"}, "probabilities": {0: "batch"}, "embedding": {0: "batch"}}
    pre = export_onnx_for_quantization(model, (torch.from_numpy(calib[:2]),), work, path.stem, ["image"], OUTPUTS, axes)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"image": calib[i:i + 128]} for i in range(0, len(calib), 128)])

        def get_next(self):
            return next(self._it, None)

    quantize_static(str(pre), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)


def predict_ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["probabilities"], {"image": x[i:i + 256]})[0] for i in range(0, len(x), 256)])


def predict_pt2(path: Path, x: np.ndarray) -> np.ndarray:
    torch = _torch()
    mod = torch.export.load(str(path)).module()
    with torch.inference_mode():
        return mod(torch.from_numpy(x))[0].numpy()


def make_digits_example(out: Path, seed: int = 5) -> dict:
    torch = _torch()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from sentinel.examples import digits as traffic

    t0 = time.monotonic()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]   # NCHW, [0, 1]
    y = data.target.astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=seed)
    model = train(x[idx_train], y[idx_train], seed)

    paths = {"baseline": out / "baseline.pt2", "candidate": out / "candidate.int8.onnx", "damaged": out / "damaged.int8.onnx"}
    export_baseline(model, x[idx_train[:4]], paths["baseline"])
    with tempfile.TemporaryDirectory() as work:
        export_int8(model, x[idx_train], paths["candidate"], Path(work))
        export_int8(damage(model), x[idx_train], paths["damaged"], Path(work))
    np.savez_compressed(out / "reference.npz", x=x, y=y, train=idx_train.astype(np.int32), test=idx_test.astype(np.int32))

    ref = traffic.load_reference(out)
    x_ord, _ = traffic.ordinary_traffic(np.random.default_rng(TRAFFIC_SEED), TRAFFIC_ROWS, reference=ref)
    x_drift, _ = traffic.drifted_traffic(np.random.default_rng(TRAFFIC_SEED), TRAFFIC_ROWS, reference=ref)
    sets = {"test": x[idx_test], "ordinary": x_ord, "drifted": x_drift}
    pred = {role: {k: (predict_pt2 if role == "baseline" else predict_ort)(p, v) for k, v in sets.items()}
            for role, p in paths.items()}
    meta = _meta(out, seed, paths, pred, y[idx_test], len(idx_train), time.monotonic() - t0)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _meta(out: Path, seed: int, paths: dict, pred: dict, y_test: np.ndarray, n_train: int, seconds: float) -> dict:
    import onnxruntime
    import sklearn

    from sentinel.runners import sha256_file
    torch = _torch()
    base = pred["baseline"]
    return {
        "name": "digits",
        "description": "8x8 digits CNN (conv 1->8, conv 8->16, maxpool, 256->64->10); input image float32 "
                       "(n, 1, 8, 8) in [0, 1], outputs probabilities and the 64-wide embedding.",
        "classes": CLASSES, "critical_classes": [], "seed": seed,
        "split": {"train_rows": n_train, "test_rows": int(len(y_test)), "stratified": True, "traffic_rows": TRAFFIC_ROWS,
                  "traffic_seed": TRAFFIC_SEED},
        "inputs": {"image": {"dtype": "float32", "shape": ["batch", 1, 8, 8]}},
        "outputs": ["probabilities", "embedding"], "embedding_dim": 64, "image_layout": "NCHW",
        "artifacts": {
            "baseline": {"file": paths["baseline"].name, "runtime": "torch", "output": "probabilities"},
            "candidate": {"file": paths["candidate"].name, "runtime": "onnxruntime", "output": "probabilities",
                          "quantization": "onnxruntime quantize_static, QDQ, every op, int8 weights per tensor, uint8 "
                                          "activations, MinMax calibration on the training images"},
            "damaged": {"file": paths["damaged"].name, "runtime": "onnxruntime", "output": "probabilities",
                        "damage": f"{DAMAGE_PRUNE:.0%} of the first conv's weights pruned by magnitude, then "
                                  "quantized like the candidate"},
        },
        "accuracy": {role: {"test": accuracy(p["test"], y_test)} for role, p in pred.items()},
        "flip_rate_vs_baseline": {role: {k: flip_rate(base[k], pred[role][k]) for k in base}
                                  for role in ("candidate", "damaged")},
        "max_row_sum_deviation": {role: float(max(np.abs(v.sum(1) - 1).max() for v in p.values()))
                                  for role, p in pred.items()},
        "sha256": {p.name: sha256_file(p) for p in [*paths.values(), out / "reference.npz"]},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "onnxruntime": onnxruntime.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__},
        "build_seconds": round(seconds, 1),
        "produced_by": f"python scripts/make_digits_example.py --seed {seed}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sentinel" / "examples" / "digits")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    meta = make_digits_example(args.out, args.seed)
    print(json.dumps({k: meta[k] for k in ("accuracy", "flip_rate_vs_baseline", "max_row_sum_deviation", "build_seconds")},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

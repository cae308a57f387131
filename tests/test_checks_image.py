"""Checks on an image pair (scikit-learn's bundled 8x8 digits as NCHW/NHWC float tensors, a
small CNN trained here): data_drift on per-channel mean/std, brightness and contrast, never per
pixel; robustness by noise, brightness and a small shift, in either layout."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from sentinel.checks.base import ReferenceData, RunData, build_check
from sentinel.checks.descriptors import image_descriptors
from sentinel.checks.drift import drift_columns
from sentinel.checks.perturb import shift_image
from sentinel.config import CheckSpec
from sentinel.tensors import Signature, TensorSpec, rows_of

CLASSES = [str(i) for i in range(10)]
DIGITS = load_digits()
X = (DIGITS.images / 16.0).astype(np.float32)[:, None]      # (1797, 1, 8, 8)
Y = DIGITS.target


class Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.head = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x, brittle=0.0):
        h = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        z = self.head(h.flatten(1))
        if brittle:     # a candidate that hangs on exact pixel values
            z = z + brittle * torch.sin(x.flatten(1).sum(1, keepdim=True) * 97.0 + torch.arange(10) * 1.3)
        return torch.softmax(z, dim=1)


def trained() -> Cnn:
    net = Cnn()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = torch.from_numpy(X[:1200]), torch.from_numpy(Y[:1200])
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.nll_loss(torch.log(net(x) + 1e-9), y).backward()
        opt.step()
    return net


NET = trained()


def predictor(brittle, layout="NCHW"):
    def predict(x):
        x = np.asarray(x)
        t = torch.from_numpy(np.ascontiguousarray(x if layout == "NCHW" else x.transpose(0, 3, 1, 2)))
        with torch.no_grad():
            return NET(t).double().numpy(), NET(t, brittle).double().numpy()
    return predict


def image_data(x, ref_x=None, *, brittle=0.0, layout="NCHW"):
    x = x if layout == "NCHW" else x.transpose(0, 2, 3, 1)
    pb, pc = predictor(brittle, layout)(x)
    ref = None
    if ref_x is not None:
        ref_x = ref_x if layout == "NCHW" else ref_x.transpose(0, 2, 3, 1)
        rb, rc = predictor(brittle, layout)(ref_x)
        ref = ReferenceData({"kind": "test"}, ref_x, rb, rc, [{}] * len(ref_x), None)
    return RunData("digits", CLASSES, ["0"], pb, pc, None, [{}] * len(x), {}, inputs=x, seed=1, reference=ref,
                   predict=predictor(brittle, layout), signature=Signature.single(x.shape[1:]), modality="image",
                   image_layout=layout)


def check(type_, **spec):
    return build_check(CheckSpec(type=type_, **spec))


def test_the_small_cnn_really_reads_digits():
    pb, _ = predictor(0.0)(X[1200:])
    assert (pb.argmax(1) == Y[1200:]).mean() > 0.85


def test_image_descriptors_are_per_channel_and_the_same_in_either_layout():
    rgb = np.random.default_rng(0).random((20, 3, 6, 5))
    a = image_descriptors(rgb, "NCHW")
    b = image_descriptors(rgb.transpose(0, 2, 3, 1), "NHWC")
    assert list(a) == ["ch0_mean", "ch0_std", "ch1_mean", "ch1_std", "ch2_mean", "ch2_std", "brightness", "contrast"]
    for k in a:
        assert np.allclose(a[k], b[k])
    assert np.allclose(a["ch1_mean"], rgb[:, 1].mean(axis=(1, 2)))
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert np.allclose(a["brightness"], luma.mean(axis=(1, 2))) and np.allclose(a["contrast"], luma.std(axis=(1, 2)))


def test_images_of_different_sizes_as_rows_get_descriptors_each():
    rows = [np.full((1, 4, 4), 0.2), np.full((1, 6, 3), 0.8)]
    d = image_descriptors(rows, "NCHW")
    assert d["brightness"].tolist() == pytest.approx([0.2, 0.8])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_image_drift_catches_a_brightness_change_and_has_no_pixel_columns(layout):
    cur, ref = X[:800].copy(), X[800:1600]
    names, c, r = drift_columns(image_data(cur, ref, layout=layout))
    assert names == ["brightness", "contrast"] and c.shape == (800, 2)      # one channel: no ch0_* twins
    brighter = np.clip(cur + 0.08, 0, 1)
    res = {x.slice: x.status for x in check("data_drift", warn=0.1, fail=0.25).evaluate(
        image_data(brighter, ref, layout=layout))}
    assert res["feature=brightness"] == "fail" and res["overall"] == "fail"
    same = check("data_drift", warn=0.1, fail=0.25).evaluate(image_data(cur, ref, layout=layout))
    assert not [x for x in same if x.status in ("warn", "fail")]


def test_shift_moves_images_and_repeats_the_edge():
    g = np.arange(16, dtype=float).reshape(4, 4)
    expect = [np.vstack([g[:1], g[:3]]), np.vstack([g[1:], g[3:]]),                 # down, up
              np.hstack([g[:, :1], g[:, :3]]), np.hstack([g[:, 1:], g[:, 3:]])]     # right, left
    for d in range(4):
        assert np.array_equal(shift_image(g[None], 1, (1, 2), d)[0], expect[d])          # NCHW row (C,H,W)
        assert np.array_equal(shift_image(g[:, :, None], 1, (0, 1), d)[..., 0], expect[d])  # NHWC row (H,W,C)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("brittle", [2.0, 0.0])
def test_robustness_on_images_catches_a_brittle_candidate(brittle, layout):
    data = image_data(X[:700], brittle=brittle, layout=layout)
    chk = check("robustness", warn=0.02, fail=0.05, params={"noise_scales": [0.1], "brightness": [0.1], "shifts": [1]})
    res = {r.slice: r for r in chk.evaluate(data)}
    assert set(res) == {"noise=0.1", "brightness=0.1", "shift=1"}
    for r in res.values():
        assert (r.status == "fail") is bool(brittle), (r.slice, r.message)
    # the baseline itself is shaken a little by every perturbation: they do change the images
    assert all(r.evidence["flip_rate"]["baseline"] > 0 for r in res.values())


def test_images_of_different_sizes_are_perturbed_each_and_handed_over_as_rows():
    sig = Signature((TensorSpec("image", "float32", (1, None, None)),))
    rows = [{"image": X[i, :, :8 - i % 3, :]} for i in range(150)]
    got = []

    def predict(rs):
        got.append(rs)
        p = np.tile([0.5, 0.5], (len(rs), 1))
        return p, p
    p = np.tile([0.5, 0.5], (150, 1))
    data = RunData("d", ["a", "b"], [], p, p, None, [{}] * 150, {}, rows=rows, predict=predict, signature=sig,
                   modality="image")
    res = check("robustness", params={"noise_scales": [0.1], "brightness": [0.1], "shifts": [1]}).evaluate(data)
    assert {r.slice for r in res} == {"noise=0.1", "brightness=0.1", "shift=1"}
    assert all(isinstance(g, list) and [r["image"].shape for r in g] == [r["image"].shape for r in rows] for g in got)
    assert all(r["image"].dtype == np.float32 for g in got for r in g)


def test_robustness_on_image_rows_hands_rows_to_the_models():
    sig = Signature.single((1, 8, 8))
    x = X[:200]
    got = []

    def predict(xs):
        got.append(type(xs))
        return predictor(0.0)(xs)
    pb, pc = predictor(0.0)(x)
    data = RunData("digits", CLASSES, [], pb, pc, None, [{}] * 200, {}, inputs=None, rows=rows_of(x), seed=1,
                   predict=predict, signature=sig, modality="image")
    res = check("robustness", params={"noise_scales": [0.1], "brightness": [], "shifts": []}).evaluate(data)
    assert [r.slice for r in res] == ["noise=0.1"] and got == [np.ndarray]     # a fixed shape: stacked

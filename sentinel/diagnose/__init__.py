"""Divergence localisation (``sentinel diagnose``, docs/diagnose.md): where in the network a
quantized candidate parts from the float graph it was quantized from, on a run's flipped rows
compared with its agreeing rows. Needs only numpy, onnx and onnxruntime; nothing here imports
the store, the runners or the revalidation (callers hand those in).

Names are imported on first use (PEP 562): ``onnx`` takes 1.5 s to import, and the revalidation
reaches ``sentinel.diagnose.auto`` after every run, most of which need no diagnosis."""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "DEFAULT_FLOORS": "figures", "MAX_DB": "figures", "Diagnosis": "figures", "TensorFigures": "figures",
    "WeightFigures": "figures", "cosine": "figures", "sqnr_db": "figures", "DiagnoseError": "figures",
    "UnknownCandidate": "figures", "candidate_names": "run", "diagnose_run_candidates": "run",
    "diagnose_graphs": "localise", "diagnose_outputs": "localise", "sqnr_svg": "plot",
    "diagnose_pair": "run", "diagnose_run": "run", "diagnose_samples": "run", "pick_rows": "run", "sample_rows": "run",
    "diagnose_and_store": "auto", "diagnose_and_store_candidates": "auto", "entries": "auto", "stored_diagnosis": "auto", "diagnosis_html": "html",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)

"""Divergence localisation (``sentinel diagnose``, docs/diagnose.md): where in the network a
quantized candidate parts from the float graph it was quantized from, on a run's flipped rows
compared with its agreeing rows. Needs only numpy, onnx and onnxruntime; nothing here imports
the store, the runners or the revalidation (callers hand those in)."""
from .figures import DEFAULT_FLOORS, MAX_DB, Diagnosis, TensorFigures, WeightFigures, cosine, sqnr_db
from .graphs import DiagnoseError
from .localise import diagnose_graphs, diagnose_outputs
from .plot import sqnr_svg
from .run import diagnose_pair, diagnose_run, pick_rows, sample_rows

__all__ = ["DEFAULT_FLOORS", "MAX_DB", "DiagnoseError", "Diagnosis", "TensorFigures", "WeightFigures", "cosine",
           "diagnose_graphs", "diagnose_outputs", "diagnose_pair", "diagnose_run", "pick_rows", "sample_rows",
           "sqnr_db", "sqnr_svg"]

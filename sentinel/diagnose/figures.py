"""The figures of a diagnosis: SQNR and cosine similarity between float and quantized tensors, the
floors they are judged against, and the result object every view (CLI table, JSON, SVG plot)
renders from."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import SentinelError

#: SQNR is capped here: above it the two tensors agree to float32 rounding, and an uncapped value
#: (thousands of dB for bit-identical tensors) would swamp every difference computed from it.
MAX_DB = 100.0

#: Default SQNR floors (dB) by how the candidate was quantized. From the projects' own tests:
#: torchao test/integration/test_integration.py ``TestDynamicQuant.test_dynamic_quant`` asserts
#: > 40 dB for int8 dynamic activations with int8 weights; PyTorch's quantization tests
#: (``ModelNumerics.test_float_quant_compare_per_tensor`` / ``_per_channel``) assert > 30 dB for
#: static per-tensor int8 ("relative error 1e-3") and > 35 dB per channel.
DEFAULT_FLOORS = {"dynamic": 40.0, "per_tensor": 30.0, "per_channel": 35.0}
FLOOR_SOURCES = {
    "dynamic": "torchao TestDynamicQuant.test_dynamic_quant: int8 dynamic > 40 dB",
    "per_tensor": "PyTorch ModelNumerics.test_float_quant_compare_per_tensor: static per-tensor int8 > 30 dB",
    "per_channel": "PyTorch ModelNumerics.test_float_quant_compare_per_channel: per-channel int8 > 35 dB",
}


class DiagnoseError(SentinelError):
    """A diagnosis cannot be made; ``path`` is the model file (or ``""``), ``reason`` why."""

    def __init__(self, path: object, reason: str):   # a str or a Path
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}" if path else reason)


class UnknownCandidate(DiagnoseError):
    """A candidate was named that the pair does not list (``choices``: the ones it does; empty
    for a single-candidate pair, which takes no candidate name)."""

    def __init__(self, pair: str, candidate: str, choices: list[str]):
        self.pair, self.candidate, self.choices = pair, candidate, choices
        if not candidate:
            why = f"pair {pair!r} lists several candidates ({', '.join(choices)}): name one"
        elif choices:
            why = f"pair {pair!r} has no candidate {candidate!r}; its candidates are {', '.join(choices)}"
        else:
            why = f"pair {pair!r} has a single candidate (candidate:): name none, not {candidate!r}"
        super().__init__("", why)


def db_ratio(signal2: float, noise2: float) -> float:
    """20·log10(‖x‖/‖x−y‖) from the squared norms ‖x‖² and ‖x−y‖², within ±:data:`MAX_DB`."""
    if noise2 <= 0.0:
        return MAX_DB
    if signal2 <= 0.0:
        return -MAX_DB
    return float(np.clip(10 * math.log10(signal2 / noise2), -MAX_DB, MAX_DB))


def _cos(xy: float, xx: float, yy: float) -> float:
    if xx == 0.0 or yy == 0.0:
        return 1.0 if xx == yy else 0.0
    return float(np.clip(xy / math.sqrt(xx * yy), -1.0, 1.0))


def sqnr_db(x: np.ndarray, y: np.ndarray) -> float:
    """20·log10(‖x‖/‖x−y‖) over every element (x the float tensor, y the quantized one), as
    onnxruntime's ``compute_signal_to_quantization_noice_ratio``; within ±:data:`MAX_DB`."""
    s = Sums()
    s.add(x, y)
    return s.sqnr()


def cosine(x: np.ndarray, y: np.ndarray) -> float:
    """Cosine similarity of the two tensors flattened (1.0 when both are all zero)."""
    s = Sums()
    s.add(x, y)
    return s.cosine()


@dataclass
class Sums:
    """What SQNR, cosine and the clipped share need, summed over batches, so a diagnosis holds
    one batch of activations at a time however many rows it uses."""
    xx: float = 0.0
    dd: float = 0.0
    xy: float = 0.0
    yy: float = 0.0
    clipped: int = 0
    n: int = 0

    def add(self, x: np.ndarray, y: np.ndarray, bounds: tuple[float, float] | None = None) -> None:
        a = np.asarray(x, dtype=np.float64).ravel()
        b = np.asarray(y, dtype=np.float64).ravel()
        d = a - b
        self.xx, self.dd = self.xx + float(a @ a), self.dd + float(d @ d)
        self.xy, self.yy = self.xy + float(a @ b), self.yy + float(b @ b)
        self.n += a.size
        if bounds is not None:
            self.clipped += int(np.count_nonzero((a < bounds[0]) | (a > bounds[1])))

    def sqnr(self) -> float:
        return db_ratio(self.xx, self.dd)

    def cosine(self) -> float:
        return _cos(self.xy, self.xx, self.yy)

    def clipped_share(self) -> float:
        return self.clipped / self.n if self.n else 0.0


@dataclass
class TensorFigures:
    """One matched tensor in network order. ``sqnr_*`` in dB (None: no such rows), ``introduced``:
    the part of the flipped-vs-agreeing drop that appears at this node (drop of its output minus
    the largest drop of its inputs); ``fall``: SQNR lost across this node on the agreeing rows;
    ``clipped_*``: share of its float values outside the range its QuantizeLinear represents
    (None: no per-tensor QDQ after it)."""
    tensor: str
    node: str
    op: str
    sqnr_flipped: float | None
    sqnr_agreeing: float | None
    cos_flipped: float | None
    cos_agreeing: float | None
    introduced: float | None = None
    fall: float | None = None
    below_floor: bool = False
    is_output: bool = False
    clipped_flipped: float | None = None
    clipped_agreeing: float | None = None

    @property
    def drop(self) -> float | None:
        if self.sqnr_flipped is None or self.sqnr_agreeing is None:
            return None
        return self.sqnr_agreeing - self.sqnr_flipped


@dataclass
class WeightFigures:
    name: str
    sqnr_db: float
    below_floor: bool


@dataclass
class Diagnosis:
    """Where a candidate diverges from its float twin on a run's rows.

    ``mode``: ``layers`` (float twin matched tensor by tensor) or ``outputs`` (no float twin:
    candidate against baseline outputs only; ``reason`` says why). ``named``: the tensors where
    the flipped rows diverge most (by ``introduced``); ``origin``: among tensors below the floor on
    the agreeing rows (the graph is off for ordinary rows too: damage, not a borderline row), the
    one with the largest ``fall``. ``summary``: sentences rendered from these fields.
    ``candidate``: which candidate of a pair with several (``candidates:``); None (and no such
    key in :meth:`to_dict`) for a single-candidate pair."""
    mode: str
    reason: str | None
    kind: str
    floors: dict[str, Any]
    rows: dict[str, int]
    outputs: dict[str, float | None]
    tensors: list[TensorFigures] = field(default_factory=list)
    weights: list[WeightFigures] = field(default_factory=list)
    named: list[str] = field(default_factory=list)
    origin: str | None = None
    below_floor: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    run_id: int | None = None
    pair: str | None = None
    candidate: str | None = None

    def tensor(self, name: str) -> TensorFigures:
        return next(t for t in self.tensors if t.tensor == name or t.node == name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for t, row in zip(self.tensors, d["tensors"]):
            row["drop"] = t.drop
        if d["candidate"] is None:   # a single-candidate pair's diagnosis keeps its earlier shape
            d.pop("candidate")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Diagnosis":
        """The Diagnosis :meth:`to_dict` gave (a stored one: the report, the console and the API
        render it again without running a graph). Unknown keys are ignored."""
        known = {f for f in cls.__dataclass_fields__ if f not in ("tensors", "weights")}
        tfields, wfields = set(TensorFigures.__dataclass_fields__), set(WeightFigures.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known},
                   tensors=[TensorFigures(**{k: v for k, v in t.items() if k in tfields}) for t in d.get("tensors") or []],
                   weights=[WeightFigures(**{k: v for k, v in w.items() if k in wfields}) for w in d.get("weights") or []])


def output_figures(baseline: np.ndarray, candidate: np.ndarray, flipped: np.ndarray, agreeing: np.ndarray
                   ) -> dict[str, float | None]:
    """Candidate against baseline outputs (the output-level comparison every diagnosis carries)."""
    def pick(fn: Any, idx: np.ndarray) -> float | None:
        return round(fn(baseline[idx], candidate[idx]), 3) if len(idx) else None
    return {"sqnr_flipped": pick(sqnr_db, flipped), "sqnr_agreeing": pick(sqnr_db, agreeing),
            "cos_flipped": pick(cosine, flipped), "cos_agreeing": pick(cosine, agreeing)}

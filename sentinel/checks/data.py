"""What a check looks at: :class:`RunData` (both models' outputs on the same rows, plus context)
and :class:`ReferenceData` (the window it is compared with), slicing by message attributes, and
building both from the samples and the models' outputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..storage.window import Window, values
from ..tensors import Signature, adopt, as_row, stack_single

OVERALL = "overall"
MODALITIES = ("tabular", "text", "image", "tensor")
#: input names that mark a token-id model (the first integer input so named holds the ids)
TOKEN_ID_NAMES = ("input_ids", "ids", "token_ids", "tokens")
MASK_NAMES = ("attention_mask", "mask", "input_mask")


@dataclass
class ReferenceData:
    """The window a run is compared with: the traffic of the pair's last accepted run (status
    pass or warn) or a pinned data set, with both current models' outputs on its rows."""
    source: dict[str, Any]        # {"kind": "run", "run_id": ...} or {"kind": "pinned", "file": ..., "sha256": ...}
    inputs: np.ndarray | None     # (m, ...) stacked single input; None for several / variable-length inputs
    baseline: np.ndarray          # (m, k)
    candidate: np.ndarray         # (m, k)
    attributes: list[dict[str, str]]
    labels: np.ndarray | None = None
    # typed inputs (see RunData): every row's named tensors, the raw texts and their token
    # statistics, the models' embeddings by role
    rows: list[dict[str, np.ndarray]] | None = None
    texts: list[str | None] | None = None
    text_stats: dict[str, np.ndarray] | None = None
    embeddings: dict[str, np.ndarray] | None = None

    @property
    def n(self) -> int:
        return int(self.baseline.shape[0])


# (x) -> (baseline probabilities, candidate probabilities): both models on new rows; ``x`` is a
# stacked array (a single fixed-shape input) or a list of rows (sentinel.tensors.Row)
Predict = Callable[[Any], "tuple[np.ndarray, np.ndarray]"]


@dataclass
class RunData:
    """Everything a check may look at: the paired outputs on the same rows, plus context.
    ``reference`` is None when there is nothing to compare with yet; ``predict`` runs both models
    on rows a check makes up (perturbations, scenario data sets) and is None where no models
    are loaded."""
    pair: str
    classes: list[str]
    critical_classes: list[str]
    baseline: np.ndarray          # (n, k) probabilities
    candidate: np.ndarray         # (n, k)
    labels: np.ndarray | None     # (n,) class index, -1 where unknown; None when no labels at all
    attributes: list[dict[str, str]]
    latency: dict[str, np.ndarray]        # per-call seconds by role (batch 1)
    inputs: np.ndarray | None = None
    seed: int = 0
    reference: ReferenceData | None = None
    predict: Predict | None = None
    feature_names: list[str] | None = None
    # performance (sentinel.perf): this run's measurement, earlier runs' perf records of the pair
    # (newest first, accepted ones only; checks must still gate them by fingerprint), and the
    # production latency (seconds) the messages reported
    perf: Any = None
    perf_history: list[dict[str, Any]] = field(default_factory=list)
    served_latency: np.ndarray | None = None
    # typed inputs (sentinel.tensors). ``inputs`` above is the stacked array when the models take
    # one fixed-shape input (tabular rows, a fixed-size image), else None; ``rows`` always holds
    # every row's named tensors (dtype kept, variable lengths unpadded). ``modality`` is what the
    # inputs are: "tabular", "text", "image" or "tensor". ``texts`` are the messages' raw texts
    # (None where a row came as tensors) and ``text_stats`` their per-row token statistics
    # (arrays keyed "n_tokens", "unknown_share", "truncated", ...). ``encode_texts`` turns texts
    # into rows with the pair's tokenizer (None without one). ``embeddings`` are the models'
    # embedding outputs by role (None when no embedding output is configured). ``output_kind`` is
    # "single" (one label per row, rows of baseline/candidate sum to 1) or "multilabel" (an
    # independent probability per label).
    signature: Any = None
    rows: list[dict[str, np.ndarray]] | None = None
    modality: str = "tabular"
    image_layout: str = "NCHW"
    texts: list[str | None] | None = None
    text_stats: dict[str, np.ndarray] | None = None
    encode_texts: Callable[[list[str]], list[dict[str, np.ndarray]]] | None = None
    embeddings: dict[str, np.ndarray] | None = None
    output_kind: str = "single"
    # what the run records about its inputs and outputs (token truncation, output row-sum deviation)
    notes: dict[str, Any] = field(default_factory=dict)
    # a pair with several candidates: each candidate's outputs on these rows, by name (``candidate``
    # above is the first one's); what its automatic diagnosis compares with ``baseline``
    candidate_outputs: dict[str, np.ndarray] | None = None
    # what is derived from these fields once and read by several checks (the drift columns:
    # sentinel.checks.drift.drift_columns); a copy made by dataclasses.replace starts empty, and
    # the revalidator empties it once the checks have run
    derived: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n(self) -> int:
        return int(self.baseline.shape[0])

    def flat_inputs(self) -> np.ndarray:
        """Inputs as (n, features), also when n is 0."""
        assert self.inputs is not None
        return self.inputs.reshape(self.n, int(np.prod(self.inputs.shape[1:])))

    def features(self) -> list[str]:
        return self.features_for(int(np.prod(self.inputs.shape[1:])) if self.inputs is not None else 0)

    def features_for(self, width: int) -> list[str]:
        """Names of ``width`` tabular features: the pair's feature names when they fit, else x0, x1..."""
        if self.feature_names and len(self.feature_names) == width:
            return list(self.feature_names)
        return [f"x{i}" for i in range(width)]


def slices(attributes: list[dict[str, str]], slice_by: Sequence[str]) -> Iterator[tuple[str, np.ndarray]]:
    """``("overall", all rows)`` then one ``("attr=value", rows)`` per value of each attribute."""
    n = len(attributes)
    yield OVERALL, np.arange(n)
    for attr in slice_by:
        groups: dict[str, list[int]] = {}
        for i, a in enumerate(attributes):
            if attr in a:
                groups.setdefault(str(a[attr]), []).append(i)
        for value, rows in sorted(groups.items()):
            yield f"{attr}={value}", np.asarray(rows, dtype=int)


def slice_rows(attributes: list[dict[str, str]], name: str) -> np.ndarray:
    """Rows of ``attributes`` in the slice called ``name`` (``overall`` or ``attr=value``)."""
    if name == OVERALL:
        return np.arange(len(attributes))
    attr, _, value = name.partition("=")
    return np.asarray([i for i, a in enumerate(attributes) if str(a.get(attr)) == value], dtype=int)


def label_indices(labels: Sequence[Any], classes: Sequence[str]) -> np.ndarray | None:
    """Class index of each label (-1 where a label is missing or not one of ``classes``); None
    when no row has a known label (checks then say "no labels" instead of making a number up)."""
    ix = {c: i for i, c in enumerate(classes)}
    out = np.asarray([ix.get(v, -1) if v is not None else -1 for v in labels], dtype=int)
    return out if (out >= 0).any() else None


def served_latency_seconds(samples: Sequence[Any], field_name: str) -> np.ndarray:
    """The served latency (milliseconds in the message, seconds returned) of every sample that
    carries a finite, positive ``field_name`` in its extra fields; other values are ignored."""
    out = []
    for extra in values(samples, "extra"):
        value = (extra or {}).get(field_name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0:
            out.append(float(value) / 1e3)
    return np.asarray(out, dtype=float)


def modality_of(signature: Signature | None, pair_modality: str = "auto", has_text: bool = False) -> str:
    """What a pair's inputs are, for the checks that look at inputs (drift descriptors,
    perturbations). ``pair_modality`` other than ``auto`` wins; ``auto`` is ``text`` when the pair
    has a tokenizer or an integer input named like token ids, ``image`` for one float input of
    three per-row dimensions (C,H,W or H,W,C), ``tabular`` for one 1-D float (or integer) input
    and for the legacy pair without a signature, else ``tensor``."""
    if pair_modality != "auto":
        if pair_modality not in MODALITIES:
            raise ValueError(f"modality must be auto or one of {', '.join(MODALITIES)}, not {pair_modality!r}")
        return pair_modality
    if has_text:
        return "text"
    if signature is None or not signature.inputs:
        return "tabular"
    if token_ids_input(signature) is not None:
        return "text"
    if len(signature.inputs) == 1:
        spec = signature.inputs[0]
        if len(spec.shape) == 1 and spec.static:
            return "tabular"
        if not spec.is_integer and len(spec.shape) == 3:
            return "image"
    return "tensor"


def token_ids_input(signature: Signature | None) -> str | None:
    """The integer input holding token ids (by name, see ``TOKEN_ID_NAMES``), or None."""
    for spec in signature.inputs if signature is not None else ():
        if spec.is_integer and spec.name.lower() in TOKEN_ID_NAMES and len(spec.shape) == 1:
            return spec.name
    return None


def mask_input(signature: Signature | None) -> str | None:
    """The integer input holding the attention mask (by name, see ``MASK_NAMES``), or None."""
    for spec in signature.inputs if signature is not None else ():
        if spec.name.lower() in MASK_NAMES and len(spec.shape) == 1:
            return spec.name
    return None


def _as_row(inputs: Any, signature: Signature | None) -> dict[str, np.ndarray]:
    """One sample's inputs as a row of ``signature`` (sentinel.tensors.adopt: a legacy flat
    array goes to a single-input model's input); without a signature, as it is."""
    return adopt(inputs, signature) if signature is not None and signature.inputs else as_row(inputs)


def sample_rows(samples: Sequence[Any], signature: Signature | None = None) -> list[dict[str, np.ndarray]]:
    """Every sample's inputs as a row (named tensors, dtype kept, variable lengths unpadded); a
    window's rows stay held by column (sentinel.tensors.Rows) when they are the signature's inputs."""
    if isinstance(samples, Window) and signature is not None and signature.inputs:
        return samples.rows.adopted(signature)  # type: ignore[return-value]
    return [_as_row(s.inputs, signature) for s in samples]


def sample_attributes(samples: Sequence[Any]) -> list[dict[str, str]]:
    """Every sample's attributes (a window's are shared between equal values: read them only)."""
    if isinstance(samples, Window):
        return list(samples.column("attributes"))
    return [dict(s.attributes) for s in samples]


def stacked(rows: Sequence[Mapping[str, np.ndarray]], signature: Signature | None) -> np.ndarray | None:
    """Rows as one ``(n, *shape)`` array when the models take one fixed-shape input, else None."""
    if signature is None or not signature.is_single:
        return None
    return stack_single(rows, signature)


def model_inputs(samples: Sequence[Any], input_shape: Sequence[int]) -> np.ndarray:
    """The samples' inputs as one float32 array ``(n, *input_shape)`` (also when n is 0); a
    sample's inputs may be a flat list (legacy) or a one-input row."""
    def flat(v: Any) -> Any:
        if isinstance(v, Mapping):
            if len(v) != 1:
                raise ValueError(f"model_inputs needs one input per row, got {sorted(v)}")
            return np.asarray(next(iter(v.values())))
        return v
    return np.asarray([flat(s.inputs) for s in samples], dtype=np.float32).reshape((len(samples), *input_shape))


def model_feed(rows: Sequence[Mapping[str, np.ndarray]], signature: Signature | None) -> Any:
    """What ``Predict`` takes for ``rows``: the stacked array for a single fixed-shape input (or
    without a signature: the rows' one array each, stacked), else the list of rows."""
    if signature is None:
        return np.stack([np.asarray(next(iter(r.values()))) for r in rows]) if rows else np.zeros((0,))
    x = stacked(rows, signature)
    return x if x is not None else list(rows)


def run_data(pair: Any, samples: Sequence[Any], x: np.ndarray | None, baseline: np.ndarray, candidate: np.ndarray,
             **context: Any) -> RunData:
    """The RunData of ``samples`` (stored samples or decoded messages: ``label``, ``attributes``,
    ``extra``): ``pair`` is the loaded pair (``name``, ``classes``, ``critical_classes``,
    ``shape.features``), ``x`` the stacked model inputs (None for several or variable-length
    inputs), ``baseline``/``candidate`` the models' outputs on them. ``served_field`` names the
    served-latency field; ``context`` holds the other RunData fields (``latency``, ``seed``,
    ``perf``, ``perf_history``, ``predict``, and the typed-input fields ``signature``, ``rows``,
    ``modality``, ``image_layout``, ``texts``, ``text_stats``, ``encode_texts``, ``embeddings``,
    ``output_kind``). ``rows`` defaults to the samples' rows when a signature is given."""
    served = served_latency_seconds(samples, context.pop("served_field"))
    features = pair.shape.features
    if context.get("signature") is not None and context.get("rows") is None:
        context["rows"] = sample_rows(samples, context["signature"])
    return RunData(pair=pair.name, classes=pair.classes, critical_classes=pair.critical_classes,
                   baseline=baseline, candidate=candidate, labels=label_indices(values(samples, "label"), pair.classes),
                   attributes=sample_attributes(samples), inputs=x, served_latency=served,
                   feature_names=list(features) if features else None, **context)


def samples_reference(source: dict[str, Any], samples: Sequence[Any], input_shape: Sequence[int] | None,
                      classes: Sequence[str], predict: Predict, *, signature: Signature | None = None,
                      **fields: Any) -> ReferenceData:
    """:func:`reference_data` of stored (or file) samples: their inputs, attributes and labels.
    With a ``signature`` the samples' rows are kept (``rows``) and the models get what they take
    (the stacked array or the rows); ``fields`` are the other ReferenceData fields (``texts``,
    ``text_stats``, ``embeddings``)."""
    attrs, labels = sample_attributes(samples), values(samples, "label")
    if signature is None:
        return reference_data(source, model_inputs(samples, input_shape or ()), attrs, labels, classes, predict,
                              **fields)
    rows = sample_rows(samples, signature)
    fields.setdefault("texts", list(values(samples, "text")))
    return reference_data(source, model_feed(rows, signature), attrs, labels, classes, predict, rows=rows, **fields)


def reference_data(source: dict[str, Any], x: Any, attributes: list[dict[str, str]], labels: Sequence[Any],
                   classes: Sequence[str], predict: Predict, **fields: Any) -> ReferenceData:
    """Both current models' outputs on the reference rows ``x`` (a stacked array or a list of
    rows; so a change of traffic, not of models, is what the drift checks compare); ``labels``
    are class names or None; ``fields`` are ``rows``, ``texts``, ``text_stats``, ``embeddings``."""
    pb, pc = predict(x)
    inputs = x if isinstance(x, np.ndarray) else None
    if inputs is None and fields.get("rows") is None:
        fields["rows"] = list(x)
    return ReferenceData(source, inputs, pb, pc, attributes, label_indices(labels, classes), **fields)

"""What a pair's two models take, settled once when the pair is loaded: the typed signature both
models agree on (with the configured pad values), the tokenizer for raw-text messages, what the
inputs are (tabular, text, image, tensor) and what the outputs are (one label per row, or
independent labels). Also the samples' rows in that signature, and what a run records about them.

Every disagreement between the models and the config is a ConfigError naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..checks.data import modality_of
from ..errors import ConfigError
from ..runners.paired import pair_differences, signature_of
from ..storage.window import values
from ..tensors import Row, Signature, stack_single

MULTILABEL_OUTPUTS = ("multilabel", "multilabel_logits")


@dataclass(frozen=True)
class PairInputs:
    signature: Signature
    text: Any = None                  # sentinel.text.TextEncoder, or None
    modality: str = "tabular"
    image_layout: str = "NCHW"
    batching: str = "bucket"
    output_kind: str = "single"

    @property
    def stacked(self) -> bool:
        """Rows stack into one array (one fixed-shape input): the checks see ``RunData.inputs``."""
        return self.signature.is_single

    def model_input(self, rows: Sequence[Row]) -> Any:
        """What the paired runner takes: one stacked array, or the rows themselves."""
        return stack_single(rows, self.signature) if self.stacked else list(rows)


def pair_signature(cfg: Any, name: str, baseline: Any, candidate: Any) -> Signature:
    """The signature both models of pair ``name`` take, with the configured pads."""
    pc = cfg.pairs[name]
    b, c = signature_of(baseline), signature_of(candidate)
    diff = pair_differences(b, c)
    if diff:
        words = "; ".join(d.replace("first model", "baseline").replace("second model", "candidate") for d in diff)
        raise ConfigError(cfg.source, f"pairs.{name}", f"baseline and candidate take different inputs: {words}")
    unknown = sorted(set(pc.inputs) - set(b.names))
    if unknown:
        raise ConfigError(cfg.source, f"pairs.{name}.inputs", f"{unknown} are not inputs of the models "
                                                              f"(they take {b.describe()})")
    return b.with_pads({k: v.pad for k, v in pc.inputs.items()})


def _text_encoder(cfg: Any, name: str, sig: Signature) -> tuple[Any, Signature]:
    """The pair's tokenizer (None without ``text``), and the signature with the tokenizer's pad id
    for the ids input unless a pad is configured."""
    pc = cfg.pairs[name]
    if pc.text is None:
        return None, sig
    key = f"pairs.{name}.text"
    for field in ("ids_input", "mask_input", "type_ids_input"):
        target = getattr(pc.text, field)
        if target is not None and target not in sig.names:
            raise ConfigError(cfg.source, f"{key}.{field}", f"{target!r} is not an input of the models "
                                                            f"(they take {sig.describe()})")
    path = cfg.resolve_path(pc.text.tokenizer)
    if not path.exists():
        raise ConfigError(cfg.source, f"{key}.tokenizer", f"tokenizer file not found: {path}")
    from ..text import TextEncoder
    try:
        enc = TextEncoder.load(path, max_length=pc.text.max_length, ids_input=pc.text.ids_input,
                               mask_input=pc.text.mask_input, type_ids_input=pc.text.type_ids_input)
    except ValueError as exc:   # names the file and what is wrong with it
        raise ConfigError(cfg.source, f"{key}.tokenizer", str(exc)) from None
    if pc.text.ids_input not in pc.inputs and getattr(enc, "pad_id", None) is not None:
        sig = sig.with_pads({pc.text.ids_input: enc.pad_id})
    return enc, sig


def pair_inputs(cfg: Any, name: str, baseline: Any, candidate: Any, candidate_name: str | None = None) -> PairInputs:
    """What both models take; ``candidate_name`` names the candidate in a pair with several."""
    pc = cfg.pairs[name]
    spec = pc.candidate_spec(candidate_name)
    ckey = f"pairs.{name}.candidate" if candidate_name is None else f"pairs.{name}.candidates.{candidate_name}"
    sig = pair_signature(cfg, name, baseline, candidate)
    enc, sig = _text_encoder(cfg, name, sig)
    if pc.features is not None:
        width = int(np.prod(sig.input_shape)) if sig.is_single else None
        if width != len(pc.features):
            raise ConfigError(cfg.source, f"pairs.{name}.features",
                              f"lists {len(pc.features)} features but the models take "
                              f"{f'{width} values' if width is not None else sig.describe()}")
    kinds = {pc.baseline.output in MULTILABEL_OUTPUTS, spec.output in MULTILABEL_OUTPUTS}
    if len(kinds) != 1:
        raise ConfigError(cfg.source, f"{ckey}.output",
                          f"baseline output is {pc.baseline.output!r}, candidate {spec.output!r}: both "
                          "models must give one label per row, or both independent labels")
    return PairInputs(sig, enc, modality_of(sig, pc.modality, has_text=enc is not None), pc.image_layout, pc.batching,
                      "multilabel" if kinds == {True} else "single")


def sample_texts(samples: Sequence[Any]) -> list[str | None] | None:
    """The samples' raw texts; None when no sample came as text."""
    texts = list(values(samples, "text"))
    return texts if any(t is not None for t in texts) else None


def text_record(inputs: PairInputs, texts: list[str | None] | None, stats: dict[str, np.ndarray] | None
                ) -> dict[str, Any] | None:
    """What a run records about its raw texts: the tokenizer's sha256 and limit, how many rows
    came as text and how many of those were truncated."""
    if inputs.text is None:
        return None
    n_text = sum(t is not None for t in texts) if texts else 0
    truncated = int(np.asarray(stats["truncated"]).sum()) if stats and "truncated" in stats else 0
    return {"tokenizer_sha256": inputs.text.sha256, "max_length": inputs.text.max_length,
            "rows_with_text": n_text, "truncated": truncated}


def text_stats(inputs: PairInputs, texts: list[str | None] | None) -> dict[str, np.ndarray] | None:
    """Per-row token statistics of the texts, when every row came as text (rows sent as tensors
    have no text to describe; the checks then describe their token ids)."""
    if inputs.text is None or not texts or any(t is None for t in texts):
        return None
    return inputs.text.stats(list(texts))

"""Raw request text -> model inputs, with the pair's tokenizer (``pairs.NAME.text`` in the config).

The tokenizer is a ``tokenizer.json`` for Hugging Face's ``tokenizers`` library, read from disk
(never fetched): the same file the model was trained with, so the ids Sentinel feeds the baseline
and the candidate are the ids production feeds them. Rows are truncated to ``max_length`` tokens
(special tokens included, as the tokenizer's post-processor adds them) and never padded here:
padding is per batch, to the longest row of that batch (``sentinel.tensors.collate``), with
:attr:`TextEncoder.pad_id`. The file's sha256 goes into the run record.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .tensors import Row, Signature

# where the tokenizer's own unknown / padding token is not stated, the usual names
_UNK_NAMES = ("[UNK]", "<unk>", "<UNK>", "[unk]")
_PAD_NAMES = ("[PAD]", "<pad>", "<PAD>", "[pad]")


class TextEncoder:
    """One pair's tokenizer, configured for Sentinel: truncation to ``max_length``, no padding.
    ``ids_input``/``mask_input``/``type_ids_input`` name the model inputs the token ids, the
    attention mask and the token type ids go to (None: the model takes none)."""

    def __init__(self, tokenizer: Any, *, sha256: str, max_length: int, ids_input: str = "input_ids",
                 mask_input: str | None = "attention_mask", type_ids_input: str | None = None,
                 path: str | None = None):
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self.pad_id = _pad_id(tokenizer)    # read before no_padding() drops the padding config
        self.unk_id = _unk_id(tokenizer)
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self.tokenizer = tokenizer
        self.sha256 = sha256
        self.max_length = max_length
        self.ids_input, self.mask_input, self.type_ids_input = ids_input, mask_input, type_ids_input
        self.path = path

    @classmethod
    def load(cls, path: str | Path, max_length: int = 128, ids_input: str = "input_ids",
             mask_input: str | None = "attention_mask", type_ids_input: str | None = None) -> "TextEncoder":
        """The tokenizer in ``path``. Raises ValueError naming the file when it is missing or
        not a tokenizer the library reads."""
        from tokenizers import Tokenizer

        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ValueError(f"tokenizer {str(p)!r}: cannot read it ({exc.strerror or exc})") from None
        try:
            tok = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as exc:   # noqa: BLE001 - the library raises plain Exceptions
            raise ValueError(f"tokenizer {str(p)!r}: not a tokenizer.json the tokenizers library reads "
                             f"({' '.join(str(exc).split())[:200]})") from None
        return cls(tok, sha256=hashlib.sha256(data).hexdigest(), max_length=max_length, ids_input=ids_input,
                   mask_input=mask_input, type_ids_input=type_ids_input, path=str(p))

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, max_length: int = 128, **names: Any) -> "TextEncoder":
        """An in-memory tokenizer (tests, scripts); its sha256 is that of its JSON form."""
        sha = hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()
        return cls(tokenizer, sha256=sha, max_length=max_length, **names)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.ids_input, self.mask_input, self.type_ids_input) if n is not None)

    @property
    def pads(self) -> dict[str, float]:
        """Pad values per model input (ids: the pad token; mask and type ids: 0), for
        ``Signature.with_pads``."""
        return {n: (self.pad_id if n == self.ids_input else 0) for n in self.input_names}

    def _encodings(self, texts: Sequence[str]) -> list[Any]:
        # encode_batch_fast (tokenizers >= 0.20) skips character offsets, which Sentinel never reads
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        return encode(list(texts), add_special_tokens=True)

    def encode(self, texts: Sequence[str]) -> list[Row]:
        """One row per text: int64 arrays of the row's own length (at most ``max_length``)."""
        return [self._row(e) for e in self._encodings(texts)]

    def _row(self, e: Any) -> Row:
        row: Row = {self.ids_input: np.asarray(e.ids, dtype=np.int64)}
        if self.mask_input is not None:
            row[self.mask_input] = np.asarray(e.attention_mask, dtype=np.int64)
        if self.type_ids_input is not None:
            row[self.type_ids_input] = np.asarray(e.type_ids, dtype=np.int64)
        return row

    def stats(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Per-row descriptors of the texts (what text drift is measured on): ``n_tokens`` (as
        encoded: truncated, special tokens included), ``n_chars``, ``unknown_share`` (unknown
        tokens among the non-special ones) and ``truncated``."""
        encs = self._encodings(texts)
        n_tokens = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        truncated = np.fromiter((bool(e.overflowing) for e in encs), dtype=bool, count=len(encs))
        unknown = np.zeros(len(encs), dtype=np.float64)
        if self.unk_id is not None:
            for i, e in enumerate(encs):
                special = np.asarray(e.special_tokens_mask, dtype=bool)
                ids = np.asarray(e.ids, dtype=np.int64)[~special]
                unknown[i] = float(np.mean(ids == self.unk_id)) if ids.size else 0.0
        n_chars = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        return {"n_tokens": n_tokens, "n_chars": n_chars, "unknown_share": unknown, "truncated": truncated}

    def misfit(self, signature: Signature) -> list[str]:
        """Why this tokenizer's rows cannot feed a model of ``signature``, in words (empty: they
        can). For the pair loader to refuse a config whose ``text`` keys name the wrong inputs."""
        out = []
        for name in self.input_names:
            if name not in signature.names:
                out.append(f"the tokenizer fills input {name!r}, which the model does not take "
                           f"(it takes {signature.describe()})")
                continue
            spec = signature.spec(name)
            if len(spec.shape) != 1 or not spec.is_integer:
                out.append(f"input {name!r} is {spec.describe()}: token inputs are 1-D integers")
            elif spec.shape[0] is not None and spec.shape[0] < self.max_length:
                out.append(f"input {name!r} has a fixed length of {spec.shape[0]}, below max_length {self.max_length}")
        for spec in signature.inputs:
            if spec.name not in self.input_names:
                out.append(f"the model takes input {spec.name!r}, which text messages do not fill "
                           "(name it in ids_input, mask_input or type_ids_input)")
        return out

    def describe(self) -> dict[str, Any]:
        """What the run record keeps about the tokenizer."""
        return {"path": self.path, "sha256": self.sha256, "max_length": self.max_length,
                "inputs": list(self.input_names), "pad_id": self.pad_id, "unk_id": self.unk_id}


def _unk_id(tok: Any) -> int | None:
    model = tok.model
    name = getattr(model, "unk_token", None)
    if isinstance(name, str) and tok.token_to_id(name) is not None:
        return int(tok.token_to_id(name))
    uid = getattr(model, "unk_id", None)       # Unigram names its unknown token by id
    if isinstance(uid, int):
        return uid
    return _first_id(tok, _UNK_NAMES)


def _pad_id(tok: Any) -> int:
    padding = tok.padding
    if padding and padding.get("pad_id") is not None:
        return int(padding["pad_id"])
    found = _first_id(tok, _PAD_NAMES)
    return 0 if found is None else found


def _first_id(tok: Any, names: Sequence[str]) -> int | None:
    for n in names:
        i = tok.token_to_id(n)
        if i is not None:
            return int(i)
    return None

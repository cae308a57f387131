"""PyTorch runner for ``torch.export`` archives (``.pt2``) and TorchScript files.

Plain ``torch.save`` checkpoints are deliberately not supported: loading them means
unpickling arbitrary objects, which lets a model file run code. The two formats used here
are loaded without that: a ``torch.export`` archive is a JSON graph plus raw tensor bytes
(archives carrying pickled Python objects are refused, and ``torch.load`` is forced to
``weights_only`` while one is read), and ``torch.jit.load`` reads TorchScript's own archive
with its restricted unpickler. The format is recognised from the archive's content, not its
suffix (conventionally ``.pt2`` and ``.pt``/``.ts``/``.torchscript``).
"""
from __future__ import annotations

import json
import os
import pickle  # only for its exception type: nothing is unpickled here
import threading
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils._pytree import tree_leaves

from ..tensors import Batch, Signature, TensorSpec
from .base import ModelFileRunner, ModelLoadError, first_line, pick_output

#: Name of the TorchScript extra file holding the per-sample input shape as a JSON list.
INPUT_SHAPE_EXTRA = "input_shape"
_NOT_TORCH = "not a torch.export archive or TorchScript file"
# File-name prefixes under which torch.export stores pickled Python objects as constants.
_PICKLED_OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")
_FORCE_SAFE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_FORCE_UNSAFE = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_env_lock = threading.Lock()


@contextmanager
def _weights_only_torch_load() -> Iterator[None]:
    """Make every ``torch.load`` in the block behave as ``weights_only=True``.

    torch reads these environment variables on each call, and the forced mode overrides
    even an explicit ``weights_only=False``. Process-wide while it lasts, which can only make
    a concurrent ``torch.load`` elsewhere stricter, never looser.
    """
    with _env_lock:
        saved = {k: os.environ.get(k) for k in (_FORCE_SAFE, _FORCE_UNSAFE)}
        os.environ[_FORCE_SAFE] = "1"
        os.environ.pop(_FORCE_UNSAFE, None)  # both set is an error in torch
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class TorchRunner(ModelFileRunner):
    """Runs a torch model on CPU under ``torch.inference_mode()``.

    The signature of a ``.pt2`` archive is read from the exported program: its user inputs, in
    order, with each placeholder's recorded dtype and shape (symbolic dimensions, those exported
    with ``torch.export.Dim``, are dynamic; the first is the batch). Inputs are passed
    positionally in that order (keyword inputs by their keyword). A TorchScript file takes one
    float32 input whose per-row shape is its ``input_shape`` extra file (or option).

    Outputs: the scores are the first output unless ``output_name`` says otherwise; with
    ``embedding_output`` a second one is returned. A model returning a tuple (or list) is
    addressed by index (``output_name: "0"``, ``embedding_output: "1"``); one returning a dict
    by its keys (``"embedding"``), which ``torch.export`` records; the exported graph's own
    output node names are accepted too.

    Args:
        path: an archive written by ``torch.export.save`` (``.pt2``) or a TorchScript file
            (``.pt``/``.ts``/``.torchscript``).
        role: ``"baseline"`` or ``"candidate"``.
        output: an output kind (:data:`~sentinel.runners.scores.OUTPUT_MODES`).
        threads: if given, ``torch.set_num_threads(threads)``. Note this is process wide in
            torch: the last runner loaded wins.
        providers: ignored (ONNX Runtime only); accepted so every runtime has one signature.
        input_shape: per-sample input shape for TorchScript files that carry no
            ``input_shape`` extra file (``torch.jit.save(m, f, _extra_files={"input_shape":
            "[30]"})``). A ``.pt2`` archive records its input shape itself, so it is only
            checked against the archive there.
    """

    runtime = "torch"

    def _open(self, providers: list[str] | None, input_shape: tuple[int, ...] | list[int] | None = None,
              **options: Any) -> int | None:
        if options:
            raise ModelLoadError(self.path, f"unknown option(s) for torch: {', '.join(sorted(options))}")
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        given_shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
        self.providers = ["cpu"]   # this runner always executes on CPU
        self._module, n_outputs, out_names = self._load(given_shape)
        expected = self.signature.input_shape
        if given_shape is not None and expected != given_shape:
            raise ModelLoadError(self.path, f"input_shape {list(given_shape)} given but the model expects "
                                            f"{list(expected) if expected is not None else self.signature.describe()}")
        score = pick_output(self.path, self.output_name, out_names, "output_name") or 0
        self._picks = (score, pick_output(self.path, self.embedding_output, out_names, "embedding_output"))
        # the graph's class count is that of its first output; the probe batch absorbs first-call setup
        return n_outputs if score == 0 else None

    # -- loading ---------------------------------------------------------------------------

    def _load(self, given_shape: tuple[int, ...] | None) -> tuple[Any, int | None, list[str]]:
        # Both formats are zip archives; tell them apart by content rather than by suffix so
        # a mis-named file still loads and a wrong one gets a precise message.
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelLoadError(self.path, f"{_NOT_TORCH} (not a zip archive: {first_line(exc, 80)})") from exc
        if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
            loader = self._load_export
        elif any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
            loader = self._load_torchscript
        else:
            raise ModelLoadError(self.path, f"{_NOT_TORCH} (zip archive without archive_format or TorchScript code)")
        try:
            return loader(names, given_shape)
        except ModelLoadError:
            raise
        except pickle.UnpicklingError as exc:  # raised by torch.load(weights_only=True)
            raise ModelLoadError(self.path, f"archive holds a pickle that is not plain tensors; refusing to unpickle it ({first_line(exc, 100)})") from exc
        except Exception as exc:  # each torch loader raises its own zoo of exceptions
            raise ModelLoadError(self.path, f"{_NOT_TORCH} ({first_line(exc, 160)})") from exc

    def _load_export(self, names: list[str], _given: tuple[int, ...] | None) -> tuple[Any, int | None, list[str]]:
        # torch.export.load unpickles in a few places: Python objects stored as constants
        # (plain pickle.loads) and, as fallbacks, torch.load(weights_only=False) for sample
        # inputs, tensor subclasses and the legacy format. Refuse archives carrying pickled
        # objects, and force every torch.load inside to weights_only for the duration.
        pickled = [n for n in names if n.rsplit("/", 1)[-1].startswith(_PICKLED_OBJECT_PREFIXES)]
        if pickled:
            raise ModelLoadError(self.path, f"torch.export archive contains pickled Python objects ({', '.join(pickled[:3])}); refusing to load it")
        # An open file rather than the path: torch only accepts paths ending in ".pt2".
        with _weights_only_torch_load(), open(self.path, "rb") as fh:
            ep = torch.export.load(fh)
        nodes = {node.name: node for node in ep.graph.nodes}
        user_inputs = list(ep.graph_signature.user_inputs)
        specs = [self._spec(name, nodes[name].meta.get("val")) for name in user_inputs]
        self.signature = Signature(tuple(s for s, _ in specs))
        fixed = {b for _, b in specs if b is not None}
        self._fixed_batch = min(fixed) if fixed else None
        self._n_positional = _positional_count(ep.call_spec.in_spec, len(user_inputs))
        out_spec = ep.call_spec.out_spec
        out_names = ([str(k) for k in out_spec.context] if out_spec is not None and out_spec.type is dict
                     else [str(n) for n in ep.graph_signature.user_outputs])
        return ep.module(), _declared_classes(ep), out_names

    def _spec(self, name: str, val: Any) -> tuple[TensorSpec, int | None]:
        """One exported input as a TensorSpec (batch dimension dropped) and its fixed batch size
        (None: dynamic)."""
        if val is None or not isinstance(val, torch.Tensor):
            raise ModelLoadError(self.path, f"exported input {name!r} is not a tensor with a recorded shape ({type(val).__name__})")
        if val.dim() < 1:
            raise ModelLoadError(self.path, f"exported input {name!r} is a scalar; every input needs a batch dimension")
        dims = [None if isinstance(d, torch.SymInt) else int(d) for d in val.shape]
        dtype = str(val.dtype).removeprefix("torch.")
        try:
            return TensorSpec(name, dtype, tuple(dims[1:])), dims[0]
        except ValueError as exc:
            raise ModelLoadError(self.path, str(exc)) from None

    def _load_torchscript(self, _names: list[str], given_shape: tuple[int, ...] | None) -> tuple[Any, int | None, list[str]]:
        extra = {INPUT_SHAPE_EXTRA: ""}
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream but still a supported input format here.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=extra)
        module.eval()
        recorded = extra[INPUT_SHAPE_EXTRA]
        if recorded:
            try:
                shape = tuple(int(d) for d in json.loads(recorded))
            except (ValueError, TypeError) as exc:
                raise ModelLoadError(self.path, f"extra file {INPUT_SHAPE_EXTRA!r} is not a JSON list of ints: {recorded!r}") from exc
        elif given_shape is not None:
            shape = given_shape
        else:
            raise ModelLoadError(
                self.path,
                f"TorchScript file has no {INPUT_SHAPE_EXTRA!r} extra file; pass input_shape=... to the runner",
            )
        self.signature = Signature.single(shape)
        self._n_positional = 1
        return module, None, []

    # -- inference -------------------------------------------------------------------------

    def _outputs(self, batch: Batch) -> tuple[np.ndarray, np.ndarray | None]:
        tensors = [torch.from_numpy(batch[name]) for name in self.signature.names]
        k = self._n_positional
        kwargs = dict(zip(self.signature.names[k:], tensors[k:]))
        with torch.inference_mode():
            out = self._module(*tensors[:k], **kwargs)
        flat = [out] if isinstance(out, torch.Tensor) else tree_leaves(out)
        score, embed = self._picks
        if max(score, embed or 0) >= len(flat):
            raise ValueError(f"the model returns {len(flat)} output(s); output index {max(score, embed or 0)} does not exist")
        return _numpy(flat[score]), None if embed is None else _numpy(flat[embed])

    def close(self) -> None:
        self._module = None


def _numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _positional_count(in_spec: Any, n_inputs: int) -> int:
    """How many of an exported program's inputs are positional (the rest are keywords, in the
    order ``graph_signature.user_inputs`` lists them)."""
    try:
        children = in_spec.children() if hasattr(in_spec, "children") else in_spec.children_specs
        return n_inputs - len(children[1].context or [])
    except (AttributeError, ValueError, TypeError):
        return n_inputs


def _declared_classes(ep: Any) -> int | None:
    """The class count of the first output, when the exported graph records it as 2-D."""
    out_node = next((n for n in ep.graph.nodes if n.op == "output"), None)
    if out_node is None or not out_node.args or not out_node.args[0]:
        return None
    out_val = getattr(out_node.args[0][0], "meta", {}).get("val")
    if out_val is None or len(out_val.shape) != 2 or isinstance(out_val.shape[-1], torch.SymInt):
        return None
    return int(out_val.shape[-1])

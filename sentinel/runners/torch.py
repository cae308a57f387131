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

from .base import ModelFileRunner, ModelLoadError, first_line

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

    Args:
        path: an archive written by ``torch.export.save`` (``.pt2``; exported with a
            dynamic batch dimension) or a TorchScript file (``.pt``/``.ts``/``.torchscript``).
        role: ``"baseline"`` or ``"candidate"``.
        output: ``"probabilities"`` or ``"logits"`` (see :func:`~sentinel.runners.load_runner`).
        threads: if given, ``torch.set_num_threads(threads)``. Note this is process wide in
            torch: the last runner loaded wins.
        providers: ignored (ONNX Runtime only); accepted so every runtime has one signature.
        input_shape: per-sample input shape for TorchScript files that carry no
            ``input_shape`` extra file (``torch.jit.save(m, f, _extra_files={"input_shape":
            "[30]"})``). A ``.pt2`` archive records its input shape itself, so it is only
            checked against the archive there.
    """

    runtime = "torch"

    def _open(self, providers: list[str] | None, input_shape: tuple[int, ...] | list[int] | None = None) -> int | None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        given_shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
        self.providers = ["cpu"]   # this runner always executes on CPU
        self._module, shape, n_outputs = self._load(given_shape)
        if given_shape is not None and shape != given_shape:
            raise ModelLoadError(self.path, f"input_shape {list(given_shape)} given but the model expects {list(shape)}")
        self.input_shape = shape
        return n_outputs   # the probe batch that follows absorbs first-call setup (~1 ms here)

    # -- loading ---------------------------------------------------------------------------

    def _load(self, given_shape: tuple[int, ...] | None) -> tuple[Any, tuple[int, ...], int | None]:
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

    def _load_export(self, names: list[str], _given: tuple[int, ...] | None) -> tuple[Any, tuple[int, ...], int | None]:
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
        user_inputs = list(ep.graph_signature.user_inputs)
        if len(user_inputs) != 1:
            raise ModelLoadError(self.path, f"expected one input, the exported program has {len(user_inputs)}: {user_inputs}")
        nodes = {node.name: node for node in ep.graph.nodes}
        val = nodes[user_inputs[0]].meta.get("val")
        if val is None:
            raise ModelLoadError(self.path, "exported program does not record its input shape")
        try:
            # dim 0 is the (symbolic) batch; the rest must be fixed for a per-row model.
            shape = tuple(int(d) for d in val.shape[1:])
        except (TypeError, RuntimeError) as exc:
            raise ModelLoadError(self.path, f"input shape {tuple(val.shape)} is not fixed beyond the batch dimension ({exc})") from exc
        n_outputs = None
        out_node = next((n for n in ep.graph.nodes if n.op == "output"), None)
        if out_node is not None and out_node.args and out_node.args[0]:
            first = out_node.args[0][0]
            out_val = getattr(first, "meta", {}).get("val")
            if out_val is not None and len(out_val.shape) == 2:
                try:
                    n_outputs = int(out_val.shape[-1])
                except (TypeError, RuntimeError):
                    n_outputs = None
        return ep.module(), shape, n_outputs

    def _load_torchscript(self, _names: list[str], given_shape: tuple[int, ...] | None) -> tuple[Any, tuple[int, ...], int | None]:
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
        return module, shape, None

    # -- inference -------------------------------------------------------------------------

    def _call(self, x: np.ndarray) -> np.ndarray:
        out = self._module(torch.from_numpy(x))
        if isinstance(out, (tuple, list)):  # models returning (probs, ...) : use the first
            out = out[0]
        return out.detach().cpu().numpy()

    def _raw(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self._call(x)

    def close(self) -> None:
        self._module = None

"""The accepted candidate, kept so later runs can time a new candidate *against it*.

Why: on a shared machine the relative speed of two different runtimes (a torch baseline and an
onnxruntime candidate) wanders by ±10% within minutes, so "this run's candidate, normalised by
this run's baseline, vs last week's" cannot tell a 10% regression from the weather. Timing the
accepted candidate file itself, interleaved call by call with the new one, puts both under the
same drift; measured here, two copies of one ONNX graph timed that way agree to ±2.5%
(docs/performance.md). So when a run is accepted, its candidate file is copied into a
content-addressed directory (``perf.accepted_models_dir``), and :func:`choose_reference` tells
the next run what to compare with:

* ``accepted_model``: a different candidate than the accepted one, and the accepted file is at
  hand (the kept copy, or the recorded path still holding those bytes): time it alongside.
* ``identical``: the candidate is byte-for-byte the accepted one on the same fingerprint; there
  is no candidate change to judge (the host's own drift is reported, not judged as a regression).
* ``unavailable``: a different candidate, but the accepted file was not kept and is gone.
* ``none``: no accepted run on this fingerprint and baseline yet.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from ..registry import PluginError
from ..runners.base import ModelLoadError, load_runner, output_options, sha256_file
from .fingerprint import fingerprint
from .history import perf_history, run_perf

log = logging.getLogger("sentinel.perf")


def candidate_sha_of(entry: dict[str, Any]) -> str | None:
    """The candidate file's sha256 a perf history entry (or run record) names, if any."""
    return ((entry.get("models") or {}).get("candidate") or {}).get("sha256")


def same_context(entry: dict[str, Any], fingerprint_id: str, control: str) -> bool:
    """Measured on the same fingerprint against the same baseline file: comparable."""
    return entry.get("fingerprint", {}).get("id") == fingerprint_id and entry.get("control") == control


def kept_models(cfg: Any) -> "AcceptedModels | None":
    """The config's directory of accepted candidate copies (None: perf.keep_accepted_models is false)."""
    perf = cfg.perf
    return AcceptedModels(cfg.resolve_path(perf.accepted_models_dir)) if perf.keep_accepted_models else None


def choose_reference(history: list[dict[str, Any]], *, fingerprint_id: str, control: str,
                     candidate_sha: str, kept: "AcceptedModels | None") -> dict[str, Any]:
    """What this run's candidate is judged against, from the pair's accepted perf history
    (newest first; entries carry ``models`` and ``run_id``). Returns a JSON-able dict with
    ``kind`` (see the module docstring) and, when there is an accepted run, its ``run_id``,
    ``sha256`` and the ``path`` to load (``accepted_model`` only)."""
    same = [h for h in history if same_context(h, fingerprint_id, control) and candidate_sha_of(h)]
    if not same:
        return {"kind": "none"}
    newest = same[0]
    sha = candidate_sha_of(newest)
    ref: dict[str, Any] = {"run_id": newest.get("run_id"), "sha256": sha}
    if sha == candidate_sha:
        return {"kind": "identical", **ref}
    recorded = (newest.get("models") or {}).get("candidate", {}).get("path")
    for path in ([kept.find(sha)] if kept is not None else []) + [Path(recorded) if recorded else None]:
        if path is not None and path.is_file():
            return {"kind": "accepted_model", **ref, "path": str(path)}
    why = ("perf.keep_accepted_models is false" if kept is None
           else f"no copy in {kept.root}") + (f" and {recorded} is gone" if recorded else "")
    return {"kind": "unavailable", **ref, "reason": why}


class AcceptedModels:
    """A directory of accepted candidate files named ``<sha256><suffix>`` (content-addressed, so
    a redeployed file at the same path never overwrites the copy a later run compares with)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def find(self, sha256: str) -> Path | None:
        if not self.root.is_dir():
            return None
        return next((p for p in sorted(self.root.glob(f"{sha256}*")) if p.is_file() and not p.name.startswith(".")),
                    None)

    def keep(self, path: str | Path, sha256: str) -> Path:
        """Copy ``path`` in as ``<sha256><suffix>`` unless it is there; the copy is written to a
        temporary name and renamed, so a crash never leaves a truncated file under the final name.
        Raises ValueError when the file's bytes are not ``sha256`` (it changed under us)."""
        existing = self.find(sha256)
        if existing is not None:
            return existing
        src = Path(path)
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / f"{sha256}{''.join(src.suffixes[-1:])}"
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            got = sha256_file(tmp)
            if got != sha256:
                raise ValueError(f"{src} changed while being kept: sha256 {got[:12]}, expected {sha256[:12]}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target

    def prune(self, keep: set[str]) -> list[Path]:
        """Delete kept files whose sha256 is not in ``keep``; returns what was deleted."""
        gone = []
        if not self.root.is_dir():
            return gone
        for p in self.root.iterdir():
            if p.is_file() and not p.name.startswith(".") and p.name.split(".", 1)[0] not in keep:
                p.unlink()
                gone.append(p)
        return gone


def accept_run(store: Any, run_id: int, *, actor: str, reason: str, kept: AcceptedModels | None) -> dict[str, Any]:
    """Accept a finished run's performance on purpose (``sentinel accept``, ``POST
    /api/v1/runs/{id}/accept``): it joins the pair's history and its candidate becomes the file
    later candidates are timed against. Keeps a copy of that file when the recorded path still
    holds it. Returns ``{"run_id", "pair", "accepted_by", "kept", "warning"}``; raises
    NotFoundError / StateError naming what is wrong, and ValueError for an empty reason."""
    if not reason or not reason.strip():
        raise ValueError("a reason is required: it is kept in the run record")
    perf = store.accept_perf(run_id, actor=actor, reason=reason.strip())
    run = store.get_run(run_id)
    cand = (run["record"].get("models") or {}).get("candidate", {})
    out: dict[str, Any] = {"run_id": run_id, "pair": run["pair"], "accepted_by": perf.get("accepted_by"),
                           "kept": None, "warning": None}
    sha, path = cand.get("sha256"), Path(cand["path"]) if cand.get("path") else None
    if kept is None or not sha or path is None:
        return out
    if kept.find(sha) is None and not (path.is_file() and sha256_file(path) == sha):
        out["warning"] = (f"{path} no longer holds candidate {sha[:12]}: it is not kept, so a later, different "
                          "candidate cannot be timed against it")
        return out
    out["kept"] = str(kept.keep(path, sha))
    return out


def ab_sessions(load: Any, candidate_path: str | Path, accepted_path: str | Path, sessions: int) -> dict[str, list[Any]]:
    """Fresh sessions of the new and the accepted candidate for one A/B timing, ``sessions`` of
    each, created in the order C A A C C A ... so neither model is always the more recently
    loaded one. Measured here: of two sessions of one ONNX file, the one created later ran 1-4%
    faster (where in memory a session's buffers land matters), a bias as large as the effects
    being judged; balanced creation cancels it (two sessions each: median ratio 1.002, sd 0.007).
    ``load(path, role)`` returns a runner."""
    out: dict[str, list[Any]] = {"candidate": [], "accepted": []}
    pattern = ("candidate", "accepted", "accepted", "candidate")
    for i in range(2 * sessions):
        role = pattern[i % 4]
        out[role].append(load(candidate_path if role == "candidate" else accepted_path, role))
    return out


def accepted_reference(cfg: Any, pair: str, baseline: Any, candidate: Any, history: list[dict[str, Any]], *,
                       spec: Any = None) -> tuple[dict[str, Any], dict[str, list[Any]] | None]:
    """What perf_history judges this run's ``candidate`` runner against (:func:`choose_reference`
    on the pair's ``history``), and, when the accepted file is to be timed alongside, fresh
    sessions of both files created in balanced order (:func:`ab_sessions`; the caller closes
    them). A file that cannot be loaded, or now holds other bytes, makes the reference
    ``unavailable`` with the reason. ``spec``: the candidate's config (default: the pair's
    single, or first, candidate)."""
    fp = fingerprint({"baseline": baseline, "candidate": candidate})
    ref = choose_reference(history, fingerprint_id=fp["id"], control=baseline.sha256,
                           candidate_sha=candidate.sha256, kept=kept_models(cfg))
    if ref["kind"] != "accepted_model":
        return ref, None
    spec = spec if spec is not None else cfg.pairs[pair].candidate_spec()
    expected = {"candidate": candidate.sha256, "accepted": ref["sha256"]}
    made: list[Any] = []

    def load(path: Any, role: str) -> Any:
        r = load_runner(path, runtime=candidate.runtime, role=role, output=spec.output,
                        threads=getattr(candidate, "threads", None), providers=spec.providers,
                        **output_options(spec))
        made.append(r)
        if r.sha256 != expected[role]:
            raise ModelLoadError(path, f"now holds other bytes (sha256 {r.sha256[:12]}, expected "
                                       f"{expected[role][:12]})")
        return r

    try:
        return ref, ab_sessions(load, candidate.path, ref["path"], cfg.perf.ab_sessions)
    except (ModelLoadError, PluginError) as exc:
        for r in made:
            r.close()
        return {**ref, "kind": "unavailable", "reason": str(exc)}, None


def keep_accepted(cfg: Any, store: Any, pairs: Iterable[str], pair: str, candidate: Any) -> None:
    """Copy ``pair``'s accepted ``candidate`` file into perf.accepted_models_dir (so a later
    candidate can be timed against it after a redeploy overwrote the path), and drop copies no
    run in the history of ``pairs`` refers to any more (copies only ever become unreferenced
    when a new one is added, so pruning goes with keeping). Best effort: the run is already
    stored, so a failure is logged, not raised."""
    kept = kept_models(cfg)
    sha = candidate.sha256
    if kept is None or kept.find(sha) is not None:   # the steady state: nothing new to keep or prune
        return
    try:
        kept.keep(candidate.path, sha)
        referenced = {s for p in pairs if p in cfg.pairs for name in cfg.pairs[p].candidate_specs()
                      for h in perf_history(store, p, cfg.perf.history_runs, name) if (s := candidate_sha_of(h))}
        kept.prune(referenced | {sha})
    except (OSError, ValueError) as exc:
        log.warning("accepted candidate not kept", extra={"pair": pair, "reason": str(exc)})


def keep_accepted_of_run(cfg: Any, store: Any, pairs: Iterable[str], loaded: Any, record: dict[str, Any]) -> None:
    """:func:`keep_accepted` for each candidate of the stored run ``record`` of pair ``loaded``
    whose perf record was accepted (a pair with several candidates: each its own)."""
    runners = dict(loaded.candidates) or {None: loaded.candidate}
    for name, runner in runners.items():
        perf, _ = run_perf(record, name)
        if (perf or {}).get("accepted"):
            keep_accepted(cfg, store, pairs, loaded.name, runner)

"""One revalidation of one model pair: take the pair's pending window, run baseline and candidate on
the same rows, evaluate the checks, store the run with its reproducibility record, open or update
incidents, write the report.

Used by the scheduled job in the daemon, by ``sentinel revalidate`` and by ``sentinel replay``.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..checks.base import Check, CheckResult, ReferenceData, RunData, build_check, evaluate_check, worst
from ..checks.data import label_indices, run_data, sample_attributes, sample_rows
from ..checks.perf import GAUGE_TYPE
from ..config import Config, ConfigError
from ..errors import MessageError, RunCancelled, check_cancel
from ..messages import PairShape, decode_traffic, text_rows
from ..perf.accepted import keep_accepted_of_run
from ..perf.history import joins_history, perf_history
from ..perf.measure import measure_run, perf_record
from ..record import ids_digest, run_record, sample_record
from ..registry import PluginError
from ..runners.base import ModelLoadError, Runner, load_runner, output_options
from ..runners.paired import PairedRunner, signature_of
from ..sources.base import SourceError
from ..sources.file import FileSource
from ..storage.repository import Sample
from ..storage.window import Window, values
from .inputs import PairInputs, pair_inputs, sample_texts, text_record, text_stats

log = logging.getLogger("sentinel.revalidation")

REFERENCE_MAX_RUNS = 50   # accepted runs a reference window may span (reference.min_rows)
#: rows of decoded reference windows a revalidator keeps per pair between runs (a larger window is
#: read from the store each time: held between runs, it would be the daemon's biggest object)
REFERENCE_CACHE_ROWS = 250_000


@dataclass
class LoadedPair:
    name: str
    classes: list[str]
    critical_classes: list[str]
    baseline: Runner
    candidate: Runner
    checks: list[Check]
    batch_size: int
    shape: PairShape
    suites: list[dict[str, Any]] = field(default_factory=list)   # record of each applying suite file
    reference: Any = None           # the suites' ReferenceSpec (None: the last accepted run)
    inputs: PairInputs | None = None   # what both models take (None: one float input of shape.input_shape)
    # a pair with several candidates (``candidates:``): each by name, ``candidate`` is the first;
    # a per-candidate view (candidates.views) has none and names its own in ``candidate_name``
    candidates: dict[str, Runner] = field(default_factory=dict)
    candidate_name: str | None = None
    shared_baseline: Any = None     # in a view: the baseline run once per distinct batch (candidates.py)

    @property
    def io(self) -> PairInputs:
        if self.inputs is None:
            self.inputs = PairInputs(signature_of(self.baseline))
        return self.inputs

    @property
    def hashes(self) -> dict[str, Any]:
        if self.candidates:   # by_sha256: which candidate a file is, for the gate (store.runs_of_candidate)
            return {"baseline": _hash(self.baseline), "candidates": {n: _hash(r) for n, r in self.candidates.items()},
                    "by_sha256": {r.sha256: n for n, r in self.candidates.items()}}
        return {role: _hash(r) for role, r in (("baseline", self.baseline), ("candidate", self.candidate))}

    def close(self) -> None:
        for r in (self.baseline, self.candidate, *self.candidates.values()):
            try:
                r.close()
            except Exception:  # closing is best effort
                pass


def load_pair(cfg: Config, name: str) -> LoadedPair:
    """Load both models of a pair and check them against the config and each other; every problem
    is a ConfigError naming the config file and key."""
    pc = cfg.pairs[name]
    runners: dict[str, Runner] = {}
    try:
        runners["baseline"] = b = _load_runner(cfg, name, "baseline")
        for cname in pc.candidate_specs():
            runners[cname or "candidate"] = c = _load_runner(cfg, name, "candidate", cname)
            inputs = pair_inputs(cfg, name, b, c, cname)
        c = runners[next(iter(pc.candidate_specs())) or "candidate"]
    except ConfigError:
        for r in runners.values():
            r.close()
        raise
    from ..checks.suites import load_suites, specs_for_pair

    specs, suites = specs_for_pair(cfg, name, load_suites(cfg))   # every spec's params are checked there
    checks = [build_check(spec) for spec in specs]
    reference = next((s.reference for s in suites if s.reference is not None), None)
    sig = inputs.signature
    shape = PairShape(name, tuple(sig.input_shape or ()), tuple(pc.classes), tuple(pc.features) if pc.features else None,
                      signature=sig, text=inputs.text)
    named = {n: r for n, r in runners.items() if n != "baseline"} if pc.multi else {}
    return LoadedPair(name, list(pc.classes), list(pc.critical_classes), b, c, checks, pc.batch_size, shape,
                      suites=[s.record for s in suites], reference=reference, inputs=inputs, candidates=named)


def _hash(r: Runner) -> dict[str, str]:
    return {"path": str(r.path), "sha256": r.sha256, "runtime": r.runtime}


def _load_runner(cfg: Config, name: str, role: str, candidate: str | None = None) -> Runner:
    pc = cfg.pairs[name]
    spec = pc.baseline if role == "baseline" else pc.candidate_spec(candidate)
    key = f"pairs.{name}.{role}" if candidate is None else f"pairs.{name}.candidates.{candidate}"
    path = cfg.resolve_path(spec.path)
    if not path.exists():
        raise ConfigError(cfg.source, key + ".path", f"model file not found: {path}")
    try:
        # threads are always set (perf.threads when the model does not say): timings taken
        # with an engine-chosen thread count are not comparable across hosts or runs
        r = load_runner(path, runtime=spec.runtime, role=role, output=spec.output,
                        threads=spec.threads if spec.threads is not None else cfg.perf.threads,
                        providers=spec.providers, **output_options(spec))
    except (ModelLoadError, PluginError) as exc:
        raise ConfigError(cfg.source, key, str(exc)) from None
    if r.n_outputs != len(pc.classes):
        r.close()
        raise ConfigError(cfg.source, key, f"model {path.name} outputs {r.n_outputs} values per row but "
                                           f"pairs.{name}.classes lists {len(pc.classes)} classes {pc.classes}")
    return r


@dataclass
class RunOutcome:
    run_id: int
    pair: str
    status: str
    n_samples: int
    results: list[CheckResult]
    report_path: str | None
    record: dict[str, Any]
    incidents: list[Any] = field(default_factory=list)


class Revalidator:
    """Runs revalidations. ``store``, ``incidents`` (an IncidentEngine) and ``metrics`` are passed
    in; ``report_writer(run, loaded, data) -> path`` writes the run's report (``data``: the RunData the
    checks saw, for the Evidently section). ``cancel`` (a threading.Event the daemon sets when it
    gives up on a run at shutdown) is checked between stages: the run then stops, starts no child
    process, and is recorded as abandoned unless the daemon already marked it so.

    It orchestrates: the data the checks see is built by sentinel.checks.data, the performance
    measurement and history by sentinel.perf, the reproducibility record by sentinel.record."""

    def __init__(self, cfg: Config, store: Any, pairs: dict[str, LoadedPair], *, incidents: Any | None = None,
                 metrics: Any | None = None, report_writer: Callable[..., str | None] | None = None,
                 clock: Callable[[], float] = time.monotonic, cancel: threading.Event | None = None):
        self.cfg, self.store, self.pairs = cfg, store, pairs
        self.incidents, self.metrics, self.report_writer, self.clock = incidents, metrics, report_writer, clock
        self.cancel = cancel
        # per pair: (reference rows + model files, both models' outputs on them)
        self._reference_cache: dict[str, tuple[tuple[Any, ...], Any]] = {}
        # per pair: accepted runs' windows by run id, decoded, in their reference form (a window's
        # samples never change once claimed; only labels joined later are read again), at most
        # REFERENCE_CACHE_ROWS rows
        self._windows: dict[str, dict[int, Window]] = {}
        self.active_run: tuple[int, str] | None = None   # (run id, pair) while a run is in progress

    def run(self, pair: str, *, trigger: str = "schedule", samples: Sequence[Any] | None = None,
            source: dict[str, Any] | None = None) -> RunOutcome | None:
        """Revalidate ``pair`` on its pending window (or on ``samples`` given directly, e.g. from a
        file). Returns None when there was nothing to evaluate (fewer than revalidation.min_samples),
        and when the run was cancelled or marked abandoned by the daemon's shutdown."""
        loaded = self.pairs[pair]
        t0 = self.clock()
        if samples is None and self.store.pending_count(pair) < self.cfg.revalidation.min_samples:
            log.info("revalidation skipped", extra={"pair": pair, "reason": "no pending samples"})
            return None
        record = run_record(self.cfg, loaded, trigger)
        run_id = self.store.create_run(pair, trigger, record)
        self.active_run = (run_id, pair)
        if hasattr(self.report_writer, "prepare"):   # sentinel.reports.ReportWriter: Evidently's process starts now
            self.report_writer.prepare(loaded)
        try:
            evaluated = self._evaluate_run(loaded, run_id, record, samples, source)
            return None if evaluated is None else self._finish(loaded, run_id, record, t0, *evaluated)
        finally:
            self.active_run = None
            if hasattr(self.report_writer, "end"):
                self.report_writer.end()

    def _evaluate_run(self, loaded: LoadedPair, run_id: int, record: dict[str, Any], samples: Sequence[Any] | None,
                      source: dict[str, Any] | None) -> tuple[Sequence[Any], list[CheckResult], RunData] | None:
        """Claim the window (unless ``samples`` are given), evaluate the checks and complete
        ``record``. A cancelled run is recorded as abandoned (None); a failed one as error, and
        the exception goes on."""
        pair = loaded.name
        claimed = samples is None
        try:
            check_cancel(self.cancel, "claiming the window")
            if samples is None:
                samples = self.store.claim_window(pair, run_id)
                record["samples"] = sample_record(samples, source or {"kind": self.cfg.ingest.source})
            else:
                record["samples"] = sample_record(samples, source or {"kind": "direct"})
            results, data, perf = self.evaluate_data(loaded, samples, before_run=run_id)
            record.update(data.notes)    # what the run learnt about its inputs and outputs
            if data.reference is not None:
                record["reference"] = data.reference.source
            if perf is not None:
                record["perf"] = {**perf, "accepted": joins_history(results)}
        except RunCancelled as exc:
            log.info("revalidation cancelled", extra={"pair": pair, "run_id": run_id, "stage": exc.stage})
            self.store.finish_run(run_id, status="abandoned", n_samples=0, record=record, results=[],
                                  error=f"{exc}; its samples went back to the window", release_window=claimed)
            return None
        except Exception as exc:  # a broken run is recorded, never crashes the daemon
            log.exception("revalidation failed", extra={"pair": pair, "run_id": run_id})
            if self.store.finish_run(run_id, status="error", n_samples=0, record=record, results=[],
                                     error=f"{type(exc).__name__}: {exc}", release_window=claimed) and self.metrics:
                self.metrics.observe_run(pair, "error")
            raise
        return samples, results, data

    def _finish(self, loaded: LoadedPair, run_id: int, record: dict[str, Any], t0: float, samples: Sequence[Any],
                results: list[CheckResult], data: RunData) -> RunOutcome | None:
        """Store the evaluated run, keep its accepted candidate, write its report, hand its
        results to the incident engine and the metrics."""
        pair = loaded.name
        status = worst([r.status for r in results]) if results else "insufficient_data"
        record["duration_seconds"] = round(self.clock() - t0, 3)
        if not self.store.finish_run(run_id, status=status, n_samples=len(samples), record=record,
                                     results=[r.to_row() for r in results]):
            # the daemon gave up on this run at shutdown and gave its window back: keep that
            log.warning("revalidation result dropped: the run was marked abandoned while it ran",
                        extra={"pair": pair, "run_id": run_id, "status": status})
            return None
        keep_accepted_of_run(self.cfg, self.store, self.pairs, loaded, record)
        self._keep_as_reference(loaded, run_id, samples, data, record)
        outcome = RunOutcome(run_id, pair, status, len(samples), results, None, record)
        # incidents first: the report names the incident this run opened or counted towards, and
        # notifications link to the run's console page, not to the report file
        if self.incidents is not None:
            outcome.incidents = self.incidents.process_run(pair, run_id, results)
        # the run is stored: a failing flips/calibration/robustness result is diagnosed before the
        # report is written, so the report shows it (never raises; bounded by diagnose.max_rows;
        # imported here: onnx costs 1.5 s to import and most runs pass)
        from ..diagnose.auto import auto_diagnose
        auto_diagnose(self.cfg, self.store, loaded, outcome, samples, data, cancel=self.cancel)
        if self.report_writer is not None:
            try:
                outcome.report_path = self.report_writer(self.store.get_run(run_id), loaded, data)
                if outcome.report_path:
                    self.store.set_report_path(run_id, outcome.report_path)
            except Exception:
                log.exception("report failed", extra={"pair": pair, "run_id": run_id})
        if self.metrics is not None:
            self.metrics.observe_run(pair, status, results, self.clock() - t0, latency_type=GAUGE_TYPE)
        log.info("revalidation finished", extra={"pair": pair, "run_id": run_id, "status": status,
                                                 "n_samples": len(samples)})
        return outcome

    def evaluate(self, loaded: LoadedPair, samples: Sequence[Any], *, before_run: int | None = None,
                 reference_runs: list[int] | None = None) -> list[CheckResult]:
        return self.evaluate_data(loaded, samples, before_run=before_run, reference_runs=reference_runs)[0]

    def evaluate_data(self, loaded: LoadedPair, samples: Sequence[Any], *, before_run: int | None = None,
                      reference_runs: list[int] | None = None
                      ) -> tuple[list[CheckResult], RunData, dict[str, Any] | None]:
        """Run the pair's checks on ``samples``: the results, the RunData they saw (for the report)
        and the run's performance record (None when nothing was measured). The reference window is
        ``reference_runs``' samples when given (a replay), else the pinned data set or the pair's
        last accepted run(s) before ``before_run``."""
        if loaded.candidates:   # several candidates: each judged on the same baseline outputs
            from .candidates import evaluate_candidates
            return evaluate_candidates(self, loaded, samples, before_run=before_run, reference_runs=reference_runs)
        data = self.build_data(loaded, samples, before_run=before_run, reference_runs=reference_runs)
        # sentinel.reports.ReportWriter: Evidently's section starts now (a run of several candidates
        # builds it at report time: its report shows the first candidate's data)
        if loaded.candidate_name is None and hasattr(self.report_writer, "begin"):
            self.report_writer.begin(loaded, data)
        results: list[CheckResult] = []
        for check in loaded.checks:
            check_cancel(self.cancel, f"check {check.name}")
            results.extend(evaluate_check(check, data))
        # what the checks shared (a text or image window's descriptors) is not kept past them
        data.derived.clear()
        return results, data, perf_record(data.perf, data.served_latency, self.cfg.perf.served_latency_field)

    def build_data(self, loaded: LoadedPair, samples: Sequence[Any], *, before_run: int | None = None,
                   reference_runs: list[int] | None = None, measure: bool = True) -> RunData:
        """Both models on ``samples`` and on the reference window; ``measure=False`` skips the
        latency/perf measurement (a report being rebuilt does not need it)."""
        io = loaded.io
        rows = sample_rows(samples, io.signature)
        x = io.model_input(rows)
        paired = self._paired(loaded)
        history = perf_history(self.store, loaded.name, self.cfg.perf.history_runs, loaded.candidate_name)
        perf, latency = None, {"baseline": np.zeros(0), "candidate": np.zeros(0)}
        embeddings, notes = None, {}
        if rows:
            check_cancel(self.cancel, "inference")
            out = paired.run(x, loaded.batch_size)
            base, cand, embeddings = out.baseline, out.candidate, _embeddings(out)
            notes["outputs"] = _output_note(out)
            if measure:
                perf, latency = measure_run(self.cfg, loaded, self._paired(loaded, shared=False), x, history,
                                            cancel=self.cancel)
        else:
            base = cand = np.zeros((0, len(loaded.classes)))
        texts = sample_texts(samples)
        stats = text_stats(io, texts)
        if (note := text_record(io, texts, stats)) is not None:
            notes["text"] = note
        data = run_data(loaded, samples, x if io.stacked else None, base, cand, latency=latency,
                        seed=self.cfg.revalidation.seed, perf=perf, perf_history=history,
                        predict=_predictor(paired, loaded.batch_size), served_field=self.cfg.perf.served_latency_field,
                        signature=io.signature, rows=rows, modality=io.modality, image_layout=io.image_layout,
                        texts=texts, text_stats=stats, encode_texts=_text_encoder(loaded),
                        embeddings=embeddings, output_kind=io.output_kind, notes=notes)
        check_cancel(self.cancel, "the reference window")
        data.reference = self._reference(loaded, data, before_run=before_run, reference_runs=reference_runs)
        return data

    def _paired(self, loaded: LoadedPair, *, shared: bool = True) -> PairedRunner:
        """The pair's runners side by side; in a candidate's view the baseline is the shared one
        (run once per distinct batch) unless ``shared`` is false (timing: every call is timed)."""
        base = loaded.shared_baseline if shared and loaded.shared_baseline is not None else loaded.baseline
        return PairedRunner(base, loaded.candidate, signature=loaded.io.signature,
                            batching=loaded.io.batching)

    def _reference(self, loaded: LoadedPair, data: RunData, *, before_run: int | None,
                   reference_runs: list[int] | None) -> ReferenceData | None:
        """Both current models' outputs on the reference rows (so a change of traffic, not of
        models, is what the drift checks compare). The reference is the pinned data set, or the
        traffic of the last accepted run, with earlier accepted runs added (newest first) while it
        has fewer than the suite's ``reference.min_rows`` rows. Outputs are kept per (reference
        rows, model files): an unchanged reference is not run through both models again."""
        spec = loaded.reference
        if reference_runs is None and spec is not None and spec.kind == "pinned":
            from ..checks.scenarios import model_rows, read_rows
            got = read_rows(spec.file, spec.sha256)
            io = loaded.io
            rows = model_rows(got, io.signature, _text_encoder(loaded))
            return self._reference_of(loaded, {"kind": "pinned", "file": got.path, "sha256": got.sha256}, rows,
                                      got.attributes, got.labels, got.texts)
        ref_samples, used = self._reference_samples(loaded, before_run, reference_runs, getattr(spec, "min_rows", 0))
        if not ref_samples:
            return None
        digest = ids_digest(ref_samples)
        return self._reference_of(loaded, {"kind": "runs", "run_ids": used, **digest},
                                  sample_rows(ref_samples, loaded.io.signature), sample_attributes(ref_samples),
                                  values(ref_samples, "label"), sample_texts(ref_samples))

    def _reference_of(self, loaded: LoadedPair, source: dict[str, Any], rows: list[Any], attributes: list[dict[str, str]],
                      labels: Sequence[Any], texts: list[str | None] | None) -> ReferenceData:
        io = loaded.io
        key = _outputs_key(loaded, source.get("ids_sha256") or source.get("sha256"), source.get("count", len(rows)))
        slot = _slot(loaded)
        cached = self._reference_cache.get(slot)
        x = io.model_input(rows)
        if cached is not None and cached[0] == key:
            out = cached[1]
        else:
            self._reference_cache.pop(slot, None)   # the outputs on an older reference: never two at once
            out = self._paired(loaded).run(x, loaded.batch_size)
            self._reference_cache[slot] = (key, out)
        return ReferenceData(source, x if io.stacked else None, out.baseline, out.candidate,
                             attributes, label_indices(labels, loaded.classes), rows=rows, texts=texts,
                             text_stats=text_stats(io, texts), embeddings=_embeddings(out))

    def _reference_samples(self, loaded: LoadedPair, before_run: int | None, reference_runs: list[int] | None,
                           min_rows: int | None) -> tuple[Sequence[Any], list[int]]:
        """The samples of ``reference_runs`` (a replay), else of the pair's accepted runs before
        ``before_run``, newest first, until there are ``min_rows``; and the runs they came from."""
        parts: list[Sequence[Any]] = []
        used: list[int] = []
        kept = self._windows.get(loaded.name, {})
        for run_id in (reference_runs if reference_runs is not None
                       else self.store.accepted_runs(loaded.name, before_run, limit=REFERENCE_MAX_RUNS)):
            try:
                window = kept.get(run_id)
                parts.append(window.relabelled(self.store.joined_labels(loaded.name, run_id)) if window is not None
                             else run_samples(self.store, self.store.get_run(run_id), loaded.shape))
            except ConfigError as exc:   # a file-based run whose file is gone or changed
                log.warning("reference run skipped", extra={"pair": loaded.name, "run_id": run_id,
                                                            "reason": str(exc)})
                continue
            used.append(run_id)
            if reference_runs is None and sum(map(len, parts)) >= (min_rows or 0):
                break
        self._keep_windows(loaded.name, dict(zip(used, parts)))
        return _joined(parts), used

    def _keep_windows(self, pair: str, windows: dict[int, Any]) -> None:
        """Keep the store's windows among ``windows`` (run id -> samples), newest runs first, up to
        :data:`REFERENCE_CACHE_ROWS` rows in all; the ones kept before are dropped."""
        kept: dict[int, Window] = {}
        rows = 0
        for run_id in sorted(windows, reverse=True):
            w = windows[run_id]
            if isinstance(w, Window) and rows + len(w) <= REFERENCE_CACHE_ROWS:
                kept[run_id] = w.for_reference()
                rows += len(w)
        self._windows[pair] = kept

    def _keep_as_reference(self, loaded: LoadedPair, run_id: int, samples: Sequence[Any], data: RunData,
                           record: dict[str, Any]) -> None:
        """A run just accepted is the next run's reference window: keep its decoded samples and
        both models' outputs on them, so that the next run neither reads them from the store nor
        runs the models over them again. Only a claimed window, of one candidate's pair."""
        if not isinstance(samples, Window) or loaded.candidates or not len(samples):
            return
        if self.store.accepted_runs(loaded.name, limit=1) != [run_id]:
            return
        # the next reference is this window, with older accepted ones while it has fewer than min_rows
        older = self._windows.get(loaded.name, {}) if len(samples) < (getattr(loaded.reference, "min_rows", 0) or 0) else {}
        self._keep_windows(loaded.name, {**older, run_id: samples})
        used = record.get("samples") or {}
        if run_id in self._windows[loaded.name] and used.get("ids_sha256"):
            out = _Outputs(data.baseline, data.candidate, data.embeddings or {})
            self._reference_cache[_slot(loaded)] = (_outputs_key(loaded, used["ids_sha256"], len(samples)), out)


@dataclass
class _Outputs:
    """Both models' outputs on a window, as the paired runner gives them (what the reference needs)."""
    baseline: np.ndarray
    candidate: np.ndarray
    embeddings: dict[str, np.ndarray]


def _slot(loaded: LoadedPair) -> str:
    """Where the revalidator keeps a pair's (or one of its candidates') reference outputs."""
    return loaded.name if loaded.candidate_name is None else f"{loaded.name}/{loaded.candidate_name}"


def _outputs_key(loaded: LoadedPair, samples_sha256: Any, count: int) -> tuple[Any, ...]:
    """What reference outputs are valid for: the pair, its reference rows, both model files."""
    return loaded.name, samples_sha256, count, loaded.baseline.sha256, loaded.candidate.sha256


def _joined(parts: list[Sequence[Any]]) -> Sequence[Any]:
    """Runs' samples one after the other: one window when every run's came from the store (held
    by column), else a list."""
    if len(parts) == 1:
        return parts[0]
    if parts and all(isinstance(p, Window) for p in parts):
        return Window.joined(parts)  # type: ignore[arg-type]
    return [s for p in parts for s in p]


def _text_encoder(loaded: LoadedPair) -> Callable[[list[str]], list[Any]] | None:
    """Texts -> rows with the pair's tokenizer, as ingest makes them (None without one)."""
    if loaded.io.text is None:
        return None
    return lambda texts: text_rows(loaded.shape, texts)


def _embeddings(out: Any) -> dict[str, np.ndarray] | None:
    """Each role's embedding output (None unless both models give one)."""
    emb = getattr(out, "embeddings", None) or {}
    return dict(emb) if emb and all(v is not None for v in emb.values()) else None


def _output_note(out: Any) -> dict[str, Any]:
    """What the run records about the models' outputs: how far each role's probability rows were
    from summing to 1 before renormalising (quantized softmax outputs are approximate)."""
    return {"max_row_sum_deviation": {role: round(float(v), 6) for role, v in (getattr(out, "deviation", None) or {}).items()}}


def _predictor(paired: PairedRunner, batch_size: int) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
    """Both models on rows a check makes up (perturbations, scenario data sets): a stacked array
    or a list of rows."""
    def predict(x: Any) -> tuple[np.ndarray, np.ndarray]:
        out = paired.run(x, batch_size)
        return out.baseline, out.candidate
    return predict


def read_input_file(path: str, shapes: dict[str, PairShape]) -> tuple[dict[str, list[Any]], dict[str, Any], int]:
    """The samples of a JSON-lines file of traffic messages, by pair, read through the file
    source (sentinel.sources.file) and the traffic decoder. Bad lines are reported
    (file:line: reason) and skipped; the file's path and sha256 go into the run record (the
    source returned); the count of bad lines comes last."""
    src = FileSource(path)
    try:
        src.start()
    except SourceError as exc:
        raise ConfigError(path, "", f"cannot read input file ({exc.problem})") from None
    by_pair: dict[str, list[Any]] = {}
    bad = 0
    while records := src.poll(0):
        for r in records:
            try:
                m = decode_traffic(r.value, shapes, timestamp_ms=r.timestamp_ms)
            except MessageError as exc:
                bad += 1
                print(f"{path}:{r.offset}: skipped: {exc}", file=sys.stderr)
                continue
            by_pair.setdefault(m.pair, []).append(
                Sample(id=r.offset, pair=m.pair, msg_id=m.id, ts=m.ts, topic=None, partition=None, offset=None,
                       inputs=m.inputs, attributes=m.attributes, label=m.label, extra=m.extra, text=m.text))
    source = {"kind": "file", "path": str(Path(path).resolve()), "sha256": src.sha256}
    src.close()
    return by_pair, source, bad


def run_samples(store: Any, run: dict[str, Any], shape: PairShape) -> list[Any]:
    """The samples a stored run used: its claimed window, or its input file re-read and verified
    against the sha256 the run recorded (a run on a file keeps the path and hash, not a copy)."""
    used = (run.get("record") or {}).get("samples", {})
    if used.get("kind") != "file" or "path" not in used:   # a window (from any source) claimed in the store
        return store.run_samples(run["id"], run["pair"])
    by_pair, source, _ = read_input_file(used["path"], {run["pair"]: shape})
    if source["sha256"] != used.get("sha256"):
        raise ConfigError(used["path"], "", f"input file changed since run {run['id']} "
                                            f"(sha256 {source['sha256'][:12]}, run used {used.get('sha256', '')[:12]})")
    return by_pair.get(run["pair"], [])


def overall_exit_code(results: Sequence[CheckResult]) -> int:
    """``sentinel revalidate`` exit code: 1 when any check failed or errored, else 0."""
    return 1 if any(r.status in ("fail", "error") for r in results) else 0


def resolve_report_dir(cfg: Config) -> Path:
    return cfg.resolve_path(cfg.reports_dir)

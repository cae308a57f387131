"""Robustness: how often each model's decision flips under small seeded perturbations of the
window's own rows, candidate vs baseline. Compression often makes a model more brittle near its
decision boundary before it changes any decision on clean traffic."""
from __future__ import annotations

import numpy as np

from .data import RunData, slices
from .perturb import describe_inputs, perturbations
from .result import CheckResult
from .safety import DecisionParams, class_decisions, flipped
from .statistical import Finding, StatisticalCheck, Test
from .stats import mcnemar_greater


class RobustnessParams(DecisionParams):
    noise_scales: list[float] = [0.05, 0.1, 0.2]
    dropout: list[float] = [0.1]
    token_dropout: list[float] = [0.1]
    token_swaps: list[float] = [0.1]
    typos: list[float] = [0.05]
    brightness: list[float] = [0.1]
    shifts: list[int] = [1]
    unk_id: int | None = None
    keep_ids: list[int] = []
    keep_ends: bool = True
    ids_input: str | None = None
    max_rows: int = 2000
    seed: int = 0


class RobustnessCheck(StatisticalCheck):
    """Perturbations that fit the input (sentinel.checks.perturb), each run through both models
    on the window's own rows (at most ``params.max_rows``, default 2,000), counting rows whose
    decision differs from the model's own clean decision:

    * float tables: Gaussian noise at each of ``params.noise_scales`` (default 0.05, 0.1, 0.2;
      times each feature's standard deviation over the window) and feature dropout at each of
      ``params.dropout`` (default 0.1: that share of a row's features set to the window's column
      mean; integer features: its rounded mean, and no noise);
    * token ids: token dropout (``token_dropout``, default 0.1: a token becomes ``unk_id`` when
      given, else is removed with its mask and type id) and neighbour swaps (``token_swaps``,
      default 0.1); padding, the first and last real token (``keep_ends``: CLS/SEP) and
      ``keep_ids`` never change; the ids input is found by name (``ids_input`` overrides);
    * raw text (rows that came as text, with the pair's tokenizer): character typos
      (``typos``, default 0.05 of letters swapped, dropped or doubled), re-encoded;
    * images (``image_layout`` NCHW or NHWC): Gaussian noise (``noise_scales`` × each channel's
      standard deviation), brightness (``brightness``, default 0.1 of the window's 1-99%
      pixel range added, clipped to the window's range), a shift of ``shifts`` pixels (default
      1) in a random direction per image;
    * other tensors: Gaussian noise on the float inputs only.

    Slices ``noise=0.1`` / ``dropout=0.1`` / ``token_dropout=0.1`` / ``token_swap=0.1`` /
    ``typo=0.05`` / ``brightness=0.1`` / ``shift=1`` (and ``noise=0.1,region=eu`` with
    ``slice_by``). Value: candidate flip rate - baseline flip rate; test: exact one-sided
    McNemar (rows only the candidate flips vs only the baseline flips); ``warn``/``fail`` are
    minimum increases. Multilabel outputs: a row flips when any label's decision (at
    ``params.threshold``) does. Seeded by the run seed and ``params.seed``, so a replay perturbs
    identically."""
    type = "robustness"
    LEVELS = (0.02, 0.05)
    Params = RobustnessParams

    def evaluate(self, data: RunData) -> list[CheckResult]:
        if data.n == 0:
            return [CheckResult(self.name, "overall", "insufficient_data", None, 0, "no rows to perturb",
                                self.warn, self.fail)]
        if data.predict is None or (data.inputs is None and data.rows is None):
            return [CheckResult(self.name, "overall", "error", None, data.n,
                                "robustness needs the models (no predict function was given to the check)"
                                if data.predict is None else "robustness needs the window's inputs (none were given)")]
        rng = np.random.default_rng([int(data.seed), int(self.params["seed"]), 0x5EB])
        n = min(data.n, int(self.params["max_rows"]))
        rows = np.sort(rng.choice(data.n, size=n, replace=False)) if n < data.n else np.arange(data.n)
        found = perturbations(data, rows, self.params, rng)
        if not found:
            return [CheckResult(self.name, "overall", "insufficient_data", None, data.n,
                                f"no perturbation fits the {describe_inputs(data)}", self.warn, self.fail)]
        kind, t = data.output_kind, float(self.params["threshold"])
        clean_b = class_decisions(data.baseline[rows], kind, t)
        clean_c = class_decisions(data.candidate[rows], kind, t)
        findings = []
        for pert in found:
            pb, pc = data.predict(pert.make())
            sub = pert.rows
            fb = flipped(class_decisions(pb, kind, t), clean_b[sub])
            fc = flipped(class_decisions(pc, kind, t), clean_c[sub])
            attrs = [data.attributes[i] for i in rows[sub]]
            findings += self._findings(pert.label, fb, fc, attrs)
        return self.decide(findings)

    def _findings(self, label: str, fb: np.ndarray, fc: np.ndarray, attrs: list[dict[str, str]]) -> list[Finding]:
        out = []
        for name, sl in slices(attrs, self.params["slice_by"]):
            m = int(sl.size)
            rb, rc = (float(fb[sl].mean()), float(fc[sl].mean())) if m else (None, None)
            only_c, only_b = int((fc[sl] & ~fb[sl]).sum()), int((fb[sl] & ~fc[sl]).sum())
            inc = None if rb is None else rc - rb
            out.append(Finding(
                label if name == "overall" else f"{label},{name}", inc, m, "flip-rate increase under perturbation",
                [Test("flip-rate increase", mcnemar_greater(only_c, only_b), inc or 0.0, self.warn, self.fail)],
                {"flip_rate": {"baseline": rb, "candidate": rc}, "candidate_only_flips": only_c,
                 "baseline_only_flips": only_b, "rows": m}, primary=name == "overall"))
        return out
